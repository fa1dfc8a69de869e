import { execFileSync, spawn } from 'node:child_process';
import { psqlEnv, runPsql as runHarnessPsql } from '../support/pg-proxy-harness.js';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret, type PostgresConnection } from '../../src/broker/config.js';
import { BackendPool } from '../../src/broker/protocols/postgres/backend-pool.js';
import { CancelRegistry } from '../../src/broker/protocols/postgres/cancel-registry.js';
import { FrameScanner, MAX_BACKEND_FRAME } from '../../src/broker/protocols/postgres/frame-scanner.js';
import {
  createBind,
  createCancelRequest,
  createClose,
  createExecute,
  createParse,
  createQuery,
  createStartupMessage,
  createSync,
  parseErrorResponse,
} from '../../src/broker/protocols/postgres/messages.js';
import { proxyPostgresSession, type PostgresSessionSummary } from '../../src/broker/protocols/postgres/proxy.js';
import { startPgCluster, type PgCluster } from '../../src/dev/pg-cluster.js';
import { MemoryRecorder, type RecordedEvent } from '../support/memory-recorder.js';
import { isQueryActive, waitForActiveQuery } from '../support/pg-activity.js';

const MD5_USER = 'md5_app';
const MD5_PASSWORD = 'md5-pass-Zq81';
const WRONG_PASSWORD = 'wrong-pass-Xk29-never-shown';

let scramCluster: PgCluster;
let md5Cluster: PgCluster;

interface ProxyUnderTest {
  port: number;
  events: RecordedEvent[];
  summaries: PostgresSessionSummary[];
  /** The broker side of each accepted client connection, in accept order. */
  sockets: Socket[];
  failTypes: Set<string>;
  close(): Promise<void>;
}

const proxies: ProxyUnderTest[] = [];

