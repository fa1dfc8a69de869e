import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startPgCluster, type PgCluster } from '../../src/dev/pg-cluster.js';
import type { HoldRequest, StatementReviews } from '../../src/broker/protocols/protocol.js';
import { initPolicyEngine } from '../../src/policy/index.js';
import { runPsql, startPolicyProxy, type PolicyProxy } from '../support/pg-proxy-harness.js';

/**
 * The row guard (`maxAffectedRows`) through real psql and node-postgres to a real PostgreSQL: a write over the
 * limit is rolled back before the client sees success, in autocommit and inside the client's own transaction
 * (which goes on); a review, once approved, runs the write exactly once.
 */
const guardRule = (action: 'deny' | 'review') => ({
  defaultAction: 'allow',
  rules: [{ name: 'row-guard', match: { effects: ['delete', 'update'], tables: ['accounts'] }, maxAffectedRows: 2, action }],
});
const identity = { subject: 'dev@example.com', kind: 'human' as const, groups: ['developers'] };

let cluster: PgCluster;
let admin: pg.Client;
let denying: PolicyProxy;
let reviewing: PolicyProxy;
let production: PolicyProxy;
const held: HoldRequest[] = [];

/** Approves every hold at once, keeping what was asked: the row guard, not the review queue, is under test. */
const approveAll: StatementReviews = {
  async hold(request, io) {
    held.push(request);
    await io.notice(`hoopctl: held for review rev_test (${request.message})`);
    return { approved: true, reviewId: 'rev_test', message: 'approved' };
  },
};

async function accounts(): Promise<Array<{ id: number; v: number }>> {
  return (await admin.query('select id, v from accounts order by id')).rows;
}

const FIVE = [1, 2, 3, 4, 5].map((id) => ({ id, v: id * 10 }));

beforeAll(async () => {
  await initPolicyEngine();
  cluster = await startPgCluster({ auth: 'scram-sha-256' });
  admin = new pg.Client({ connectionString: cluster.url() });
  await admin.connect();
  await admin.query('create table accounts (id int primary key, v int)');
  await admin.query('create table audit_log (n int)');
  denying = await startPolicyProxy({ cluster, policy: guardRule('deny'), identity });
  reviewing = await startPolicyProxy({ cluster, policy: guardRule('review'), identity, reviews: approveAll });
  production = await startPolicyProxy({ cluster, policy: { preset: 'production' }, identity });
  await admin.query('create table ledger (id int primary key, amount int)');
  await admin.query('insert into ledger select g, g from generate_series(1, 50) g');
});

beforeEach(async () => {
  await admin.query('truncate accounts, audit_log');
  await admin.query('insert into accounts select g, g * 10 from generate_series(1, 5) g');
  held.length = 0;
});

afterAll(async () => {
  await denying?.close();
  await reviewing?.close();
  await production?.close();
  await admin?.end();
  await cluster?.stop();
});

