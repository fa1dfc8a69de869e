import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPgCluster, type PgCluster } from '../../src/dev/pg-cluster.js';
import { initPolicyEngine } from '../../src/policy/index.js';
import { runPsql, startPolicyProxy, type PolicyProxy } from '../support/pg-proxy-harness.js';
import { EFFECT_POLICY, EFFECT_RULE, HIDDEN_WIPE_FUNCTION, effectAllowed, effectAttempts } from '../support/effect-attempts.js';

/**
 * One effect rule (`effects: [delete, update, truncate], tables: [guarded]`) against every spelling of "wipe the
 * table" in the corpus, through real psql (-c and -f) and node-postgres' extended protocol, to a real PostgreSQL.
 * After each attempt the table holds exactly what it held before, and nothing was created beside it.
 */
let cluster: PgCluster;
let admin: pg.Client;
let proxy: PolicyProxy;
let fileDir: string;

async function guardedIntact(): Promise<void> {
  const { rows } = await admin.query('select count(*)::int as n, sum(v)::int as total from public.guarded');
  expect(rows[0]).toEqual({ n: 5, total: 150 });
  const extra = await admin.query(
    `select (select count(*)::int from pg_rules where rulename = 'wipe_on_insert') as rules,
            (select count(*)::int from pg_trigger where tgname = 'wipe_after_insert') as triggers,
            (select count(*)::int from pg_proc where proname = 'wipe_trigger') as functions,
            (select count(*)::int from pg_prepared_statements) as prepared`,
  );
  expect(extra.rows[0]).toEqual({ rules: 0, triggers: 0, functions: 0, prepared: 0 });
}

beforeAll(async () => {
  await initPolicyEngine();
  cluster = await startPgCluster({ auth: 'scram-sha-256' });
  admin = new pg.Client({ connectionString: cluster.url() });
  await admin.connect();
  await admin.query('create table public.guarded (id int primary key, v int)');
  await admin.query('insert into public.guarded select g, g * 10 from generate_series(1, 5) g');
  await admin.query('create table public.other (id int)');
  await admin.query(HIDDEN_WIPE_FUNCTION);
  await admin.query('create function public.tidy_up_trigger() returns trigger language plpgsql as $$ begin delete from public.guarded; return null; end $$');
  fileDir = mkdtempSync(join(tmpdir(), 'hoop-effects-'));
  proxy = await startPolicyProxy({ cluster, policy: EFFECT_POLICY, identity: { subject: 'dev@example.com', kind: 'human', groups: ['developers'] } });
});

afterAll(async () => {
  await proxy?.close();
  await admin?.end();
  await cluster?.stop();
  if (fileDir) rmSync(fileDir, { recursive: true, force: true });
});

function refusedByEffectRule(): void {
  const verdicts = proxy.events.filter((e) => e.type === 'verdict' && e.data.refused === true);
  expect(verdicts.at(-1)?.data.rule).toBe(EFFECT_RULE);
}

describe('one effect rule refuses every spelling of a wipe, on every path', () => {
  const cases = effectAttempts.map((sql, n) => ({ sql, n }));

  it.each(cases)('psql -c: $sql', async ({ sql }) => {
    const r = await runPsql(proxy.port, ['-c', sql]);
    expect(r.stderr).toContain(`ERROR:  42501: hoopctl: statement denied by rule "${EFFECT_RULE}"`);
    refusedByEffectRule();
    await guardedIntact();
  });

  it.each(cases)('psql -f: $sql', async ({ sql, n }) => {
    const file = join(fileDir, `attempt-${n}.sql`);
    writeFileSync(file, `select 'before' as step;\n${sql};\nselect 'after' as step;\n`);
    const r = await runPsql(proxy.port, ['-f', file]);
    // The statements around the refused one run: the session goes on.
    expect(r.stdout).toBe('before\nafter\n');
    expect(r.stderr).toContain(`hoopctl: statement denied by rule "${EFFECT_RULE}"`);
    refusedByEffectRule();
    await guardedIntact();
  });

  it.each(cases)('extended protocol: $sql', async ({ sql }) => {
    const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'laptop-user', database: 'postgres' });
    await client.connect();
    try {
      const err = await client.query({ text: sql, values: [] as unknown[], queryMode: 'extended' } as pg.QueryConfig).then(
        () => undefined,
        (e: { code?: string; message: string }) => e,
      );
      expect(err?.code).toBe('42501');
      expect(err?.message).toContain(`rule "${EFFECT_RULE}"`);
      // The connection is still usable after the refusal.
      expect((await client.query('select 1 as ok')).rows).toEqual([{ ok: 1 }]);
    } finally {
      await client.end();
    }
    refusedByEffectRule();
    await guardedIntact();
  });

  it.each(effectAllowed)('lets through: %s', async (sql) => {
    const r = await runPsql(proxy.port, ['-c', sql]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    await guardedIntact();
  });
});