/** A local TCP server standing in for the tunnel: each connection is one proxied session. */
async function startProxy(connection: PostgresConnection, cancels = new CancelRegistry(), pool?: BackendPool): Promise<ProxyUnderTest> {
  const events: RecordedEvent[] = [];
  const summaries: PostgresSessionSummary[] = [];
  const sockets: Socket[] = [];
  const failTypes = new Set<string>();
  const running = new Set<Promise<unknown>>();
  let n = 0;
  const server: Server = createServer((socket) => {
    sockets.push(socket);
    const recorder = new MemoryRecorder(`${connection.name}-${++n}`, events);
    recorder.failTypes = failTypes;
    const p = proxyPostgresSession(socket, { connection, recorder, cancels, logger: pino({ level: 'silent' }), ...(pool ? { connectBackend: pool.connect } : {}) }).then((s) => {
      summaries.push(s);
    });
    running.add(p);
    void p.finally(() => running.delete(p));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const proxy: ProxyUnderTest = {
    port: typeof address === 'object' && address ? address.port : 0,
    events,
    summaries,
    sockets,
    failTypes,
    async close() {
      for (const s of sockets) s.destroy();
      await Promise.all(running);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  proxies.push(proxy);
  return proxy;
}

function pgConnection(name: string, cluster: PgCluster, over: { user?: string; password?: string; sslmode?: PostgresConnection['target']['sslmode'] } = {}): PostgresConnection {
  return {
    name,
    type: 'postgres',
    target: { host: cluster.host, port: cluster.port, database: 'postgres', sslmode: over.sslmode ?? 'prefer', connectTimeout: 5_000 },
    credentials: { user: over.user ?? cluster.superuser, password: new Secret(over.password ?? cluster.password) },
    access: { groups: [], clientIds: [], subjects: [] },
  };
}

/** Environment for psql: the proxy's address, nothing that could authenticate it on its own. */
/** Plain psql output (no SQLSTATE in error lines), as a user sees it. */
const runPsql = (port: number, args: string[], input?: string) => runHarnessPsql(port, args, input, { verbose: false });

async function waitFor<T>(probe: () => T | undefined | false, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const ofType = (events: RecordedEvent[], type: string) => events.filter((e) => e.type === type);
const statementWith = (events: RecordedEvent[], sql: string) => ofType(events, 'statement').find((e) => e.data.sql === sql);
const resultFor = (events: RecordedEvent[], statement: RecordedEvent | undefined) =>
  events.find((e) => e.type === 'result' && statement && e.data.statementSeq === statement.data.statementSeq && e.sessionId === statement.sessionId);

/** A raw protocol client: sends bytes exactly as given, and reads whole backend messages. */
class RawClient {
  readonly socket: Socket;
  readonly #scanner = new FrameScanner({ wanted: new Set(Array.from({ length: 128 }, (_, i) => i)), maxLength: MAX_BACKEND_FRAME });
  readonly messages: Array<{ code: string; body: Buffer }> = [];
  bytesReceived = 0;
  closed = false;

  constructor(port: number, keepAll = true) {
    this.socket = netConnect({ host: '127.0.0.1', port });
    this.socket.on('data', (chunk: Buffer) => {
      this.bytesReceived += chunk.length;
      for (const f of this.#scanner.observe(chunk)) {
        const code = String.fromCharCode(f.code);
        if (keepAll || code !== 'D') this.messages.push({ code, body: Buffer.from(f.body) });
      }
    });
    this.socket.on('close', () => (this.closed = true));
    this.socket.on('error', () => undefined);
  }

  async startup(params: Record<string, string> = {}): Promise<void> {
    await once(this.socket, 'connect');
    this.socket.write(createStartupMessage({ user: 'whoever', database: 'postgres', ...params }));
    await this.until((m) => m.filter((x) => x.code === 'Z').length >= 1, 'ReadyForQuery after startup');
  }

  count(code: string): number {
    return this.messages.filter((m) => m.code === code).length;
  }

  until(done: (messages: RawClient['messages']) => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    return waitFor(() => done(this.messages), what, timeoutMs).then(() => undefined);
  }

  errors(): Array<{ code: string; message: string }> {
    return this.messages.filter((m) => m.code === 'E').map((m) => parseErrorResponse(m.body));
  }
}

beforeAll(async () => {
  [scramCluster, md5Cluster] = await Promise.all([startPgCluster({ auth: 'scram-sha-256' }), startPgCluster({ auth: 'md5' })]);
  const admin = new pg.Client({ connectionString: md5Cluster.url() });
  await admin.connect();
  // initdb stores the superuser's password as SCRAM; a role stored as md5 makes the server use md5.
  await admin.query(`set password_encryption = 'md5'`);
  await admin.query(`create role ${MD5_USER} login password '${MD5_PASSWORD}'`);
  const { rows } = await admin.query(`select rolpassword like 'md5%' as md5 from pg_authid where rolname = $1`, [MD5_USER]);
  expect(rows[0].md5).toBe(true);
  await admin.end();
  const scramAdmin = new pg.Client({ connectionString: scramCluster.url() });
  await scramAdmin.connect();
  await scramAdmin.query('create table copy_target (id int, name text)');
  await scramAdmin.query('create table tx_target (id int)');
  await scramAdmin.end();
});

afterAll(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  await Promise.all([scramCluster?.stop(), md5Cluster?.stop()]);
});

describe('postgres proxy with psql against a SCRAM backend', () => {
  let proxy: ProxyUnderTest;
  beforeAll(async () => {
    proxy = await startProxy(pgConnection('pg-scram', scramCluster));
  });

  it('runs a query without asking the client for a password, as the configured backend user', async () => {
    const r = await runPsql(proxy.port, ['-c', 'select current_user, 41 + 1']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`${scramCluster.superuser}|42`);
    const stmt = statementWith(proxy.events, 'select current_user, 41 + 1');
    expect(stmt?.data).toMatchObject({ protocol: 'simple' });
    expect(resultFor(proxy.events, stmt)?.data).toMatchObject({ tags: ['SELECT 1'], rows: 1 });
    expect(ofType(proxy.events, 'backend-connected')[0].data).toMatchObject({ user: scramCluster.superuser, database: 'postgres', applicationName: 'psql' });
  });

  it('records a multi-statement query once, with one result carrying every tag', async () => {
    const sql = 'select 1 union all select 2; select 3';
    const r = await runPsql(proxy.port, ['-c', sql]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('3');
    const stmts = ofType(proxy.events, 'statement').filter((e) => e.data.sql === sql);
    expect(stmts).toHaveLength(1);
    expect(resultFor(proxy.events, stmts[0])?.data).toMatchObject({ tags: ['SELECT 2', 'SELECT 1'], rows: 3 });
  });

  it('returns errors as errors and the session goes on', async () => {
    const r = await runPsql(proxy.port, [], "select 1/0;\nselect 'still ' || 'alive';\n");
    expect(r.stderr).toContain('division by zero');
    expect(r.stdout.trim()).toBe('still alive');
    const failed = statementWith(proxy.events, 'select 1/0;');
    expect(resultFor(proxy.events, failed)?.data).toMatchObject({ tags: [], rows: 0, error: { code: '22012', message: 'division by zero' } });
    const after = statementWith(proxy.events, "select 'still ' || 'alive';");
    expect(resultFor(proxy.events, after)?.data).toMatchObject({ tags: ['SELECT 1'] });
    expect(after?.sessionId).toBe(failed?.sessionId);
  });

  it('carries COPY FROM STDIN and COPY TO STDOUT', async () => {
    const load = await runPsql(proxy.port, ['-c', 'COPY copy_target FROM STDIN'], '1\tone\n2\ttwo\n3\tthree\n');
    expect(load.stderr).toBe('');
    expect(load.stdout.trim()).toBe('COPY 3');
    const dump = await runPsql(proxy.port, ['-c', 'COPY (select * from copy_target order by id) TO STDOUT']);
    expect(dump.stdout).toBe('1\tone\n2\ttwo\n3\tthree\n');
    expect(resultFor(proxy.events, statementWith(proxy.events, 'COPY copy_target FROM STDIN'))?.data).toMatchObject({ tags: ['COPY 3'], rows: 3 });
  });

  it('cancels a running query when psql gets Ctrl-C', async () => {
    const sql = 'select pg_sleep(30)';
    const child = spawn('psql', ['-w', '-X', '-At', '-c', sql], { env: psqlEnv(proxy.port), stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    await waitFor(() => statementWith(proxy.events, sql), 'the sleep to be recorded');
    // Ctrl-C only means something once the server runs the statement: wait for that, however busy the machine is.
    await waitForActiveQuery(scramCluster.url(), sql);
    child.kill('SIGINT');
    // psql exits once the server gave up the statement; a lost cancel would leave it waiting out the 30 s sleep.
    await exited;
    expect(stderr).toContain('canceling statement due to user request');
    const cancelSummary = await waitFor(() => proxy.summaries.find((s) => s.outcome === 'cancel-request'), 'the cancel session');
    expect(cancelSummary.cancel).toBe('forwarded');
    expect(resultFor(proxy.events, statementWith(proxy.events, sql))?.data).toMatchObject({ error: { code: '57014' } });
  });

  it('ignores a cancel request with an unknown key but reports it', async () => {
    const socket = netConnect({ host: '127.0.0.1', port: proxy.port });
    await once(socket, 'connect');
    const before = proxy.summaries.length;
    socket.end(createCancelRequest({ pid: 12345, secret: 678 }));
    const summary = await waitFor(() => proxy.summaries.slice(before).find((s) => s.outcome === 'cancel-request' && s.cancel === 'unknown-key'), 'the cancel summary');
    expect(summary.error).toMatch(/unknown key/);
  });

  it('never forwards a statement that cannot be recorded', async () => {
    proxy.failTypes.add('statement');
    try {
      const r = await runPsql(proxy.port, ['-c', 'create table must_not_exist (id int)']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain('broker could not record the statement, so it was not forwarded');
    } finally {
      proxy.failTypes.delete('statement');
    }
    const check = await runPsql(proxy.port, ['-c', "select to_regclass('must_not_exist') is null"]);
    expect(check.stdout.trim()).toBe('t');
  });

  it('refuses a replication connection', async () => {
    const r = await runPsql(proxy.port, ['-d', 'dbname=postgres replication=database', '-c', 'IDENTIFY_SYSTEM']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('replication connections are not supported through the broker');
  });
});

describe('postgres proxy with node-postgres (extended protocol)', () => {
  let proxy: ProxyUnderTest;
  let client: pg.Client;
  beforeAll(async () => {
    proxy = await startProxy(pgConnection('pg-extended', scramCluster));
    client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'laptop-user', database: 'postgres', application_name: 'node-test' });
    await client.connect();
  });
  afterAll(async () => {
    await client?.end();
  });

  it('runs parameterised queries and records SQL with its parameters', async () => {
    const { rows } = await client.query('select $1::int + $2::int as s', [1, 2]);
    expect(rows).toEqual([{ s: 3 }]);
    const stmt = statementWith(proxy.events, 'select $1::int + $2::int as s');
    expect(stmt?.data).toMatchObject({ protocol: 'extended', params: ['1', '2'], portal: '', statement: '' });
    expect(resultFor(proxy.events, stmt)?.data).toMatchObject({ tags: ['SELECT 1'], rows: 1 });
  });

  it('records binary and NULL parameters', async () => {
    const { rows } = await client.query('select length($1::bytea) as n, $2::text is null as isnull', [Buffer.from([0xde, 0xad, 0xbe]), null]);
    expect(rows).toEqual([{ n: 3, isnull: true }]);
    expect(statementWith(proxy.events, 'select length($1::bytea) as n, $2::text is null as isnull')?.data.params).toEqual(['\\xdeadbe', null]);
  });

  it('knows the SQL of a named prepared statement on every execution', async () => {
    const q = { name: 'by-label', text: 'select $1::text as label' };
    expect((await client.query({ ...q, values: ['first'] })).rows).toEqual([{ label: 'first' }]);
    expect((await client.query({ ...q, values: ['second'] })).rows).toEqual([{ label: 'second' }]);
    const runs = ofType(proxy.events, 'statement').filter((e) => e.data.statement === 'by-label');
    expect(runs.map((e) => [e.data.sql, e.data.params])).toEqual([
      ['select $1::text as label', ['first']],
      ['select $1::text as label', ['second']],
    ]);
  });

  it('keeps transaction semantics', async () => {
    await client.query('begin');
    await client.query('insert into tx_target values ($1)', [7]);
    expect((await client.query('select count(*)::int as n from tx_target')).rows[0].n).toBe(1);
    await client.query('rollback');
    expect((await client.query('select count(*)::int as n from tx_target')).rows[0].n).toBe(0);
    const insert = statementWith(proxy.events, 'insert into tx_target values ($1)');
    expect(resultFor(proxy.events, insert)?.data).toMatchObject({ tags: ['INSERT 0 1'], rows: 1 });
  });

  it('reports an error for the statement that failed and carries on', async () => {
    await expect(client.query('select $1::int / 0', [5])).rejects.toMatchObject({ code: '22012' });
    expect((await client.query('select 1 as one')).rows).toEqual([{ one: 1 }]);
    expect(resultFor(proxy.events, statementWith(proxy.events, 'select $1::int / 0'))?.data).toMatchObject({ error: { code: '22012' } });
  });
});

describe('postgres proxy with a pipelining raw client', () => {
  it('pairs results with statements across several Syncs, skipping Executes after an error', async () => {
    const proxy = await startProxy(pgConnection('pg-pipeline', scramCluster));
    const raw = new RawClient(proxy.port);
    await raw.startup();
    const step = (sql: string) => [createParse({ sql }), createBind({}), createExecute()];
    raw.socket.write(
      Buffer.concat([
        ...step('select 101'),
        createSync(),
        ...step('select 1/0 as boom'),
        ...step('select 103'),
        createSync(),
        ...step('select 104 union all select 105'),
        createSync(),
        createQuery('select 106; select 107'),
      ]),
    );
    await raw.until((m) => m.filter((x) => x.code === 'Z').length === 5, 'four ReadyForQuery after startup');
    const result = (sql: string) => resultFor(proxy.events, statementWith(proxy.events, sql))?.data;
    expect(result('select 101')).toMatchObject({ tags: ['SELECT 1'], rows: 1 });
    expect(result('select 1/0 as boom')).toMatchObject({ error: { code: '22012' } });
    expect(result('select 103')).toMatchObject({ skipped: true, tags: [] });
    expect(result('select 104 union all select 105')).toMatchObject({ tags: ['SELECT 2'], rows: 2 });
    expect(result('select 106; select 107')).toMatchObject({ tags: ['SELECT 1', 'SELECT 1'], rows: 2 });
    expect(raw.errors().map((e) => e.code)).toEqual(['22012']);
    raw.socket.destroy();
  });
  it('forgets a prepared statement the client closed, so a later Execute is not recorded with stale SQL', async () => {
    const proxy = await startProxy(pgConnection('pg-close', scramCluster));
    const raw = new RawClient(proxy.port);
    await raw.startup();
    raw.socket.write(
      Buffer.concat([
        createParse({ name: 'stmt_a', sql: 'select 201' }),
        createBind({ statement: 'stmt_a' }),
        createExecute(),
        createClose('S', 'stmt_a'),
        createBind({ statement: 'stmt_a' }),
        createExecute(),
        createSync(),
      ]),
    );
    await raw.until((m) => m.filter((x) => x.code === 'Z').length === 2, 'ReadyForQuery');
    const stmts = ofType(proxy.events, 'statement').map((e) => e.data);
    expect(stmts.map((d) => [d.statement, d.sql])).toEqual([
      ['stmt_a', 'select 201'],
      ['stmt_a', null],
    ]);
    expect(raw.errors().map((e) => e.code)).toEqual(['26000']);
    expect(ofType(proxy.events, 'result').map((e) => e.data.error)).toEqual([undefined, { code: '26000', message: 'prepared statement "stmt_a" does not exist' }]);
    raw.socket.destroy();
  });
});

describe('postgres proxy backends and authentication', () => {
  it('authenticates to an md5 backend', async () => {
    const proxy = await startProxy(pgConnection('pg-md5', md5Cluster, { user: MD5_USER, password: MD5_PASSWORD, sslmode: 'disable' }));
    const r = await runPsql(proxy.port, ['-c', 'select current_user']);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(MD5_USER);
  });

  it('gives a clean error when the broker cannot authenticate, without revealing the password', async () => {
    const proxy = await startProxy(pgConnection('pg-wrong', scramCluster, { password: WRONG_PASSWORD }));
    const r = await runPsql(proxy.port, ['-c', 'select 1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('broker could not authenticate to the target "pg-wrong"');
    expect(r.stderr).toContain('password authentication failed');
    const everything = r.stdout + r.stderr + JSON.stringify(proxy.events) + JSON.stringify(proxy.summaries);
    expect(everything).not.toContain(WRONG_PASSWORD);
    expect(everything).not.toContain(scramCluster.password);
    expect(ofType(proxy.events, 'backend-error')[0].data).toMatchObject({ phase: 'connect', code: '28P01' });
    expect(proxy.summaries[0]).toMatchObject({ outcome: 'failed' });
  });

  it('refuses to continue in clear when sslmode=require and the server has no TLS', async () => {
    const proxy = await startProxy(pgConnection('pg-require', scramCluster, { sslmode: 'require' }));
    const r = await runPsql(proxy.port, ['-c', 'select 1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('broker could not reach the target "pg-require": server does not support SSL, but sslmode is require');
  });

  it('reports an unreachable target', async () => {
    const conn = pgConnection('pg-down', scramCluster);
    conn.target = { ...conn.target, port: 1 };
    const proxy = await startProxy(conn);
    const r = await runPsql(proxy.port, ['-c', 'select 1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('broker could not reach the target "pg-down": cannot reach 127.0.0.1:1: ECONNREFUSED');
  });
});

describe('postgres proxy session lifecycle', () => {
  let proxy: ProxyUnderTest;
  beforeAll(async () => {
    proxy = await startProxy(pgConnection('pg-life', scramCluster));
  });

  async function backendCount(appName: string): Promise<number> {
    const admin = new pg.Client({ connectionString: scramCluster.url() });
    await admin.connect();
    try {
      const { rows } = await admin.query('select count(*)::int as n from pg_stat_activity where application_name = $1', [appName]);
      return rows[0].n as number;
    } finally {
      await admin.end();
    }
  }

  it('closes the backend connection when the client goes away', async () => {
    const raw = new RawClient(proxy.port);
    await raw.startup({ application_name: 'vanishing-client' });
    expect(await backendCount('vanishing-client')).toBe(1);
    raw.socket.destroy();
    const deadline = Date.now() + 10_000;
    while ((await backendCount('vanishing-client')) > 0) {
      if (Date.now() > deadline) throw new Error('the backend connection outlived its client');
      await new Promise((r) => setTimeout(r, 100));
    }
  }, 20_000);

  it('ends the client when the backend goes away', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'x', database: 'postgres', application_name: 'to-be-terminated' });
    const ended = new Promise<void>((resolve) => client.on('end', () => resolve()));
    const errors: Error[] = [];
    client.on('error', (e) => errors.push(e));
    await client.connect();
    const admin = new pg.Client({ connectionString: scramCluster.url() });
    await admin.connect();
    await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'to-be-terminated'`);
    await admin.end();
    await ended;
    expect(errors.map((e) => e.message).join('\n')).toContain('terminating connection due to administrator command');
    const ev = await waitFor(() => proxy.events.find((e) => e.type === 'backend-error' && e.data.code === '57P01'), 'the backend error event');
    expect(ev.data).toMatchObject({ severity: 'FATAL' });
  });
});

describe('postgres proxy under malformed input and slow clients', () => {
  let proxy: ProxyUnderTest;
  beforeAll(async () => {
    proxy = await startProxy(pgConnection('pg-hostile', scramCluster));
  });

  /** Sends a valid startup, then `bytes`; expects a 08P01 error and the connection closed by the broker. */
  async function expectProtocolViolation(bytes: Buffer, withStartup = true): Promise<string> {
    const raw = new RawClient(proxy.port);
    if (withStartup) await raw.startup();
    else await once(raw.socket, 'connect');
    raw.socket.write(bytes);
    await waitFor(() => raw.closed, 'the broker to close the connection');
    const errors = raw.errors();
    expect(errors).toHaveLength(1);
    expect(errors[0].code).toBe('08P01');
    return errors[0].message;
  }

  const header = (code: string, length: number) => {
    const b = Buffer.alloc(5);
    b.write(code, 0, 'latin1');
    b.writeInt32BE(length | 0, 1);
    return b;
  };

  it('closes only the offending session on malformed frames; a concurrent psql session keeps working', async () => {
    const child = spawn('psql', ['-w', '-X', '-At'], { env: psqlEnv(proxy.port), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    child.stdin.write("select 'before';\n");
    await waitFor(() => stdout.includes('before'), 'the first psql result');

    expect(await expectProtocolViolation(header('Q', 2))).toMatch(/^protocol violation: invalid length 2/);
    expect(await expectProtocolViolation(Buffer.concat([header('Q', 0x7fffffff), Buffer.from('select')]))).toMatch(/invalid length 2147483647/);
    expect(await expectProtocolViolation(Buffer.concat([header('Q', 12), Buffer.from('select 1')]))).toBe('protocol violation: string without terminator');
    const v2 = Buffer.alloc(8);
    v2.writeInt32BE(8);
    v2.writeInt32BE(0x00020000, 4);
    expect(await expectProtocolViolation(v2, false)).toMatch(/unsupported frontend protocol 2\.0/);

    child.stdin.end("select 'after';\n");
    expect(await exited).toBe(0);
    expect(stderr).toBe('');
    expect(stdout.split('\n')).toEqual(['before', 'after', '']);
    const violations = ofType(proxy.events, 'protocol-error');
    expect(violations.map((e) => e.data.code)).toEqual(['08P01', '08P01', '08P01', '08P01']);
    expect(proxy.summaries.filter((s) => s.outcome === 'failed')).toHaveLength(4);
  });

  it('ends a session that breaks the protocol even while it is not reading its results', async () => {
    const raw = new RawClient(proxy.port, false);
    await raw.startup();
    raw.socket.pause();
    const before = proxy.summaries.length;
    const sql = "select repeat('y', 1000) from generate_series(1, 100000)";
    raw.socket.write(createQuery(sql));
    await waitFor(() => statementWith(proxy.events, sql), 'the query to be forwarded');
    await new Promise((r) => setTimeout(r, 300));
    raw.socket.write(Buffer.from([0x51, 0, 0, 0, 1]));
    const summary = await waitFor(() => proxy.summaries[before], 'the session to end', 10_000);
    expect(summary).toMatchObject({ outcome: 'failed', error: 'protocol violation: invalid length 1 in message of type \'Q\'' });
    raw.socket.destroy();
  });

  it('stops reading the backend while the client is not reading, so memory stays bounded', async () => {
    const raw = new RawClient(proxy.port, false);
    await raw.startup();
    const serverSide = proxy.sockets[proxy.sockets.length - 1];
    raw.socket.pause();
    const sql = "select repeat('x', 1000) from generate_series(1, 200000)";
    raw.socket.write(createQuery(sql));
    await waitFor(() => statementWith(proxy.events, sql), 'the query to be forwarded');
    // While the client reads nothing, the proxy must not pile the ~200 MB result up in memory.
    await waitFor(() => serverSide.writableLength > 0, 'the result to back up towards the client', 60_000);
    let maxBuffered = 0;
    for (let i = 0; i < 75; i++) {
      maxBuffered = Math.max(maxBuffered, serverSide.writableLength);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(maxBuffered).toBeGreaterThan(0);
    expect(maxBuffered).toBeLessThan(4 * 1024 * 1024);
    raw.socket.resume();
    await raw.until((m) => m.filter((x) => x.code === 'Z').length === 2, 'the end of the result', 60_000);
    expect(raw.bytesReceived).toBeGreaterThan(200_000 * 1000);
    expect(resultFor(proxy.events, statementWith(proxy.events, sql))?.data).toMatchObject({ tags: ['SELECT 200000'], rows: 200000 });
    raw.socket.destroy();
  }, 90_000);
});

describe('postgres proxy to a TLS backend', () => {
  let tlsCluster: PgCluster;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hoop-pg-tls-'));
    const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=hoop test CA', '-days', '2');
    ssl('req', '-x509', ...ec, '-keyout', 'other-ca.key', '-out', 'other-ca.crt', '-subj', '/CN=unrelated CA', '-days', '2');
    ssl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
    writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:localhost\n');
    ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'san.ext');
    chmodSync(dir, 0o755);
    chmodSync(join(dir, 'server.key'), 0o600);
    if (process.getuid?.() === 0) execFileSync('chown', ['postgres', join(dir, 'server.key'), join(dir, 'server.crt')]);
    tlsCluster = await startPgCluster({
      auth: 'scram-sha-256',
      settings: { ssl: 'on', ssl_cert_file: join(dir, 'server.crt'), ssl_key_file: join(dir, 'server.key') },
    });
  });

  afterAll(async () => {
    await tlsCluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const tlsConnection = (name: string, sslmode: PostgresConnection['target']['sslmode'], host: string, sslrootcert?: string) => {
    const conn = pgConnection(name, tlsCluster, { sslmode });
    conn.target = { ...conn.target, host, ...(sslrootcert ? { sslrootcert: join(dir, sslrootcert) } : {}) };
    return conn;
  };

  it('encrypts the backend leg with sslmode=prefer and require', async () => {
    for (const mode of ['prefer', 'require'] as const) {
      const proxy = await startProxy(tlsConnection(`pg-tls-${mode}`, mode, '127.0.0.1'));
      const r = await runPsql(proxy.port, ['-c', 'select ssl from pg_stat_ssl where pid = pg_backend_pid()']);
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('t');
      expect(ofType(proxy.events, 'backend-connected')[0].data).toMatchObject({ tls: true });
    }
  });

  it('verifies the chain with verify-ca and the hostname with verify-full', async () => {
    const ca = await startProxy(tlsConnection('pg-verify-ca', 'verify-ca', '127.0.0.1', 'ca.crt'));
    expect((await runPsql(ca.port, ['-c', 'select 1'])).stdout.trim()).toBe('1');

    const full = await startProxy(tlsConnection('pg-verify-full', 'verify-full', 'localhost', 'ca.crt'));
    expect((await runPsql(full.port, ['-c', 'select 1'])).stdout.trim()).toBe('1');

    const wrongHost = await startProxy(tlsConnection('pg-wrong-host', 'verify-full', '127.0.0.1', 'ca.crt'));
    const r1 = await runPsql(wrongHost.port, ['-c', 'select 1']);
    expect(r1.code).toBe(2);
    expect(r1.stderr).toContain('TLS handshake with the server failed');
    expect(r1.stderr).toMatch(/IP: 127\.0\.0\.1 is not in the cert's list/);

    const wrongCa = await startProxy(tlsConnection('pg-wrong-ca', 'verify-ca', '127.0.0.1', 'other-ca.crt'));
    const r2 = await runPsql(wrongCa.port, ['-c', 'select 1']);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toContain('broker could not reach the target "pg-wrong-ca": TLS handshake with the server failed');
  });
});

describe('postgres proxy with a backend pool (pool: set on the connection)', () => {
  let proxy: ProxyUnderTest;
  let pool: BackendPool;
  const cancels = new CancelRegistry();
  const client = (application_name = 'pool-test') => new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'laptop-user', database: 'postgres', application_name });
  /** Runs `work` in a session of its own and ends it cleanly; resolves with the backend's pid. */
  async function session<T = void>(work?: (c: pg.Client) => Promise<T>, application_name?: string): Promise<{ pid: number; result: T | undefined }> {
    const c = client(application_name);
    await c.connect();
    const pid = (await c.query('select pg_backend_pid() as pid')).rows[0].pid as number;
    const result = await work?.(c);
    await endAndKeep(c);
    return { pid, result };
  }
  /** Ends the session cleanly and waits until the pool holds its backend again (reset). */
  async function endAndKeep(c: pg.Client): Promise<void> {
    const backend = (pooledEvents().at(-1) as { backend: string }).backend;
    await c.end();
    await waitFor(() => pool.idleIds('pg-pooled').includes(backend), `backend ${backend} to be reset and kept`);
  }
  const pooledEvents = () => ofType(proxy.events, 'backend-connected').map((e) => e.data.pooled as { backend: string; reused: boolean });

  beforeAll(async () => {
    pool = new BackendPool({ resetTimeoutMs: 10_000 });
    proxy = await startProxy({ ...pgConnection('pg-pooled', scramCluster), pool: { idle: 2, idleTimeout: 60_000, maxLifetime: 600_000 } }, cancels, pool);
  });
  afterAll(() => pool?.close());

  it('lends the same backend to the next session (same pg_backend_pid), recorded as reused', async () => {
    const first = await session();
    const second = await session();
    expect(second.pid).toBe(first.pid);
    const [a, b] = pooledEvents().slice(-2);
    expect(a).toEqual({ backend: expect.stringMatching(/^b\d+$/), reused: false });
    expect(b).toEqual({ backend: a!.backend, reused: true });
  });

  it('leaves nothing of a session to the next one: temp table, settings, prepared statements, advisory lock, LISTEN', async () => {
    const { pid: leaky } = await session(async (c) => {
      await c.query('create temp table pool_secret (v text)');
      await c.query("insert into pool_secret values ('left behind')");
      await c.query("set work_mem = '7777kB'");
      await c.query("set application_name = 'leaky'");
      await c.query("set timezone = 'Asia/Tokyo'");
      await c.query('prepare pool_plan as select 42');
      await c.query({ name: 'pool_named', text: 'select $1::int', values: [1] });
      await c.query('select pg_advisory_lock(4242)');
      await c.query('listen pool_channel');
      await c.query('set role pg_read_all_data');
    });
    const leakyBackend = pooledEvents().at(-1)!.backend;
    // A raw client sees what the next session's startup says (ParameterStatus): the startup values, not the old SETs.
    const raw = new RawClient(proxy.port);
    // As the pg driver asks (it always sends client_encoding): the same startup, so the same pooled backend.
    await raw.startup({ application_name: 'pool-test', client_encoding: 'UTF8' });
    const status = new Map(raw.messages.filter((m) => m.code === 'S').map((m) => {
      const [name, value] = m.body.toString('utf8').split('\0');
      return [name!, value!];
    }));
    expect(status.get('application_name')).toBe('pool-test');
    expect(status.get('TimeZone')).not.toBe('Asia/Tokyo');
    expect(status.get('session_authorization')).toBe(scramCluster.superuser);
    expect(pooledEvents().at(-1)).toEqual({ backend: leakyBackend, reused: true });
    raw.socket.end(Buffer.from([0x58, 0, 0, 0, 4]));
    await waitFor(() => pool.idleIds('pg-pooled').includes(leakyBackend), 'its backend to be kept');

    const { pid, result } = await session(async (c) => {
      const q = async (sql: string) => (await c.query(sql)).rows[0];
      return {
        temp: await q("select to_regclass('pg_temp.pool_secret') is null as gone"),
        workMem: await q('show work_mem'),
        appName: await q('show application_name'),
        role: await q('select current_user as u'),
        prepared: await q('select count(*)::int as n from pg_prepared_statements'),
        locks: await q("select count(*)::int as n from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"),
        listening: await q('select count(*)::int as n from pg_listening_channels()'),
      };
    });
    expect(pid).toBe(leaky);
    expect(result).toEqual({
      temp: { gone: true }, workMem: { work_mem: '4MB' }, appName: { application_name: 'pool-test' }, role: { u: scramCluster.superuser },
      prepared: { n: 0 }, locks: { n: 0 }, listening: { n: 0 },
    });
    // A NOTIFY on the old channel reaches no one now: the next session on that backend gets nothing.
    const after = await session(async (c) => {
      let heard = false;
      c.on('notification', () => (heard = true));
      const admin = new pg.Client({ connectionString: scramCluster.url() });
      await admin.connect();
      await admin.query('notify pool_channel');
      await admin.end();
      await c.query('select 1');
      return heard;
    });
    expect(after.pid).toBe(leaky);
    expect(after.result).toBe(false);
  });

  it('keeps backends apart by what the client asked at startup (application_name is reset to it)', async () => {
    const a = await session(undefined, 'pool-test');
    const b = await session(undefined, 'pool-other');
    expect(b.pid).not.toBe(a.pid);
    expect((await session(undefined, 'pool-other')).pid).toBe(b.pid);
  });

  it('does not reuse a backend left in a transaction, or one whose client broke off', async () => {
    const c = client();
    await c.connect();
    const inTx = (await c.query('select pg_backend_pid() as pid')).rows[0].pid as number;
    await c.query('begin');
    await c.query('create table pool_tx_left (id int)');
    await c.end();
    const next = await session();
    expect(next.pid).not.toBe(inTx);
    // The transaction was never committed: closing the backend rolled it back.
    expect((await session(async (s) => (await s.query("select to_regclass('pool_tx_left') is null as gone")).rows[0])).result).toEqual({ gone: true });
    await waitUntilGone(inTx);

    const broken = client();
    broken.on('error', () => undefined);
    await broken.connect();
    const brokenPid = (await broken.query('select pg_backend_pid() as pid')).rows[0].pid as number;
    expect(brokenPid).toBe(next.pid);
    const ended = proxy.summaries.length;
    (broken as unknown as { connection: { stream: Socket } }).connection.stream.destroy();
    await waitFor(() => proxy.summaries.length > ended, 'the broken session to end');
    expect((await session()).pid).not.toBe(brokenPid);
  });

  it('a cancel with an earlier session\'s key reaches nothing of the next one; its own key cancels', async () => {
    const first = client();
    await first.connect();
    const firstPid = (await first.query('select pg_backend_pid() as pid')).rows[0].pid as number;
    const oldKey = { pid: (first as unknown as { processID: number }).processID, secret: (first as unknown as { secretKey: number }).secretKey };
    await endAndKeep(first);

    const second = client();
    await second.connect();
    expect((await second.query('select pg_backend_pid() as pid')).rows[0].pid).toBe(firstPid);
    const newKey = { pid: (second as unknown as { processID: number }).processID, secret: (second as unknown as { secretKey: number }).secretKey };
    expect(newKey).not.toEqual(oldKey);
    const sql = 'select pg_sleep(30) as pooled_sleep';
    const sleeping = second.query(sql).then(() => 'finished', (e: Error) => e.message);
    await waitForActiveQuery(scramCluster.url(), sql);

    const sendCancel = async (key: { pid: number; secret: number }) => {
      const socket = netConnect({ host: '127.0.0.1', port: proxy.port });
      await once(socket, 'connect');
      const before = proxy.summaries.length;
      socket.end(createCancelRequest(key));
      return waitFor(() => proxy.summaries.slice(before).find((s) => s.outcome === 'cancel-request'), 'the cancel summary');
    };
    const stale = await sendCancel(oldKey);
    expect(stale.cancel).toBe('unknown-key');
    expect(await isQueryActive(scramCluster.url(), sql)).toBe(true);
    const own = await sendCancel(newKey);
    expect(own.cancel).toBe('forwarded');
    expect(await sleeping).toContain('canceling statement due to user request');
    const ended = proxy.summaries.length;
    await second.end();
    await waitFor(() => proxy.summaries.length > ended, 'the second session to end');
    // A backend a cancel was sent to goes to no later session (a late signal could hit its next statement).
    expect((await session()).pid).not.toBe(firstPid);
  });

  it('under concurrent sessions, some leaving a transaction open, every session starts clean', async () => {
    const many = new BackendPool();
    const busy = await startProxy({ ...pgConnection('pg-pooled-many', scramCluster), pool: { idle: 8, idleTimeout: 60_000, maxLifetime: 600_000 } }, cancels, many);
    const lent = () => ofType(busy.events, 'backend-connected').map((e) => e.data.pooled as { backend: string; reused: boolean });
    const dirty: string[] = [];
    await Promise.all([0, 1, 2, 3].map(async (loop) => {
      for (let i = 0; i < 12; i++) {
        const c = new pg.Client({ host: '127.0.0.1', port: busy.port, user: 'u', database: 'postgres' });
        await c.connect();
        const { rows } = await c.query("select pg_backend_pid() as pid, to_regclass('pg_temp.pool_mark') is null as clean, current_setting('work_mem') as work_mem");
        if (!rows[0].clean || rows[0].work_mem !== '4MB') dirty.push(JSON.stringify(rows[0]));
        await c.query('create temp table pool_mark (v int)');
        await c.query("set work_mem = '9MB'");
        // Every third session leaves a transaction open: its backend must be closed, not lent.
        const leaveOpen = (loop + i) % 3 === 0;
        if (leaveOpen) await c.query('begin');
        const kept = many.keptTotal;
        await c.end();
        // Otherwise the next session waits until a backend was kept again (this one, or another loop's).
        if (!leaveOpen) await waitFor(() => many.keptTotal > kept, 'a backend back in the pool');
      }
    }));
    many.close();
    expect(dirty).toEqual([]);
    expect(lent()).toHaveLength(48);
    expect(lent().filter((l) => l.reused).length).toBeGreaterThan(0);
  });

  it('a reload closes the idle backends and does not take back one lent before it', async () => {
    const lentBefore = client();
    await lentBefore.connect();
    const lentPid = (await lentBefore.query('select pg_backend_pid() as pid')).rows[0].pid as number;
    const idle = await session();
    expect(idle.pid).not.toBe(lentPid);
    pool.clear();
    await waitUntilGone(idle.pid);
    const ended = proxy.summaries.length;
    await lentBefore.end();
    await waitFor(() => proxy.summaries.length > ended, 'the session lent before the reload to end');
    await waitUntilGone(lentPid);
    // After the reload the pool works as before.
    const fresh = await session();
    expect((await session()).pid).toBe(fresh.pid);
  });

  it('is off unless the connection asks for it: each session gets a backend of its own', async () => {
    const plain = await startProxy(pgConnection('pg-unpooled', scramCluster), cancels, pool);
    const pidOf = async () => {
      const c = new pg.Client({ host: '127.0.0.1', port: plain.port, user: 'u', database: 'postgres' });
      await c.connect();
      const pid = (await c.query('select pg_backend_pid() as pid')).rows[0].pid as number;
      await c.end();
      return pid;
    };
    const a = await pidOf();
    const b = await pidOf();
    expect(b).not.toBe(a);
    expect(pool.idleCount('pg-unpooled')).toBe(0);
    expect(ofType(plain.events, 'backend-connected').every((e) => e.data.pooled === undefined)).toBe(true);
  });

  /** Waits until the server has no backend `pid` (the broker closed it rather than keep it). */
  async function waitUntilGone(pid: number): Promise<void> {
    const admin = new pg.Client({ connectionString: scramCluster.url() });
    await admin.connect();
    try {
      for (let i = 0; (await admin.query('select 1 from pg_stat_activity where pid = $1', [pid])).rows.length > 0; i++) {
        if (i > 500) throw new Error(`backend ${pid} is still there`);
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      await admin.end();
    }
  }
});
