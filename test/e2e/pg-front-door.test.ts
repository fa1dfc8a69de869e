import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { SignJWT, importJWK } from 'jose';
import pg from 'pg';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/lib/net.js';
import { interruptPsql, isQueryActive } from '../support/pg-activity.js';
import { makeTestPki } from '../support/pki.js';
import { startConnectTunnel } from '../../scripts/support/tunnel-client.js';
import { AUDIENCE, loginAs, mapLimit, readText, runCli, runProcess, spawnBroker, startStack, type Stack } from '../support/stack.js';

/**
 * The broker's PostgreSQL front door, all real: a PostgreSQL cluster, the development OIDC provider, the broker as a
 * process with `postgres.listen` on loopback, and psql, pgbench and the `pg` driver connecting to it directly with an
 * access token as the password — no hoopctl on the client side. The same masking, rules and recording as a tunnel
 * (the same session runner); every refusal is a PostgreSQL error the client prints, and is recorded.
 */
const EMAIL = 'grace.hopper@navy.example.mil';
const PSQL = '/usr/lib/postgresql/15/bin/psql';
const PGBENCH = '/usr/lib/postgresql/15/bin/pgbench';

let stack: Stack;
let alice: NodeJS.ProcessEnv;
let mallory: NodeJS.ProcessEnv;
let pgPort: number;
let aliceToken: string;
let malloryToken: string;

