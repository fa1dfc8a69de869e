import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliProcess, loginAs, runCli, runProcess, startStack, type Stack } from '../support/stack.js';

/**
 * Issue 18: per-session PostgreSQL roles (`credentials.dynamic`), with the real broker, PostgreSQL, psql, pg and the
 * CLI as processes. Each session logs in as a role made for it (member of the grant roles, so PostgreSQL itself
 * refuses what they may not do), named after the session; it is dropped when the session ends, and a role a killed
 * broker left behind is dropped by the next start.
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;
let keys: string;
const ADMIN_PASSWORD = `admin-${Math.random().toString(36).slice(2, 10)}`;

async function superuser<T>(work: (c: pg.Client) => Promise<T>, database = 'app'): Promise<T> {
  const c = new pg.Client({ connectionString: stack.cluster.url(database) });
  await c.connect();
  try {
    return await work(c);
  } finally {
    await c.end();
  }
}

const sessionRoles = () =>
  superuser(async (c) => (await c.query<{ rolname: string }>("select rolname from pg_roles where rolname like 'hoopctl\\_%' order by 1")).rows.map((r) => r.rolname));

async function sessionsOf(env: NodeJS.ProcessEnv, extra: string[] = []): Promise<Array<{ id: string; status: string }>> {
  const r = await runCli(['sessions', '-o', 'json', '--connection', 'pg-dyn', ...extra], env);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Array<{ id: string; status: string }>;
}

async function eventTypes(env: NodeJS.ProcessEnv, id: string): Promise<Array<{ type: string; data: Record<string, unknown> }>> {
  const r = await runCli(['replay', id, '-o', 'json'], env);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { events: Array<{ type: string; data: Record<string, unknown> }> }).events;
}

/** A tunnel of `env`'s identity; its own password (printed in its URL) opens it. */
async function tunnel(env: NodeJS.ProcessEnv): Promise<{ connect: CliProcess; port: string; password: string }> {
  const connect = new CliProcess(['connect', 'pg-dyn', '--port', '0'], env);
  const [, encoded, port] = await connect.waitFor(/postgresql:\/\/[^:\s]+:([^@\s]+)@127\.0\.0\.1:(\d+)\//);
  return { connect, port: port!, password: decodeURIComponent(encoded!) };
}

const psql = (t: { port: string; password: string }, sql: string) =>
  runProcess('psql', ['-X', '-w', '-At', '-h', '127.0.0.1', '-p', t.port, '-U', 'whoever', '-d', 'app', '-c', sql], { PATH: process.env.PATH, PGCONNECT_TIMEOUT: '30', PGPASSWORD: t.password });

beforeAll(async () => {
  keys = mkdtempSync(join(tmpdir(), 'hoop-dyn-'));
  writeFileSync(join(keys, 'admin-password'), `${ADMIN_PASSWORD}\n`, { mode: 0o600 });
  stack = await startStack({
    extraConnections: [
      {
        name: 'pg-dyn',
        credentials: {
          user: 'hoop_admin',
          password: { file: join(keys, 'admin-password') },
          dynamic: { grantRoles: ['app_reader'], byGroup: [{ groups: ['leads'], grantRoles: ['app_writer'] }] },
        },
        access: { groups: ['dba'] },
      },
    ],
  });
  await superuser(async (c) => {
    await c.query(`CREATE ROLE hoop_admin LOGIN CREATEROLE PASSWORD '${ADMIN_PASSWORD}'`);
    await c.query('GRANT pg_signal_backend TO hoop_admin');
    await c.query('CREATE ROLE app_reader NOLOGIN');
    await c.query('CREATE ROLE app_writer NOLOGIN');
    await c.query('CREATE TABLE customers (id int primary key, name text)');
    await c.query("INSERT INTO customers VALUES (1, 'Ada')");
    await c.query('GRANT SELECT ON customers TO app_reader');
    await c.query('GRANT SELECT, INSERT ON customers TO app_writer');
  });
  alice = await loginAs(stack, 'alice');
}, 120_000);

afterAll(async () => {
  await stack?.stop();
  rmSync(keys, { recursive: true, force: true });
});

describe('per-session PostgreSQL roles', () => {
  it('a psql session runs as its own role with exactly the grant role\'s privileges; the role is gone after it', async () => {
    const t = await tunnel(alice);
    try {
      const who = await psql(t, "select current_user, pg_has_role(current_user, 'app_reader', 'member'), (select rolsuper or rolcreaterole from pg_roles where rolname = current_user)");
      expect(who.code, who.stderr).toBe(0);
      const [user, member, powerful] = who.stdout.trim().split('|');
      expect(user).toMatch(/^hoopctl_ses_[a-z0-9]+$/);
      expect([member, powerful]).toEqual(['t', 'f']);
      expect((await psql(t, 'select name from customers')).stdout.trim()).toBe('Ada');
      // The write reaches PostgreSQL (no rule here refuses it), and PostgreSQL refuses it: the grant role may only read.
      const write = await psql(t, "insert into customers values (2, 'Eve')");
      expect(write.code).not.toBe(0);
      expect(write.stderr).toContain('permission denied for table customers');
      expect(write.stderr).not.toContain('hoopctl');

      // Each psql run is a session of its own; the first one's role is named after it.
      const newest = (await sessionsOf(alice)).find((x) => `hoopctl_${x.id}` === user);
      expect(newest, `no session behind role ${user}`).toBeDefined();
      // Dropped once the session ended: its stream says so, and PostgreSQL no longer knows the role.
      await expect.poll(async () => (await eventTypes(alice, newest!.id)).map((e) => e.type), { timeout: 30_000 }).toContain('credential-dropped');
      const events = await eventTypes(alice, newest!.id);
      expect(events.find((e) => e.type === 'credential-created')!.data).toMatchObject({ role: user, grantRoles: ['app_reader'] });
      expect(events.find((e) => e.type === 'backend-connected')!.data).toMatchObject({ user });
      expect(JSON.stringify(events)).not.toMatch(/PASSWORD|SCRAM-SHA-256\$/);
      expect(await sessionRoles()).not.toContain(user);
      const replay = await runCli(['replay', newest!.id], alice);
      expect(replay.stdout).toMatch(new RegExp(`role {7}${user} created, in app_reader, valid until \\d{4}-`));
      expect(replay.stdout).toMatch(new RegExp(`role {7}${user} dropped`));
    } finally {
      await t.connect.stop();
    }
  });

  it('an identity in a byGroup group gets that entry\'s grant roles', async () => {
    const bob = await loginAs(stack, 'bob');
    const t = await tunnel(bob);
    try {
      const r = await psql(t, "insert into customers values (3, 'Bob') returning name");
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('Bob');
    } finally {
      await t.connect.stop();
    }
  });

  it('pg_stat_activity names the session while it runs; after kill -9 of the broker the next start drops the role, and no one else\'s', async () => {
    const t = await tunnel(alice);
    const client = new pg.Client({ host: '127.0.0.1', port: Number(t.port), user: 'whoever', database: 'app', password: t.password });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const { rows } = await client.query<{ who: string }>('select current_user as who');
      const role = rows[0]!.who;
      const [open] = await sessionsOf(alice, ['--status', 'open']);
      expect(role).toBe(`hoopctl_${open!.id}`);
      const seen = await superuser(async (c) =>
        (await c.query<{ usename: string; comment: string }>(
          "select a.usename, shobj_description(r.oid, 'pg_authid') as comment from pg_stat_activity a join pg_roles r on r.rolname = a.usename where a.usename = $1",
          [role],
        )).rows,
      );
      expect(seen).toEqual([{ usename: role, comment: `hoopctl session role: session=${open!.id} connection=pg-dyn` }]);
      // Someone else's role with the broker's prefix but not its mark: the sweep that drops the leftover must keep it.
      await superuser((c) => c.query("CREATE ROLE hoopctl_ses_someone_elses LOGIN; COMMENT ON ROLE hoopctl_ses_someone_elses IS 'made by hand'"));

      await stack.restartBroker('SIGKILL');
      await expect.poll(sessionRoles, { timeout: 60_000 }).not.toContain(role);
      expect(await sessionRoles()).toContain('hoopctl_ses_someone_elses');
      const audit = await runCli(['audit', 'events', '-o', 'json'], alice);
      expect(audit.stdout).toContain(role);
    } finally {
      await client.end().catch(() => undefined);
      await t.connect.stop();
    }
  });
});
