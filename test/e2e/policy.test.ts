import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeDeviceLogin } from '../support/device-user.js';
import { CliProcess, runProcess, startStack, type Stack } from '../support/stack.js';

/**
 * Policy end to end: the broker process with a deny rule and a mask rule on `app-pg`, `hoopctl connect` as a
 * process, real psql and node-postgres through the tunnel. Then the broker's SQLite store and its log are
 * searched for every raw value.
 */
const EMAIL = 'dinah.cat@wonderland.example.com';
const CARD = '4111 1111 1111 1111';
const SSN = '536-22-4871';
const RAW = [EMAIL, CARD, CARD.replace(/ /g, ''), SSN];

let stack: Stack;
let tunnel: CliProcess;
let port: number;
/** The tunnel's own password, from the URL connect prints. */
let password: string;
let admin: pg.Client;
const outputs: string[] = [];

function psql(args: string[], input?: string) {
  const env = { PATH: process.env.PATH, PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'whoever', PGDATABASE: 'app', PGCONNECT_TIMEOUT: '10', PGPASSWORD: password };
  return runProcess('psql', ['-X', '-w', '-At', '-v', 'VERBOSITY=verbose', ...args], env, input).then((r) => {
    outputs.push(r.stdout, r.stderr);
    return r;
  });
}

beforeAll(async () => {
  stack = await startStack({
    appPgPolicy: {
      rules: [
        { name: 'no-drop', match: { statement: ['DropStmt', 'TruncateStmt'] }, action: 'deny', message: 'schema changes go through migrations' },
        { name: 'pii', match: { identity: { groups: ['dba'] } }, mask: { columns: ['email'], detectors: ['email', 'credit_card', 'us_ssn'] } },
      ],
    },
  });
  admin = new pg.Client({ connectionString: stack.cluster.url('app') });
  await admin.connect();
  await admin.query('create table customers (id int, email text, notes text)');
  await admin.query('alter table customers owner to app_rw');
  await admin.query('insert into customers values (1, $1, $2)', [EMAIL, `card ${CARD}, ssn ${SSN}`]);
  const env = stack.cliEnv({ XDG_CONFIG_HOME: join(stack.dir, 'config-alice') });
  const login = new CliProcess(['login', '--broker', stack.brokerUrl, '--poll-interval', '0.2'], env);
  const [, uri] = await login.waitFor(/or open (\S+)/);
  await completeDeviceLogin(uri!, 'alice');
  expect(await login.exit()).toBe(0);
  tunnel = new CliProcess(['connect', 'app-pg', '-o', 'json'], env);
  const [line] = await tunnel.waitFor(/\{.*"port".*\}\n/);
  port = JSON.parse(line!).port;
  password = decodeURIComponent(new URL(JSON.parse(line!).url).password);
}, 120_000);

afterAll(async () => {
  await tunnel?.stop().catch(() => undefined);
  await admin?.end();
  await stack?.stop();
});

describe('policy through the broker and hoopctl connect', () => {
  it('denies a DROP with 42501 naming the rule; the table is still there', async () => {
    const r = await psql(['-c', 'drop table customers']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('ERROR:  42501: hoopctl: statement denied by rule "no-drop": schema changes go through migrations');
    const { rows } = await admin.query('select count(*)::int as n from customers');
    expect(rows[0].n).toBe(1);
  });

  it('masks by column and by content, for psql and node-postgres', async () => {
    const r = await psql(['-c', 'select id, email, notes, lower(email) as e from customers']);
    expect(r.stdout).toBe('1|[REDACTED]|card [REDACTED:credit_card], ssn [REDACTED:us_ssn]|[REDACTED]\n');
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'whoever', database: 'app', password });
    await client.connect();
    const { rows } = await client.query('select email, notes from customers where id = $1 and email <> $2', [1, 'x@y.example.com']);
    await client.query('select count(*) from customers where email = $1', [EMAIL]);
    await client.end();
    outputs.push(JSON.stringify(rows));
    expect(rows).toEqual([{ email: '[REDACTED]', notes: 'card [REDACTED:credit_card], ssn [REDACTED:us_ssn]' }]);
  });

  it('leaves no raw value in the client output, the broker store or the broker log', async () => {
    // The session is recorded as it goes; give the last events a moment to land, then read every file.
    await new Promise((r) => setTimeout(r, 500));
    const files = ['broker.db', 'broker.db-wal', 'broker.log'].map((f) => join(stack.dir, f)).filter((f) => existsSync(f));
    expect(files).toContain(join(stack.dir, 'broker.db'));
    const stored = files.map((f) => readFileSync(f).toString('latin1')).join('\n');
    // The recording is there (so the search is not vacuous) …
    expect(stored).toContain('select count(*) from customers where email = $1');
    expect(stored).toContain('no-drop');
    // … and holds only masked values.
    for (const raw of RAW) {
      expect(stored.includes(raw), `store or log holds ${raw}`).toBe(false);
      expect(outputs.join('\n').includes(raw), `client output holds ${raw}`).toBe(false);
    }
  });
});