beforeAll(async () => {
  pgPort = await freePort();
  stack = await startStack({
    extraConfig: { postgres: { listen: `127.0.0.1:${pgPort}`, publicHost: 'localhost' } },
    appPgPolicy: {
      rules: [
        { name: 'no-drop', match: { statement: ['DropStmt', 'TruncateStmt'] }, action: 'deny', message: 'schema changes go through migrations' },
        { name: 'pii', mask: { columns: ['email'] } },
      ],
    },
    extraConnections: [{ name: 'other-pg', access: { groups: ['nobody'] } }, { name: 'app-pg-pooled', pool: { idle: 2 } }],
    async beforeBroker(cluster) {
      const admin = new pg.Client({ connectionString: cluster.url('app') });
      await admin.connect();
      await admin.query('create table customers (id int primary key, name text, email text)');
      await admin.query('insert into customers values (1, $1, $2), (2, $3, $4)', ['Grace', EMAIL, 'Ada', 'ada@example.org']);
      await admin.query('alter table customers owner to app_rw');
      await admin.end();
      // pgbench's tables, made by the cluster's superuser, readable by the connection's role.
      const init = await runProcess(PGBENCH, ['-i', '-s', '1', '-q', cluster.url('app')], { PATH: process.env.PATH });
      if (init.code !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`);
      const grant = new pg.Client({ connectionString: cluster.url('app') });
      await grant.connect();
      await grant.query('grant select on all tables in schema public to app_rw');
      await grant.end();
    },
  });
  alice = await loginAs(stack, 'alice');
  mallory = await loginAs(stack, 'mallory');
  aliceToken = (await runCli(['connect', '--print-token', 'app-pg'], alice)).stdout.trim();
  malloryToken = (await runCli(['connect', '--print-token', 'app-pg'], mallory)).stdout.trim();
  expect(aliceToken.split('.')).toHaveLength(3);
}, 120_000);

afterAll(async () => {
  await stack?.stop();
});

const conninfo = (dbname: string) => `host=127.0.0.1 port=${pgPort} dbname=${dbname} user=anyone sslmode=disable`;
const psql = (dbname: string, token: string, sql: string) =>
  runProcess(PSQL, [conninfo(dbname), '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql], { PATH: process.env.PATH, PGPASSWORD: token, PGCONNECT_TIMEOUT: '30' });

interface SessionRow { id: string; status: string; connection: string; reason?: string; error?: string; identity: { subject: string } }
async function sessions(): Promise<SessionRow[]> {
  const out = await runCli(['sessions', '-o', 'json', '-n', '1000'], alice);
  expect(out.code, out.stderr).toBe(0);
  return JSON.parse(out.stdout) as SessionRow[];
}
async function auditEvents(type: string): Promise<Array<{ data: Record<string, unknown> }>> {
  const out = await runCli(['audit', 'events', '--type', type, '-o', 'json'], alice);
  expect(out.code, out.stderr).toBe(0);
  return JSON.parse(out.stdout) as Array<{ data: Record<string, unknown> }>;
}

describe('the PostgreSQL front door (no hoopctl on the client)', () => {
  it('hoopctl connect --print-url prints a connection string psql uses with the token as PGPASSWORD', async () => {
    const url = await runCli(['connect', '--print-url', 'app-pg'], alice);
    expect(url.code, url.stderr).toBe(0);
    expect(url.stdout.trim()).toBe(`host=localhost port=${pgPort} dbname=app-pg user=hoopctl sslmode=disable`);
    expect(url.stderr).toContain('--print-token app-pg');
    const run = await runProcess(PSQL, [url.stdout.trim(), '-X', '-A', '-t', '-c', 'select current_user'], { PATH: process.env.PATH, PGPASSWORD: aliceToken });
    expect(run.stderr).toBe('');
    expect(run.stdout.trim()).toBe('app_rw');
  });

  it('psql runs a query and sees masking; a denied statement is refused with the rule\'s message; both recorded', async () => {
    const select = await psql('app-pg', aliceToken, 'select id, name, email from customers order by id');
    expect(select.stderr).toBe('');
    expect(select.stdout.trim().split('\n')).toEqual(['1|Grace|[REDACTED]', '2|Ada|[REDACTED]']);
    const drop = await psql('app-pg', aliceToken, 'drop table customers');
    expect(drop.code).not.toBe(0);
    expect(drop.stderr).toContain('schema changes go through migrations');
    // The table is still there, and the session was recorded like a tunnel's: via the front door, with the deny.
    expect((await psql('app-pg', aliceToken, 'select count(*) from customers')).stdout.trim()).toBe('2');
    const mine = (await sessions()).filter((s) => s.connection === 'app-pg' && s.identity.subject === 'alice' && s.status === 'closed');
    expect(mine.length).toBeGreaterThanOrEqual(3);
    const events = await mapLimit(mine, 4, async (s) => (await runCli(['replay', s.id, '-o', 'json'], alice)).stdout);
    const all = events.join('\n');
    expect(all).toContain('pg-front-door');
    expect(all).toContain('drop table customers');
    expect(all).not.toContain(EMAIL);
    expect(all).not.toContain(aliceToken);
    expect(readText(stack.brokerLogPath)).not.toContain(aliceToken);
  });

  it('the database inside a connection is addressed as <connection>/<database>; another one is refused', async () => {
    const ok = await psql('app-pg/app', aliceToken, 'select current_database()');
    expect(ok.stderr).toBe('');
    expect(ok.stdout.trim()).toBe('app');
    const other = await psql('app-pg/postgres', aliceToken, 'select 1');
    expect(other.code).not.toBe(0);
    expect(other.stderr).toContain('serves database "app", not "postgres"');
  });

  it('pgbench -S through the front door completes with 0 failed transactions', async () => {
    const run = await runProcess(PGBENCH, ['-S', '-n', '-c', '4', '-j', '2', '-T', '3', `host=127.0.0.1 port=${pgPort} dbname=app-pg user=bench sslmode=disable`], {
      PATH: process.env.PATH, PGPASSWORD: aliceToken,
    }, undefined, 60_000);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/number of failed transactions: 0 /);
    expect(Number(/number of transactions actually processed: (\d+)/.exec(run.stdout)?.[1])).toBeGreaterThan(0);
  }, 60_000);

  it('psql\'s Ctrl-C cancels the running statement; the cancel is recorded in that session, not as one of its own', async () => {
    const sql = 'select pg_sleep(600) as front_door_ctrl_c';
    const before = new Set((await sessions()).map((s) => s.id));
    // psql sends the CancelRequest to the front door itself, on a new connection with no token.
    const { code, stderr } = await interruptPsql(PSQL, [conninfo('app-pg'), '-X'], { PATH: process.env.PATH, PGPASSWORD: aliceToken }, stack.cluster.url(), sql);
    expect(code).not.toBe(0);
    expect(stderr).toContain('canceling statement due to user request');
    expect(await isQueryActive(stack.cluster.url(), sql)).toBe(false);
    const added = (await sessions()).filter((s) => !before.has(s.id));
    expect(added).toHaveLength(1);
    const replay = await runCli(['replay', added[0]!.id], alice);
    expect(replay.stdout).toMatch(/✗ cancelled .*57014/);
    expect(replay.stdout).toMatch(/cancel +requested with the key alone \(front door: no token\) from 127\.0\.0\.1:\d+ through the PostgreSQL front door: the server was asked to stop the running statement/);
    // A cancel with a key no session holds: an audit event, and still no session.
    const bogus = Buffer.alloc(16);
    bogus.writeInt32BE(16, 0);
    bogus.writeInt32BE(80877102, 4);
    bogus.writeInt32BE(4242, 8);
    bogus.writeInt32BE(-1, 12);
    const s = connect(pgPort, '127.0.0.1');
    s.on('error', () => undefined);
    s.write(bogus);
    await once(s, 'close');
    let unmatched = (await auditEvents('cancel-request-unmatched')).filter((e) => e.data.via === 'pg-front-door');
    for (let i = 0; unmatched.length === 0 && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 100));
      unmatched = (await auditEvents('cancel-request-unmatched')).filter((e) => e.data.via === 'pg-front-door');
    }
    expect(unmatched[0]?.data).toMatchObject({ via: 'pg-front-door', clientAddr: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
    expect((await sessions()).filter((x) => !before.has(x.id))).toHaveLength(1);
  });

  it('a connection with `pool` lends one logged-in backend to successive sessions; without it each gets its own', async () => {
    const admin = new pg.Client({ connectionString: stack.cluster.url() });
    await admin.connect();
    const pids = async (dbname: string, pooled: boolean) => {
      const out: string[] = [];
      for (let i = 0; i < 3; i++) {
        const r = await psql(dbname, aliceToken, 'select pg_backend_pid()');
        expect(r.stderr).toBe('');
        out.push(r.stdout.trim());
        // psql exits once it sent Terminate: the next session waits until the broker has reset the backend it gave back.
        for (let n = 0; pooled && (await admin.query("select 1 from pg_stat_activity where pid = $1 and state = 'idle' and query = 'DISCARD ALL'", [Number(out[i])])).rows.length === 0; n++) {
          if (n > 1500) throw new Error(`backend ${out[i]} was not reset for reuse`);
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      return out;
    };
    try {
      expect(new Set(await pids('app-pg', false)).size).toBe(3);
      expect(new Set(await pids('app-pg-pooled', true)).size).toBe(1);
    } finally {
      await admin.end();
    }
    const mine = (await sessions()).filter((s) => s.connection === 'app-pg-pooled' && s.status === 'closed');
    expect(mine).toHaveLength(3);
    const replays = await mapLimit(mine, 4, async (s) => (await runCli(['replay', s.id, '-o', 'json'], alice)).stdout);
    expect(replays.filter((r) => /"reused":\s*true/.test(r))).toHaveLength(2);
  });

  it('a pooled connection through `hoopctl connect` lends its backend to the next tunnelled session, reset', async () => {
    const before = new Set((await sessions()).map((s) => s.id));
    const tunnel = await startConnectTunnel('app-pg-pooled', alice);
    const admin = new pg.Client({ connectionString: stack.cluster.url() });
    await admin.connect();
    try {
      const pids: number[] = [];
      for (let i = 0; i < 2; i++) {
        const client = new pg.Client(tunnel.pgClientConfig('app'));
        await client.connect();
        const r = await client.query<{ pid: number; app: string; scratch: string | null }>(
          "select pg_backend_pid() as pid, current_setting('application_name') as app, to_regclass('pg_temp.scratch')::text as scratch",
        );
        pids.push(r.rows[0]!.pid);
        // Nothing of the session before it on the same backend.
        expect(r.rows[0]!.scratch).toBeNull();
        expect(r.rows[0]!.app).not.toBe('left-behind');
        // Session state that must not reach the next session.
        await client.query("set application_name = 'left-behind'");
        await client.query('create temp table scratch (x int)');
        await client.end();
        // The next session waits until the broker has reset the backend it gave back.
        for (let n = 0; i === 0 && (await admin.query("select 1 from pg_stat_activity where pid = $1 and state = 'idle' and query = 'DISCARD ALL'", [pids[0]])).rows.length === 0; n++) {
          if (n > 1500) throw new Error(`backend ${pids[0]} was not reset for reuse`);
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      expect(pids[1]).toBe(pids[0]);
    } finally {
      await admin.end();
      await tunnel.stop();
    }
    const mine = (await sessions()).filter((s) => !before.has(s.id) && s.connection === 'app-pg-pooled');
    expect(mine).toHaveLength(2);
    const replays = await mapLimit(mine, 2, async (s) => (await runCli(['replay', s.id, '-o', 'json'], alice)).stdout);
    expect(replays.filter((r) => /"reused":\s*true/.test(r))).toHaveLength(1);
  });

  it('the pg driver, simple and extended protocol (parameters), with masking', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: pgPort, database: 'app-pg', user: 'node', password: aliceToken, ssl: false });
    await client.connect();
    try {
      const simple = await client.query('select id, email from customers order by id');
      expect(simple.rows).toEqual([{ id: 1, email: '[REDACTED]' }, { id: 2, email: '[REDACTED]' }]);
      const extended = await client.query('select $1::int + 1 as next, name, email from customers where id = $1', [2]);
      expect(extended.rows).toEqual([{ next: 3, name: 'Ada', email: '[REDACTED]' }]);
      await expect(client.query('truncate customers')).rejects.toThrow(/schema changes go through migrations/);
      // The session goes on after a refusal.
      expect((await client.query({ text: 'select $1::text as t', values: ['still here'] })).rows).toEqual([{ t: 'still here' }]);
    } finally {
      await client.end();
    }
  });

  it('refuses a malformed token and an expired one (signed by the issuer\'s own key): 28P01, and a token-rejected audit event', async () => {
    const before = (await auditEvents('token-rejected')).filter((e) => e.data.path === 'postgres-front-door').length;
    const bad = await psql('app-pg', 'not-a-token', 'select 1');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('FATAL:  hoopctl: access token is not a JWT');
    expect(bad.stderr).toContain('HINT:  the password is an OIDC access token');
    const now = Math.floor(Date.now() / 1000);
    const expired = await new SignJWT({ iss: stack.issuer.issuer, aud: AUDIENCE, sub: 'alice', iat: now - 7200, exp: now - 3600, client_id: stack.issuer.cliClientId, groups: ['dba'] })
      .setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: stack.issuer.kid })
      .sign(await importJWK(stack.issuer.signingKey, 'RS256'));
    const old = await psql('app-pg', expired, 'select 1');
    expect(old.code).not.toBe(0);
    expect(old.stderr).toMatch(/FATAL: {2}hoopctl: access token expired at \d{4}-/);
    const empty = await runProcess(PSQL, [conninfo('app-pg'), '-X', '-w', '-c', 'select 1'], { PATH: process.env.PATH });
    expect(empty.code).not.toBe(0);
    const events = (await auditEvents('token-rejected')).filter((e) => e.data.path === 'postgres-front-door');
    expect(events.length).toBeGreaterThanOrEqual(before + 2);
    expect(events.map((e) => e.data.code)).toContain('TOKEN_EXPIRED');
    const text = JSON.stringify(events);
    expect(text).not.toContain(expired);
    expect(readText(stack.brokerLogPath)).not.toContain(expired);
  });

  it('refuses an unknown connection (3D000) and a connection without access (42501), each recorded as a refused session', async () => {
    const unknown = await psql('no-such-db', aliceToken, 'select 1');
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain('FATAL:  hoopctl: connection no-such-db not found');
    const denied = await psql('app-pg', malloryToken, 'select 1');
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toContain('FATAL:  hoopctl: identity mallory (groups: contractors) may not open connection app-pg');
    const noAccess = await psql('other-pg', aliceToken, 'select 1');
    expect(noAccess.stderr).toContain('FATAL:  hoopctl: identity alice (groups: dba, auditors) may not open connection other-pg');
    const refused = (await sessions()).filter((s) => s.status === 'refused');
    expect(refused.some((s) => s.connection === 'no-such-db' && s.identity.subject === 'alice')).toBe(true);
    expect(refused.some((s) => s.connection === 'app-pg' && s.identity.subject === 'mallory')).toBe(true);
    expect(refused.some((s) => s.connection === 'other-pg' && s.identity.subject === 'alice')).toBe(true);
    // The broker is still serving after every refusal.
    expect((await psql('app-pg', aliceToken, 'select 41 + 1')).stdout.trim()).toBe('42');
  });

  it('with server.tls the front door speaks TLS with the broker\'s certificate (psql verify-full, pg with a CA) and refuses plain clients', async () => {
    const pki = makeTestPki({ cas: ['ca'], server: { name: 'broker', ca: 'ca' } });
    const [apiPort, tlsPgPort] = [await freePort(), await freePort()];
    const config = parse(readFileSync(stack.configPath, 'utf8')) as Record<string, Record<string, unknown>>;
    const path = join(stack.dir, 'tls-broker.yaml');
    writeFileSync(path, stringify({
      ...config,
      server: { listen: `127.0.0.1:${apiPort}`, tls: pki.paths('broker') },
      store: { path: join(stack.dir, 'tls-broker.db') },
      postgres: { listen: `127.0.0.1:${tlsPgPort}` },
    }));
    const broker = await spawnBroker(path, join(stack.dir, 'tls-broker.log'));
    try {
      const ca = pki.paths('ca').cert;
      const verified = await runProcess(PSQL, [`host=127.0.0.1 port=${tlsPgPort} dbname=app-pg user=x sslmode=verify-full sslrootcert=${ca}`, '-X', '-A', '-t', '-c', 'select email from customers where id = 1'], {
        PATH: process.env.PATH, PGPASSWORD: aliceToken,
      });
      expect(verified.stderr).toBe('');
      expect(verified.stdout.trim()).toBe('[REDACTED]');
      const plain = await runProcess(PSQL, [`host=127.0.0.1 port=${tlsPgPort} dbname=app-pg user=x sslmode=disable`, '-X', '-c', 'select 1'], { PATH: process.env.PATH, PGPASSWORD: aliceToken });
      expect(plain.code).not.toBe(0);
      expect(plain.stderr).toContain('FATAL:  the hoopctl PostgreSQL front door requires TLS: the access token is sent as the password');
      const client = new pg.Client({ host: '127.0.0.1', port: tlsPgPort, database: 'app-pg', user: 'node', password: aliceToken, ssl: { ca: readFileSync(ca, 'utf8') } });
      await client.connect();
      try {
        expect((await client.query('select $1::int * 2 as n', [21])).rows).toEqual([{ n: 42 }]);
      } finally {
        await client.end();
      }
    } finally {
      const exited = once(broker, 'exit');
      broker.kill('SIGTERM');
      await exited;
    }
  });

  it('bad bytes get a PostgreSQL error or a closed connection, never a broker crash', async () => {
    /** Sends `bytes` (then ends, when asked) and returns what the front door answered before it closed. */
    const exchange = (bytes: Buffer, end: boolean) =>
      new Promise<string>((resolvePromise) => {
        const s = connect(pgPort, '127.0.0.1');
        const got: Buffer[] = [];
        s.on('data', (d) => got.push(d));
        s.on('error', () => undefined);
        s.on('close', () => resolvePromise(Buffer.concat(got).toString('latin1')));
        if (end) s.end(bytes);
        else s.write(bytes);
      });
    const startup = (params: Record<string, string>) => {
      const body = Buffer.concat([Buffer.from([0, 3, 0, 0]), ...Object.entries(params).map(([k, v]) => Buffer.from(`${k}\0${v}\0`)), Buffer.from([0])]);
      const len = Buffer.alloc(4);
      len.writeInt32BE(body.length + 4);
      return Buffer.concat([len, body]);
    };
    expect(await exchange(Buffer.from('GET / HTTP/1.1\r\nhost: x\r\n\r\n'), false)).toContain('invalid startup packet length');
    // An SSLRequest answered 'N' on the plain loopback listener, then half a packet and the end.
    expect(await exchange(Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f, 0, 0, 0]), true)).toBe('N');
    // A query where the password belongs: refused, nothing run.
    const query = Buffer.from('Q\0\0\0\rselect 1\0');
    const answer = await exchange(Buffer.concat([startup({ user: 'x', database: 'app-pg' }), query]), false);
    expect(answer).toContain('expected a password message');
    // A password message that claims to be huge.
    expect(await exchange(Buffer.concat([startup({ user: 'x', database: 'app-pg' }), Buffer.from([0x70, 0x7f, 0xff, 0xff, 0xff])]), false)).toContain('invalid password message length');
    expect((await psql('app-pg', aliceToken, 'select 1')).stdout.trim()).toBe('1');
  });

  it('broker check refuses a front door on a non-loopback address without TLS, naming the field', async () => {
    const path = join(stack.dir, 'open-front-door.yaml');
    writeFileSync(path, stringify({
      server: { listen: '127.0.0.1:0' },
      store: { path: join(stack.dir, 'check.db') },
      auth: { issuers: [{ issuer: stack.issuer.issuer, audience: AUDIENCE }] },
      postgres: { listen: '0.0.0.0:5432' },
    }));
    const check = await runCli(['broker', 'check', '--config', path], stack.cliEnv());
    expect(check.code).not.toBe(0);
    expect(check.stderr).toContain('postgres.listen: the PostgreSQL front door on non-loopback address 0.0.0.0');
    expect(check.stderr).toContain('server.tls');
  });
});