describe('row guard (maxAffectedRows)', () => {
  it('psql in autocommit: a delete over the limit is rolled back and denied with the count', async () => {
    const r = await runPsql(denying.port, ['-c', 'delete from accounts where id = id']);
    expect(r.stderr).toContain('ERROR:  42501: hoopctl: statement denied by rule "row-guard": would delete 5 rows, more than the 2 rule "row-guard" allows');
    expect(await accounts()).toEqual(FIVE);
    // The recording says what happened: allowed under the guard, then refused by it with the count.
    const verdicts = denying.events.filter((e) => e.type === 'verdict' && e.data.rule === 'row-guard').map((e) => e.data);
    expect(verdicts.at(-1)).toMatchObject({ action: 'deny', refused: true, message: expect.stringContaining('would delete 5 rows') });
    const merge = await runPsql(denying.port, ['-c', 'merge into accounts a using accounts s on a.id = s.id when matched then update set v = 0']);
    expect(merge.stderr).toContain('would change 5 rows');
    expect(await accounts()).toEqual(FIVE);
    // Nothing of the guard's own transaction is left open on the server.
    const open = await admin.query(`select count(*)::int as n from pg_stat_activity where state like 'idle in transaction%'`);
    expect(open.rows[0].n).toBe(0);
  });

  it('psql in autocommit: a write within the limit runs and commits', async () => {
    const r = await runPsql(denying.port, ['-c', 'delete from accounts where id >= 4']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('DELETE 2\n');
    expect(await accounts()).toEqual(FIVE.slice(0, 3));
  });

  it('inside BEGIN … COMMIT: the refused write is undone and the transaction goes on to commit the rest', async () => {
    const script = [
      'begin;',
      'insert into audit_log values (1);',
      'update accounts set v = 0 where v > 0;',
      'delete from accounts where id = 5;',
      'insert into audit_log values (2);',
      'commit;',
    ].join('\n');
    const r = await runPsql(denying.port, ['-f', '-'], script);
    expect(r.stderr).toContain('would update 5 rows');
    expect(r.stdout).toContain('COMMIT');
    expect(r.stdout).not.toContain('ROLLBACK');
    expect(await accounts()).toEqual(FIVE.slice(0, 4));
    expect((await admin.query('select n from audit_log order by n')).rows).toEqual([{ n: 1 }, { n: 2 }]);
  });

  it('inside a transaction the client rolls back, a guarded write within the limit is rolled back with it', async () => {
    const r = await runPsql(denying.port, ['-f', '-'], 'begin;\ndelete from accounts where id = 1;\nrollback;\n');
    expect(r.stdout).toContain('DELETE 1');
    expect(await accounts()).toEqual(FIVE);
  });

  it('refuses what it cannot count, and the extended protocol, rather than let it run unguarded', async () => {
    const cte = await runPsql(denying.port, ['-c', 'with d as (delete from accounts returning 1) select count(*) from d']);
    expect(cte.stderr).toContain('cannot be counted');
    const several = await runPsql(denying.port, ['-c', 'select 1; delete from accounts where id = 1']);
    expect(several.stderr).toContain('needs this write sent as a statement of its own');
    const client = new pg.Client({ host: '127.0.0.1', port: denying.port, user: 'laptop-user', database: 'postgres' });
    await client.connect();
    const err = await client.query('delete from accounts where id = $1', [1]).then(() => undefined, (e: { code?: string; message: string }) => e);
    expect(err?.code).toBe('42501');
    expect(err?.message).toContain('counts rows of simple-protocol statements only, so this extended-protocol write is refused');
    expect((await client.query('select count(*)::int as n from accounts')).rows[0].n).toBe(5);
    await client.end();
    expect(await accounts()).toEqual(FIVE);
  });

  it('a result too large to hold while counting is rolled back and refused, never sent in part', async () => {
    const r = await runPsql(denying.port, ['-c', "update accounts set v = v where id = 1 returning repeat('x', 20000000) as big"]);
    expect(r.stderr).toContain('could not hold this write\'s result (over 16 MiB of RETURNING rows)');
    expect(r.stdout).toBe('');
    expect(await accounts()).toEqual(FIVE);
  });

  it('review: the write over the limit is held with its count and, once approved, runs exactly once', async () => {
    const r = await runPsql(reviewing.port, ['-c', 'update accounts set v = v + 1 where id > 1']);
    expect(held).toHaveLength(1);
    expect(held[0]).toMatchObject({ rule: 'row-guard', statement: 'update accounts set v = v + 1 where id > 1' });
    expect(held[0]!.message).toContain('would update 4 rows');
    expect(held[0]!.detail).toContain('would update 4 rows, more than the 2 rule "row-guard" allows');
    expect(r.stdout).toBe('UPDATE 4\n');
    expect(await accounts()).toEqual(FIVE.map((a) => (a.id > 1 ? { id: a.id, v: a.v + 1 } : a)));
  });

  it('review in the extended protocol: held without a count (the guard cannot run there) and, approved, runs once', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: reviewing.port, user: 'laptop-user', database: 'postgres' });
    await client.connect();
    const r = await client.query('update accounts set v = v + 1 where id = $1', [2]);
    await client.end();
    expect(r.rowCount).toBe(1);
    expect(held.map((h) => h.message)).toEqual([expect.stringContaining('counts rows of simple-protocol statements only')]);
    expect(await accounts()).toEqual(FIVE.map((a) => (a.id === 2 ? { id: 2, v: 21 } : a)));
  });

  it('review inside a transaction: approved, the write runs once in it and commits with it', async () => {
    const r = await runPsql(reviewing.port, ['-f', '-'], 'begin;\ndelete from accounts where id > 1;\ninsert into audit_log values (3);\ncommit;\n');
    expect(held.map((h) => h.message)).toEqual([expect.stringContaining('would delete 4 rows')]);
    expect(r.stdout).toContain('DELETE 4');
    expect(r.stdout).toContain('COMMIT');
    expect(await accounts()).toEqual(FIVE.slice(0, 1));
    expect((await admin.query('select n from audit_log')).rows).toEqual([{ n: 3 }]);
  });
});

describe('preset: production, live', () => {
  const ledgerSum = async () => (await admin.query('select count(*)::int as n, sum(amount)::int as total from ledger')).rows[0];

  it.each([
    ['alter table ledger rename to ledger_old', 'production/no-schema-change'],
    ["alter system set work_mem = '1MB'", 'production/no-server-config'],
    ['create or replace rule r as on insert to audit_log do also delete from ledger', 'production/no-unknowable-code'],
  ])('denies %s by %s', async (sql, rule) => {
    const r = await runPsql(production.port, ['-c', sql]);
    expect(r.stderr).toContain(`hoopctl: statement denied by rule "${rule}"`);
    expect(await ledgerSum()).toEqual({ n: 50, total: 1275 });
  });

  it.each([
    'MERGE INTO ledger a USING (SELECT id FROM ledger) s ON a.id = s.id WHEN MATCHED THEN DELETE',
    'merge into ledger a using ledger s on a.id = s.id when matched then delete',
    'DELETE FROM ledger WHERE id = id',
    'delete from ledger where id is not null',
    'insert into ledger select g, 0 from generate_series(1, 50) g on conflict (id) do update set amount = 0',
  ])('rolls back and refuses (no approvers) the whole-table write %s', async (sql) => {
    const r = await runPsql(production.port, ['-c', sql]);
    expect(r.stderr).toContain('hoopctl: statement held for review by rule "production/row-guard": production row guard: would');
    expect(r.stderr).toContain('more than the 10 rule "production/row-guard" allows');
    expect(await ledgerSum()).toEqual({ n: 50, total: 1275 });
  });

  it('lets the one-row fix through', async () => {
    const r = await runPsql(production.port, ['-c', 'update ledger set amount = amount where id = 7']);
    expect(r.stdout).toBe('UPDATE 1\n');
  });
});
