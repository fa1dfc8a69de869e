import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as netConnect } from 'node:net';
import pg from 'pg';
import { parse, stringify } from 'yaml';
import { CliProcess, loginAs, mapLimit, readText, runCli, runProcess, startStack, type Stack } from '../support/stack.js';
import { makeTestPki } from '../support/pki.js';

/**
 * What a client's startup asks for, with real clients through `hoopctl connect` as a process: the database named
 * in the URL is served or refused (never silently swapped for another), a connection listing several databases
 * routes to the one asked for, and clients whose URL says sslmode=require get TLS from the local listener.
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;
const tunnels: CliProcess[] = [];
let appPort: number;
let multiPort: number;
let appTunnel: CliProcess;

/** Environment for libpq clients: nothing from this machine's PG* variables or ~/.postgresql. */
/** Each tunnel's password, by port: the pgpass file libpq clients read (any user name, as the tests use several). */
const passwords = new Map<number, string>();
let appSocketDir: string;
const libpqEnv = () => ({ PATH: process.env.PATH, HOME: stack.dir, PGCONNECT_TIMEOUT: '10', PGPASSFILE: join(stack.dir, 'tunnels.pgpass') });

async function openTunnel(connection: string): Promise<{ port: number; tunnel: CliProcess; socketDir: string }> {
  const tunnel = new CliProcess(['connect', connection], alice);
  tunnels.push(tunnel);
  const [, port] = await tunnel.waitFor(/listening on 127\.0\.0\.1:(\d+)/);
  const [, password] = await tunnel.waitFor(/url: postgresql:\/\/hoopctl:([^@]+)@/);
  const [, socketDir] = await tunnel.waitFor(/over the Unix socket \(no password\): psql "host=(\S+) /);
  await tunnel.waitFor(/Press Ctrl-C/);
  passwords.set(Number(port), decodeURIComponent(password!));
  writeFileSync(join(stack.dir, 'tunnels.pgpass'), [...passwords].map(([p, pw]) => `127.0.0.1:${p}:*:*:${pw}\n`).join(''), { mode: 0o600 });
  return { port: Number(port), tunnel, socketDir: socketDir! };
}

async function admin<T>(database: string, run: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: stack.cluster.url(database) });
  await c.connect();
  try {
    return await run(c);
  } finally {
    await c.end();
  }
}

const psql = (url: string, args: string[], input?: string) => runProcess('psql', ['-X', '-w', '-At', ...args, url], libpqEnv(), input);

/** Resolves once `pattern` appears on the process's stderr. */
function stderrOf(p: CliProcess, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!pattern.test(p.stderr)) return;
      clearTimeout(timer);
      p.child.stderr!.off('data', check);
      resolve(p.stderr);
    };
    const timer = setTimeout(() => reject(new Error(`no ${pattern} on stderr: ${p.stderr}`)), 20_000);
    p.child.stderr!.on('data', check);
    check();
  });
}

beforeAll(async () => {
  stack = await startStack({ extraConnections: [{ name: 'multi-pg' }] });
  await admin('postgres', async (c) => {
    await c.query('CREATE DATABASE scratch OWNER app_rw');
    await c.query('CREATE DATABASE otherdb OWNER app_rw');
  });
  await admin('app', async (c) => {
    await c.query('SET ROLE app_rw');
    await c.query('CREATE TABLE orders (id int primary key, item text)');
    await c.query("INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 25) g");
  });
  // `target.databases` arrives by a config reload (SIGHUP), as an operator would add it to a running broker.
  const doc = parse(readFileSync(stack.configPath, 'utf8')) as { connections: Array<{ name: string; target: Record<string, unknown> }> };
  doc.connections.find((c) => c.name === 'multi-pg')!.target.databases = ['app', 'scratch'];
  writeFileSync(stack.configPath, stringify(doc));
  const before = readText(stack.brokerLogPath).length;
  stack.broker.kill('SIGHUP');
  for (let i = 0; i < 200 && !/config reloaded/.test(readText(stack.brokerLogPath).slice(before)); i++) await new Promise((r) => setTimeout(r, 50));
  expect(readText(stack.brokerLogPath).slice(before)).toMatch(/config reloaded/);

  alice = await loginAs(stack, 'alice');
  ({ port: appPort, tunnel: appTunnel, socketDir: appSocketDir } = await openTunnel('app-pg'));
  ({ port: multiPort } = await openTunnel('multi-pg'));
}, 120_000);

