import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startStack, type Stack } from '../support/stack.js';
import { EFFECT_POLICY, EFFECT_RULE, HIDDEN_WIPE_FUNCTION, effectAllowed, effectAttempts } from '../support/effect-attempts.js';

/**
 * Effect rules end to end: the broker process with one effect rule on `app-pg`, `hoopctl exec` (a CI service
 * account) for every spelling of the corpus, and `hoopctl policy check` on the same broker config agreeing with it.
 */
let stack: Stack;
let admin: pg.Client;
let ci: NodeJS.ProcessEnv;

async function guardedIntact(): Promise<void> {
  const { rows } = await admin.query('select count(*)::int as n, sum(v)::int as total from public.guarded');
  expect(rows[0]).toEqual({ n: 5, total: 150 });
}

/** Runs `args` for each item, a few processes at a time (2 shared cores). */
async function each<T>(items: T[], run: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += 4) await Promise.all(items.slice(i, i + 4).map(run));
}

function check(sql: string, extra: string[] = []) {
  return runCli(['policy', 'check', '-c', stack.configPath, '--connection', 'app-pg', '--as', 'client=ci-report', '-e', sql, ...extra], ci);
}

beforeAll(async () => {
  stack = await startStack({ appPgPolicy: EFFECT_POLICY as { defaultAction: 'allow'; rules: unknown[] } });
  admin = new pg.Client({ connectionString: stack.cluster.url('app') });
  await admin.connect();
  await admin.query('create table public.guarded (id int primary key, v int)');
  await admin.query('insert into public.guarded select g, g * 10 from generate_series(1, 5) g');
  await admin.query('create table public.other (id int)');
  await admin.query(HIDDEN_WIPE_FUNCTION);
  await admin.query('create function public.tidy_up_trigger() returns trigger language plpgsql as $$ begin delete from public.guarded; return null; end $$');
  // The connection's own role owns everything, so each refused statement would have run had it been forwarded.
  for (const sql of ['alter table public.guarded owner to app_rw', 'alter table public.other owner to app_rw', 'alter function public.tidy_up() owner to app_rw', 'alter function public.tidy_up_trigger() owner to app_rw']) {
    await admin.query(sql);
  }
  ci = stack.cliEnv({ HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'ci-report-secret', XDG_CONFIG_HOME: `${stack.dir}/config-ci-effects` });
}, 120_000);

afterAll(async () => {
  await admin?.end();
  await stack?.stop();
});

describe('hoopctl exec and policy check agree on the effect corpus', () => {
  it('exec refuses every spelling by the one effect rule; the table is intact', async () => {
    await each(effectAttempts, async (sql) => {
      const r = await runCli(['exec', 'app-pg', '-e', sql], ci);
      expect({ sql, code: r.code }).toEqual({ sql, code: 1 });
      expect(r.stderr).toContain(`hoopctl: statement denied by rule "${EFFECT_RULE}"`);
    });
    await guardedIntact();
  }, 180_000);

  it('policy check gives the same verdict by the same rule for every spelling, and allows what exec runs', async () => {
    await each(effectAttempts, async (sql) => {
      const r = await check(sql, ['-o', 'json']);
      expect({ sql, verdict: JSON.parse(r.stdout).verdict }).toMatchObject({ sql, verdict: { action: 'deny', rule: EFFECT_RULE } });
    });
    await each(effectAllowed, async (sql) => {
      const [dry, live] = await Promise.all([check(sql, ['-o', 'json']), runCli(['exec', 'app-pg', '-e', sql], ci)]);
      expect({ sql, action: JSON.parse(dry.stdout).verdict.action, code: live.code }).toEqual({ sql, action: 'allow', code: 0 });
    });
    await guardedIntact();
  }, 180_000);

  it('policy check -v prints the effects it derived', async () => {
    const r = await check('merge into guarded g using (select 1 as id) s on g.id = s.id when matched then delete', ['-v']);
    expect(r.stdout).toContain(`DENY by rule "${EFFECT_RULE}"`);
    expect(r.stdout).toContain('effects: read, delete');
    const plain = await check('select 1');
    expect(plain.stdout).not.toContain('effects:');
  });

  it('comment-only input: policy check allows it as the gate does (the server runs nothing)', async () => {
    const sql = '-- nothing to do here\n/* still nothing */';
    const dry = await check(sql, ['-o', 'json', '--expect', 'allow']);
    expect(dry.code).toBe(0);
    expect(JSON.parse(dry.stdout).verdict).toMatchObject({ action: 'allow' });
    const live = await runCli(['exec', 'app-pg', '-e', sql], ci);
    expect(live.code, live.stderr).toBe(0);
  });

  it('exec prints the rows of COPY … TO STDOUT, in order among the other results', async () => {
    const text = await runCli(['exec', 'app-pg', '-e', 'copy (select id, v from guarded where id <= 3 order by id) to stdout'], ci);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toBe('1\t10\n2\t20\n3\t30\nCOPY 3\n');
    const csv = await runCli(['exec', 'app-pg', '-o', 'csv', '-e', "select 'first' as step; copy (select id from guarded where id <= 2 order by id) to stdout with (format csv, header); select 'last' as step"], ci);
    expect(csv.stdout).toBe('step\nfirst\n\nid\n1\n2\n\nstep\nlast\n');
    const json = await runCli(['exec', 'app-pg', '-o', 'json', '-e', 'copy (select id from guarded where id = 5) to stdout'], ci);
    expect(JSON.parse(json.stdout)).toEqual([{ command: 'COPY', rowCount: 1, columns: [], rows: [], copy: '5\n' }]);
  });

  it('policy kinds lists every effect, the statement kinds the issue names, and the production preset', async () => {
    const r = await runCli(['policy', 'kinds'], ci);
    for (const word of ['read', 'insert', 'update', 'delete', 'truncate', 'schema', 'privilege', 'config', 'code', 'server', 'session', 'unknown']) {
      expect(r.stdout).toMatch(new RegExp(`^  ${word} `, 'm'));
    }
    for (const kind of ['RenameStmt', 'AlterSystemStmt', 'RuleStmt', 'MergeStmt', 'GrantRoleStmt']) expect(r.stdout).toContain(kind);
    expect(r.stdout).toContain('production/no-schema-change');
  });
});
