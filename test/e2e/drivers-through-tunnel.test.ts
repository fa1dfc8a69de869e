import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runJdbcTenTimes, runPsycopgTenTimes } from '../support/pg-drivers.js';
import { CliProcess, loginAs, readText, runCli, startStack, type Stack } from '../support/stack.js';

/**
 * The drivers that ask for binary results (pgjdbc with default settings, psycopg 3 with binary=True, node-postgres
 * with binary: true), each running a prepared query ten times through `hoopctl connect` and the broker process:
 * numbers come back right, masked columns masked, and no raw value reaches the client, the recording or the log.
 */
const EMAIL = 'grace.hopper@navy.example.mil';
const CARD = '4111 1111 1111 1111';
const RAW = [EMAIL, CARD, CARD.replace(/ /g, '')];

let stack: Stack;
let alice: NodeJS.ProcessEnv;
let tunnel: CliProcess;
let port: number;
/** The tunnel's own password, from the URL connect prints. */
let password: string;

beforeAll(async () => {
  stack = await startStack({
    appPgPolicy: { rules: [{ name: 'pii', mask: { columns: ['email', 'card'], detectors: ['email', 'credit_card'] } }] },
  });
  const admin = new pg.Client({ connectionString: stack.cluster.url('app') });
  await admin.connect();
  await admin.query('create table customers (id int primary key, name text, email text, card text, balance numeric(10,2), visits bigint)');
  await admin.query('insert into customers values (1, $1, $2, $3, 1234.50, 9007199254740993)', ['Grace', EMAIL, CARD]);
  await admin.query('alter table customers owner to app_rw');
  await admin.end();
  alice = await loginAs(stack, 'alice');
  tunnel = new CliProcess(['connect', 'app-pg', '-o', 'json'], alice);
  const ready = JSON.parse((await tunnel.waitFor(/\{.*"port".*\}\n/))[0]!) as { port: number; url: string };
  port = ready.port;
  password = decodeURIComponent(new URL(ready.url).password);
}, 120_000);

afterAll(async () => {
  await tunnel?.stop().catch(() => undefined);
  await stack?.stop();
});

const noRaw = (text: string, where: string) => {
  for (const raw of RAW) expect(text.includes(raw), `${where} holds ${raw}`).toBe(false);
};

describe('real drivers with binary results through hoopctl connect and the broker', () => {
  it('pgjdbc 42.5 with default settings (binary from the fifth run)', async () => {
    const run = await runJdbcTenTimes(port, 'app', 'select id, name, email, card, balance, visits from customers where id = ?', password);
    noRaw(run.output, 'pgjdbc');
    expect(run.lines).toEqual([...Array<string>(10).fill('1|Grace|[REDACTED]|[REDACTED]|1234.50|9007199254740993'), 'still open 1']);
  });

  it('psycopg 3 with binary=True (prepared from the fifth run)', async () => {
    const run = await runPsycopgTenTimes(port, 'app', 'select id, name, email, card, balance, visits from customers where id = %s', password);
    noRaw(run.output, 'psycopg');
    const row = ['1', 'Grace', '[REDACTED]', '[REDACTED]', '1234.50', '9007199254740993'];
    expect(run.lines.map((l) => (l.startsWith('[') ? JSON.parse(l) : l))).toEqual([...Array<unknown>(10).fill(row), 'still open 1']);
  });

  it('node-postgres with binary: true, a named prepared statement', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'laptop-user', database: 'app', password });
    await c.connect();
    const rows: unknown[] = [];
    for (let i = 0; i < 10; i++) rows.push((await c.query({ name: 'one', text: 'select id, name, email, card, visits from customers where id = $1', values: [1], binary: true })).rows[0]);
    await c.end();
    noRaw(JSON.stringify(rows), 'node-postgres');
    expect(rows).toEqual(Array<unknown>(10).fill({ id: 1, name: 'Grace', email: '[REDACTED]', card: '[REDACTED]', visits: '9007199254740993' }));
  });

  it('left no raw value in the recordings or the broker log', async () => {
    const sessions = JSON.parse((await runCli(['sessions', '--connection', 'app-pg', '-o', 'json'], alice)).stdout) as Array<{ id: string }>;
    expect(sessions.length).toBeGreaterThanOrEqual(3);
    for (const s of sessions) noRaw((await runCli(['replay', s.id, '-o', 'json'], alice)).stdout, `session ${s.id}`);
    noRaw(readText(stack.brokerLogPath), 'the broker log');
  });
});
