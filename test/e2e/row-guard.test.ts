import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Review } from '../../src/api/review.js';
import { CliProcess, loginAs, runCli, startStack, type Stack } from '../support/stack.js';

/**
 * The row guard with a real review end to end: the broker process, `hoopctl exec` for alice, `hoopctl reviews` and
 * `hoopctl approve` for bob. The wide UPDATE is rolled back, held with its count, and once approved runs once.
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;
let bob: NodeJS.ProcessEnv;
let admin: pg.Client;

async function pendingReview(match: (r: Review) => boolean): Promise<Review> {
  for (let i = 0; i < 100; i++) {
    const r = await runCli(['reviews', '-o', 'json'], bob);
    const found = (JSON.parse(r.stdout) as Review[]).find(match);
    if (found) return found;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error('no pending review appeared');
}

beforeAll(async () => {
  stack = await startStack({
    appPgPolicy: { rules: [{ name: 'row-guard', match: { effects: ['delete', 'update'], tables: ['balances'] }, maxAffectedRows: 3, action: 'review' }] },
    appPg: { reviews: { groups: ['leads'], timeout: '10m' } },
  });
  admin = new pg.Client({ connectionString: stack.cluster.url('app') });
  await admin.connect();
  await admin.query('create table balances (id int primary key, amount int)');
  await admin.query('insert into balances select g, 100 from generate_series(1, 20) g');
  await admin.query('alter table balances owner to app_rw');
  [alice, bob] = await Promise.all([loginAs(stack, 'alice'), loginAs(stack, 'bob')]);
}, 120_000);

afterAll(async () => {
  await admin?.end();
  await stack?.stop();
});

describe('row guard with a review', () => {
  it('holds the wide write with its count, and once approved runs it exactly once', async () => {
    const sql = 'update balances set amount = amount + 1 where id > 0';
    const exec = new CliProcess(['exec', 'app-pg', '-e', sql], alice);
    const review = await pendingReview((r) => r.statement === sql && r.status === 'pending');
    expect(review.rule).toBe('row-guard');
    expect(review.detail).toContain('would update 20 rows, more than the 3 rule "row-guard" allows');
    // While it waits, nothing of it is visible: the guard's attempt was rolled back.
    expect((await admin.query('select sum(amount)::int as s from balances')).rows[0].s).toBe(2000);
    const listed = await runCli(['reviews'], bob);
    expect(listed.stdout).toContain('would update 20 rows');
    expect((await runCli(['approve', review.id, '--reason', 'year-end fix'], bob)).code).toBe(0);
    expect(await exec.exit()).toBe(0);
    expect(exec.stdout).toContain('UPDATE 20');
    expect(exec.stderr).toContain('would update 20 rows');
    expect((await admin.query('select sum(amount)::int as s from balances')).rows[0].s).toBe(2020);
  });

  it('policy check says which writes run under the guard', async () => {
    const r = await runCli(['policy', 'check', '-c', stack.configPath, '--connection', 'app-pg', '--as', 'group=dba', '-e', 'delete from balances where id = id'], alice);
    expect(r.stdout).toContain('runs under the row guard of rule "row-guard": more than 3 rows and it is rolled back (review)');
    expect(r.stdout).toMatch(/^  guard  DeleteStmt/m);
  });

  it('a write within the limit runs without a review', async () => {
    const r = await runCli(['exec', 'app-pg', '-e', 'update balances set amount = 0 where id = 1'], alice);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('UPDATE 1');
  });
});