afterAll(async () => {
  for (const t of tunnels) await t.stop().catch(() => undefined);
  await stack?.stop();
});

describe('database routing', () => {
  it('refuses psql asking for another database, naming the one the connection serves, and runs nothing anywhere', async () => {
    const r = await psql(`postgresql://someuser@127.0.0.1:${appPort}/otherdb`, ['-c', 'create table leaked (id int)']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('connection "app-pg" serves database "app", not "otherdb"; ask for it (or leave dbname out)');
    for (const db of ['app', 'otherdb']) {
      expect(await admin(db, async (c) => (await c.query("select to_regclass('public.leaked') as t")).rows[0].t)).toBeNull();
    }
  });

  it('takes a URL with the served database, or none at all (libpq then sends the user name), to that database', async () => {
    for (const url of [`postgresql://someuser@127.0.0.1:${appPort}/app`, `postgresql://127.0.0.1:${appPort}`, `postgresql://someuser@127.0.0.1:${appPort}`]) {
      const r = await psql(url, ['-c', 'select current_database(), current_user']);
      expect(r.stderr, url).toBe('');
      expect(r.stdout.trim(), url).toBe('app|app_rw');
    }
  });

  it('routes pg_dump …/app | psql …/scratch on a connection serving both: the data lands in scratch, app is unchanged', async () => {
    const dump = await runProcess('pg_dump', ['-w', '--no-owner', `postgresql://someuser@127.0.0.1:${multiPort}/app`], libpqEnv());
    expect(dump.code, dump.stderr).toBe(0);
    expect(dump.stdout).toContain('CREATE TABLE public.orders');
    const restore = await runProcess('psql', ['-X', '-w', '-v', 'ON_ERROR_STOP=1', '-q', `postgresql://someuser@127.0.0.1:${multiPort}/scratch`], libpqEnv(), dump.stdout);
    expect(restore.code, restore.stderr).toBe(0);
    expect(await admin('scratch', async (c) => (await c.query('select count(*)::int as n from orders')).rows[0].n)).toBe(25);
    expect(await admin('app', async (c) => (await c.query('select count(*)::int as n from orders')).rows[0].n)).toBe(25);
    const other = await psql(`postgresql://someuser@127.0.0.1:${multiPort}/otherdb`, ['-c', 'select 1']);
    expect(other.stderr).toContain('connection "multi-pg" serves databases "app", "scratch", not "otherdb"; ask for one of them (or leave dbname out for "app")');
  });

  it('hoopctl exec --database runs in a database the connection serves, and is refused one it does not', async () => {
    const inScratch = await runCli(['exec', 'multi-pg', '--database', 'scratch', '-e', 'select current_database()', '-o', 'csv'], alice);
    expect(inScratch.code, inScratch.stderr).toBe(0);
    expect(inScratch.stdout).toContain('scratch');
    const byDefault = await runCli(['exec', 'multi-pg', '-e', 'select current_database()', '-o', 'csv'], alice);
    expect(byDefault.stdout).toContain('app');
    const refused = await runCli(['exec', 'multi-pg', '--database', 'otherdb', '-e', 'select 1'], alice);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('not "otherdb"');
  });

  it('records what the client asked for, refusals included, and replay shows it', async () => {
    const sessions = JSON.parse((await runCli(['sessions', '-o', 'json', '-n', '200'], alice)).stdout) as Array<{ id: string; status: string; connection: string }>;
    const transcripts = (await mapLimit(sessions, 4, (s) => runCli(['replay', s.id], alice))).map((t) => t.stdout);
    const refused = transcripts.filter((t) => /startup\s+asked for user "someuser", database "otherdb"\n.*✗ connection "app-pg" serves database "app", not "otherdb"/.test(t));
    // psql's default sslmode=prefer tries once more without TLS after a FATAL: one refusal per attempt.
    expect(refused.length).toBeGreaterThan(0);
    for (const t of refused) expect(t).not.toContain('create table leaked');
    expect(sessions.filter((s) => s.status === 'refused' && s.connection === 'app-pg')).toHaveLength(refused.length);
    const routed = transcripts.filter((t) => /startup\s+asked for user "someuser", database "scratch" → database "scratch"/.test(t));
    expect(routed).toHaveLength(1);
    expect(routed[0]).toMatch(/connected\s+PostgreSQL .* as app_rw\/scratch/);
  });
});

describe('TLS from the client (sslmode)', () => {
  it('serves psql with sslmode=require over TLS on the loopback hop', async () => {
    const r = await psql(`postgresql://someuser@127.0.0.1:${appPort}/app?sslmode=require`, ['-c', 'select current_database()', '-c', '\\conninfo']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('app\n');
    expect(r.stdout).toMatch(/SSL connection \(protocol: TLSv1\.[23]/);
  });

  it('serves node-pg with ssl and rejectUnauthorized: false', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: appPort, user: 'x', database: 'app', password: passwords.get(appPort), ssl: { rejectUnauthorized: false } });
    await client.connect();
    try {
      expect((await client.query('select count(*)::int as n from orders')).rows).toEqual([{ n: 25 }]);
      expect((client as unknown as { connection: { stream: { encrypted?: boolean } } }).connection.stream.encrypted).toBe(true);
    } finally {
      await client.end();
    }
  });

  it('says why sslmode=verify-full cannot work against the local listener', async () => {
    // What `hoopctl connect` prints up front.
    expect(appTunnel.stdout).toContain('verify-ca/verify-full cannot verify it');
    expect(appTunnel.stdout).toContain("the broker's TLS to the database is set on the broker (target.sslmode)");
    // With a root certificate libpq does the handshake, rejects the listener's certificate, and the listener says why.
    const pki = makeTestPki({ cas: ['unrelated-ca'] });
    const r = await psql(`postgresql://someuser@127.0.0.1:${appPort}/app?sslmode=verify-full&sslrootcert=${pki.paths('unrelated-ca').cert}`, ['-c', 'select 1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('certificate verify failed');
    const said = await stderrOf(appTunnel, /cannot verify the local listener/);
    expect(said).toMatch(/TLS handshake with the client failed .*sslmode=verify-ca and verify-full cannot verify the local listener.*target\.sslmode/);
  });

  it('answers GSSENCRequest with N, and the client then starts in plain', async () => {
    const reply = await new Promise<Buffer>((resolve, reject) => {
      // The Unix socket asks for no password: the raw bytes below are the whole conversation.
      const sock = netConnect(join(appSocketDir, `.s.PGSQL.${appPort}`));
      let got = Buffer.alloc(0);
      let started = false;
      sock.on('error', reject);
      sock.on('data', (d) => {
        got = Buffer.concat([got, d]);
        if (!started && got[0] === 0x4e) {
          started = true;
          const params = Buffer.from('user\0x\0database\0app\0\0');
          const startup = Buffer.alloc(8);
          startup.writeInt32BE(8 + params.length, 0);
          startup.writeInt32BE(196608, 4);
          sock.write(Buffer.concat([startup, params]));
        }
        if (got.includes(Buffer.from([0x5a, 0, 0, 0, 5]))) {
          sock.destroy();
          resolve(got);
        }
      });
      const gssenc = Buffer.alloc(8);
      gssenc.writeInt32BE(8, 0);
      gssenc.writeInt32BE(80877104, 4);
      sock.write(gssenc);
    });
    expect(reply[0]).toBe(0x4e);
    expect(reply[1]).toBe(0x52); // AuthenticationOk follows: the session started
  });

  it('leaves the broker answering SSLRequest with N for raw tunnel clients (they settled encryption locally)', async () => {
    const { WebSocket } = await import('ws');
    const dir = join(alice.XDG_CONFIG_HOME!, 'hoopctl');
    const stored = readFileSync(join(dir, readdirSync(dir).find((f) => f.startsWith('credentials'))!), 'utf8');
    const token = JSON.stringify(JSON.parse(stored)).match(/"accessToken":"([^"]+)"/)![1]!;
    const ws = new WebSocket(`${stack.brokerUrl.replace('http', 'ws')}/api/v1/tunnel/app-pg`, { headers: { authorization: `Bearer ${token}` } });
    await new Promise((r) => ws.once('open', r));
    const answer = new Promise<Buffer>((r) => ws.once('message', (d: Buffer) => r(d)));
    const ssl = Buffer.alloc(8);
    ssl.writeInt32BE(8, 0);
    ssl.writeInt32BE(80877103, 4);
    ws.send(ssl);
    expect((await answer).toString('latin1')).toBe('N');
    ws.close();
  });
});
