import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { CliProcess, runCli } from '../support/stack.js';
import { freePort } from '../../src/lib/net.js';

/**
 * The README's first command: `hoopctl demo` on embedded defaults (a throwaway cluster, the development issuer, a
 * SQLite broker), driven the way its banner says, then stopped with Ctrl-C.
 */
const dir = mkdtempSync(join(tmpdir(), 'hoop-demo-'));
let demo: CliProcess | undefined;

afterAll(async () => {
  await demo?.stop().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

describe('hoopctl demo', () => {
  it('runs on embedded defaults: its CI line works, PII comes back masked, DDL is denied, Ctrl-C stops it cleanly', async () => {
    const [port, issuerPort] = [await freePort(), await freePort()];
    demo = new CliProcess(['demo', '--port', String(port), '--issuer-port', String(issuerPort), '--data-dir', join(dir, 'state')], {
      PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: join(dir, 'config'),
    });
    await demo.waitFor(/Press Ctrl-C to stop/, 60_000);
    expect(demo.stdout).toContain(`hoopctl demo is running: broker http://127.0.0.1:${port}`);
    const ci = {
      PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: join(dir, 'ci'),
      HOOPCTL_BROKER: `http://127.0.0.1:${port}`, HOOPCTL_CLIENT_ID: 'demo-ci', HOOPCTL_CLIENT_SECRET: 'demo-ci-secret',
    };
    const rows = await runCli(['exec', 'demo-pg', '-o', 'json', '-e', 'select name, email, card from customers order by id limit 2'], ci);
    expect(rows.code, rows.stderr).toBe(0);
    const [result] = JSON.parse(rows.stdout) as Array<{ rows: Array<{ name: string; email: string; card: string }> }>;
    expect(result!.rows[0]!.name).toBe('customer 1');
    expect(result!.rows[0]!.email).not.toBe('customer1@example.com');
    expect(result!.rows[0]!.email).toMatch(/\*/);
    expect(result!.rows[0]!.card).toBe('**** **** **** 0001');
    const drop = await runCli(['exec', 'demo-pg', '-e', 'drop table customers'], ci);
    expect(drop.code).toBe(1);
    expect(drop.stderr).toContain('denied by rule "no-ddl": schema changes go through migrations');

    // What ran as the OS user postgres when the demo connected as superuser is now refused by a rule, each by name.
    const refused: Array<[string, string]> = [
      ['create table stolen (id int)', 'no-ddl'],
      ['grant all on customers to public', 'no-privilege-changes'],
      ['create role intruder superuser login', 'no-privilege-changes'],
      ["alter system set log_statement = 'none'", 'no-server-admin'],
      ["copy (select 1) to program 'true'", 'no-program'],
      ['set role postgres', 'no-role-switch'],
    ];
    for (const [sql, rule] of refused) {
      const r = await runCli(['exec', 'demo-pg', '-e', sql], ci);
      expect({ sql, code: r.code, denied: r.stderr.includes(`denied by rule "${rule}"`) }, r.stderr).toEqual({ sql, code: 1, denied: true });
    }
    // And the backend would refuse them too: the broker's role is no superuser and may only use the demo's table.
    const role = await runCli(['exec', 'demo-pg', '-o', 'json', '-e',
      `select current_user as "user", rolsuper, rolcreaterole, rolcreatedb, has_schema_privilege('public', 'CREATE') as create_in_public,
              has_database_privilege('app', 'TEMP') as temp, has_table_privilege('customers', 'TRUNCATE') as truncate,
              pg_has_role('pg_execute_server_program', 'MEMBER') as program, (select count(*) from customers) as customers,
              to_regclass('public.stolen') is null as no_stolen_table
         from pg_roles where rolname = current_user`], ci);
    expect(role.code, role.stderr).toBe(0);
    expect(JSON.parse(role.stdout)[0].rows[0]).toEqual({
      user: 'demo_app', rolsuper: false, rolcreaterole: false, rolcreatedb: false, create_in_public: false, temp: false, truncate: false, program: false,
      customers: '50', no_stolen_table: true,
    });
    demo.child.kill('SIGINT');
    expect(await demo.exit(30_000)).toBe(0);
  }, 120_000);

  it('--print-config prints the demo\'s broker config: no password, policy check judges with it, broker check passes once the env var is set', async () => {
    const state = join(dir, 'printed');
    const printed = await runCli(['demo', '--print-config', '--data-dir', state], { PATH: process.env.PATH, HOME: dir });
    expect(printed.code, printed.stderr).toBe(0);
    expect(parse(printed.stdout).connections[0].credentials).toEqual({ user: 'demo_app', password: { env: 'HOOPCTL_DEMO_PG_PASSWORD' } });
    const config = join(dir, 'demo-broker.yaml');
    writeFileSync(config, printed.stdout);
    const env = { PATH: process.env.PATH, HOME: dir };
    const judge = (as: string, sql: string) => runCli(['policy', 'check', '-c', config, '--connection', 'demo-pg', '--as', as, '-e', sql], env);
    expect((await judge('group=developers', "copy (select 1) to program 'true'")).stdout).toMatch(/^DENY by rule "no-program"/);
    expect((await judge('group=developers', 'grant all on customers to public')).stdout).toMatch(/^DENY by rule "no-privilege-changes"/);
    expect((await judge('group=developers', 'alter system set fsync = off')).stdout).toMatch(/^DENY by rule "no-server-admin"/);
    expect((await judge('group=developers', 'select name from customers')).stdout).toMatch(/^ALLOW \(default action\)/);
    expect((await judge('group=contractors', 'select 1')).stdout).toMatch(/^DENY \(access\)/);
    const unset = await runCli(['broker', 'check', '-c', config], env);
    expect(unset.code).toBe(1);
    expect(unset.stderr).toContain('connections[0].credentials.password: environment variable HOOPCTL_DEMO_PG_PASSWORD is not set');
    const ok = await runCli(['broker', 'check', '-c', config], { ...env, HOOPCTL_DEMO_PG_PASSWORD: 'set-by-the-operator' });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^config ok: 1 connection\(s\) \(demo-pg: postgres\)/);
  });
});
