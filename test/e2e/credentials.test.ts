import { chmodSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APP_PASSWORD, CliProcess, loginAs, readText, runCli, runProcess, startStack, type Stack } from '../support/stack.js';
import { startSshd, type TestSshd } from '../../src/dev/sshd.js';
import { runSsh, sshOptions } from '../support/ssh-proxy-harness.js';

/**
 * Issue 18, on one stack: credential helpers, rotation of static credentials, and per-session PostgreSQL roles.
 *
 * A connection's password printed by a credential helper (as `vault kv get -field=password` would): a helper that
 * works lets sessions in and is not run again within `cacheFor`; one that fails, hangs or prints nothing refuses the
 * session with a clear reason, recorded, and its stderr stays in the broker log. (First: rotation changes the
 * password the helper prints.)
 *
 * Rotation of a postgres connection's password, with the real broker, PostgreSQL, psql, pg and the CLI as
 * processes. After `hoopctl broker rotate` the old password no longer logs in directly and the one in the secret file
 * does; a session open across the rotation keeps working; new sessions use the new password; the audit stream says
 * when and by whom. `rotateEvery` does the same on its own.
 *
 * Per-session PostgreSQL roles (`credentials.dynamic`, connection pg-dyn): each session logs in as a role made for it
 * (member of the grant roles, so PostgreSQL itself refuses what they may not do), named after the session; it is
 * dropped when the session ends, and a role a killed broker left behind is dropped by the next start.
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;
let bob: NodeJS.ProcessEnv;
let sshd: TestSshd;
let keys: string;
let helpers: string;
const STDERR_MARK = 'vault: permission denied for token hvs.NOT-FOR-CLIENTS';
const SCHED_PASSWORD = `sched-${Math.random().toString(36).slice(2, 10)}`;
const ADMIN_PASSWORD = `admin-${Math.random().toString(36).slice(2, 10)}`;

const direct = (user: string, password: string) =>
  runProcess('psql', ['-X', '-w', '-At', '-h', stack.cluster.host, '-p', String(stack.cluster.port), '-U', user, '-d', 'app', '-c', 'select current_user'], {
    PATH: process.env.PATH,
    PGPASSWORD: password,
  });

interface AuditEvent {
  type: string;
  at: number;
  data: Record<string, unknown>;
}

async function rotations(): Promise<AuditEvent[]> {
  const r = await runCli(['audit', 'events', '--type', 'credential.rotated', '-o', 'json'], alice);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as AuditEvent[];
}

const script = (name: string, body: string) => {
  const path = join(helpers, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
};

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
  helpers = mkdtempSync(join(tmpdir(), 'hoop-helpers-'));
  const runs = join(helpers, 'runs');
  const ok = script('vault-ok', `echo run >> ${runs}; printf '%s\\n' '${APP_PASSWORD}'`);
  const fails = script('vault-fails', `echo '${STDERR_MARK}' >&2; exit 2`);
  const hangs = script('vault-hangs', 'exec sleep 600');
  const empty = script('vault-empty', 'echo "no secret at that path" >&2');
  const helped = (name: string, password: Record<string, unknown>) => ({ name, credentials: { user: 'app_rw', password } });
  keys = mkdtempSync(join(tmpdir(), 'hoop-dyn-'));
  writeFileSync(join(keys, 'admin-password'), `${ADMIN_PASSWORD}\n`, { mode: 0o600 });
  const schedFile = join('/tmp', `hoop-sched-${process.pid}-${Date.now()}`);
  writeFileSync(schedFile, `${SCHED_PASSWORD}\n`, { mode: 0o600 });
  // Written two hours ago: with rotateEvery 1h the broker's schedule finds it due at start, and then not for an hour.
  utimesSync(schedFile, new Date(Date.now() - 7_200_000), new Date(Date.now() - 7_200_000));
  sshd = await startSshd();
  stack = await startStack({
    extraConnections: [
      helped('pg-helper', { command: [ok, 'secret/data/app', '--field=password'], cacheFor: '10m' }),
      helped('pg-helper-fails', { command: [fails] }),
      helped('pg-helper-hangs', { command: [hangs], timeout: '1s' }),
      helped('pg-helper-empty', { command: [empty] }),
      { name: 'pg-sched', credentials: { user: 'sched_user', password: { file: schedFile }, rotateEvery: '1h' } },
      {
        name: 'ssh-rot', type: 'ssh',
        target: { host: sshd.host, port: sshd.port, user: sshd.user, hostKey: sshd.hostPublicKey },
        credentials: { privateKey: { file: sshd.clientKeyPath }, authorizedKeys: join(sshd.dir, 'authorized_keys') },
        access: { groups: ['dba'] },
      },
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
    // The roles exist before the broker starts: sched_user's schedule finds the file due at start and rotates it.
    beforeBroker: async (cluster) => {
      const admin = new pg.Client({ connectionString: cluster.url('app') });
      await admin.connect();
      await admin.query(`CREATE ROLE sched_user LOGIN PASSWORD '${SCHED_PASSWORD}'`);
      await admin.query(`CREATE ROLE hoop_admin LOGIN CREATEROLE PASSWORD '${ADMIN_PASSWORD}'`);
      await admin.query('GRANT pg_signal_backend TO hoop_admin');
      await admin.query('CREATE ROLE app_reader NOLOGIN');
      await admin.query('CREATE ROLE app_writer NOLOGIN');
      await admin.query('CREATE TABLE customers (id int primary key, name text)');
      await admin.query("INSERT INTO customers VALUES (1, 'Ada')");
      await admin.query('GRANT SELECT ON customers TO app_reader');
      await admin.query('GRANT SELECT, INSERT ON customers TO app_writer');
      await admin.end();
    },
  });
  alice = await loginAs(stack, 'alice');
  bob = await loginAs(stack, 'bob');
}, 120_000);

afterAll(async () => {
  await stack?.stop();
  await sshd?.stop();
  if (keys) rmSync(keys, { recursive: true, force: true });
  if (helpers) rmSync(helpers, { recursive: true, force: true });
});

/** OpenSSH straight to the sshd (not through the broker) with one key file. */
const directSsh = (keyFile: string) =>
  runSsh(['-F', '/dev/null', '-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-p', String(sshd.port), `${sshd.user}@${sshd.host}`, 'echo direct']);

describe('credential helpers', () => {
  it('the password a helper prints opens sessions, and within cacheFor the helper is not run again', async () => {
    for (let i = 0; i < 2; i++) {
      const r = await runCli(['exec', 'pg-helper', '-o', 'json', '-e', 'select current_user as who'], alice);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)[0].rows).toEqual([{ who: 'app_rw' }]);
    }
    expect(readFileSync(join(helpers, 'runs'), 'utf8').trim().split('\n')).toEqual(['run']);
  });

  it.each([
    ['pg-helper-fails', 'the credential helper exited with status 2'],
    ['pg-helper-hangs', 'the credential helper did not finish within 1000 ms'],
    ['pg-helper-empty', 'the credential helper printed nothing'],
  ])('%s refuses the session with the reason, recorded; the helper\'s stderr reaches only the broker log', async (name, reason) => {
    const r = await runCli(['exec', name, '-e', 'select 1'], alice);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`the broker could not get the credential of "${name}" (credentials.password): ${reason}`);
    expect(r.stderr).not.toContain('vault:');
    expect(r.stderr).not.toContain('no secret at that path');
    const list = await runCli(['sessions', '-o', 'json', '--connection', name], alice);
    const [session] = JSON.parse(list.stdout) as Array<{ id: string; status: string }>;
    expect(session!.status).toBe('refused');
    const replay = await runCli(['replay', session!.id, '-o', 'json'], alice);
    expect(replay.stdout).toContain(reason);
    expect(replay.stdout).not.toContain('vault:');
  });

  it('psql through the tunnel prints the refusal as a FATAL', async () => {
    const connect = new CliProcess(['connect', 'pg-helper-fails', '--port', '0'], alice);
    try {
      const [, encoded, port] = await connect.waitFor(/postgresql:\/\/[^:\s]+:([^@\s]+)@127\.0\.0\.1:(\d+)\//);
      const psql = await runProcess('psql', ['-X', '-h', '127.0.0.1', '-p', port!, '-U', 'x', '-d', 'app', '-c', 'select 1'], {
        PATH: process.env.PATH, PGCONNECT_TIMEOUT: '30', PGPASSWORD: decodeURIComponent(encoded!),
      });
      expect(psql.code).not.toBe(0);
      expect(psql.stderr).toMatch(/FATAL: {2}hoopctl: the broker could not get the credential of "pg-helper-fails" \(credentials\.password\): the credential helper exited with status 2/);
      expect(psql.stderr).not.toContain('vault:');
    } finally {
      await connect.stop();
    }
  });

  it('the broker log has the helper\'s stderr, trimmed, and never the password', () => {
    const log = readText(stack.brokerLogPath);
    expect(log).toContain(STDERR_MARK);
    expect(log).toContain('no secret at that path');
    expect(log).not.toContain(APP_PASSWORD);
  });
});

describe('hoopctl broker rotate (postgres)', () => {
  it('sets a new password: the old one no longer logs in, the file\'s does, an open session goes on, new ones use it', async () => {
    const passwordFile = join(stack.dir, 'app-password');
    const connect = new CliProcess(['connect', 'app-pg', '--port', '0'], alice);
    // The tunnel's own password (printed in its URL) opens it; the backend credential stays with the broker.
    const [, encoded, port] = await connect.waitFor(/postgresql:\/\/[^:\s]+:([^@\s]+)@127\.0\.0\.1:(\d+)\//);
    const tunnelPassword = decodeURIComponent(encoded!);
    const open = new pg.Client({ host: '127.0.0.1', port: Number(port), user: 'whoever', database: 'app', password: tunnelPassword });
    try {
      await open.connect();
      expect((await open.query('select 1 as one')).rows).toEqual([{ one: 1 }]);

      const r = await runCli(['broker', 'rotate', 'app-pg'], bob);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(`app-pg: credential rotated (new password for app_rw, written to ${passwordFile})`);
      const fresh = readFileSync(passwordFile, 'utf8').trim();
      expect(fresh).not.toBe(APP_PASSWORD);
      expect(r.stdout + r.stderr).not.toContain(fresh);

      const old = await direct('app_rw', APP_PASSWORD);
      expect(old.code).not.toBe(0);
      expect(old.stderr).toContain('password authentication failed');
      const now = await direct('app_rw', fresh);
      expect(now.code, now.stderr).toBe(0);

      // The session open across the rotation keeps working; a new one logs in with the new password.
      expect((await open.query("select 'still here' as s")).rows).toEqual([{ s: 'still here' }]);
      const psql = await runProcess('psql', ['-X', '-w', '-At', '-h', '127.0.0.1', '-p', port!, '-U', 'whoever', '-d', 'app', '-c', 'select current_user'], { PATH: process.env.PATH, PGPASSWORD: tunnelPassword });
      expect(psql.code, psql.stderr).toBe(0);
      expect(psql.stdout.trim()).toBe('app_rw');

      const events = (await rotations()).filter((e) => e.data.connection === 'app-pg');
      expect(events).toHaveLength(1);
      expect(events[0]!.data).toMatchObject({ connection: 'app-pg', type: 'postgres', user: 'app_rw', by: 'bob', file: passwordFile });
      expect(JSON.stringify(events)).not.toContain(fresh);
      const text = await runCli(['audit', 'events', '--type', 'credential.rotated'], alice);
      expect(text.stdout).toMatch(/credential\.rotated +app-pg {2}by bob/);
    } finally {
      await open.end().catch(() => undefined);
      await connect.stop();
    }
  });

  it('only admins may rotate; a refusal changes nothing', async () => {
    const before = readFileSync(join(stack.dir, 'app-password'), 'utf8');
    const r = await runCli(['broker', 'rotate', 'app-pg'], alice);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('only members of the admin groups may rotate credentials');
    expect(readFileSync(join(stack.dir, 'app-password'), 'utf8')).toBe(before);
    const denied = await runCli(['audit', 'events', '--type', 'access-denied', '-o', 'json'], alice);
    expect((JSON.parse(denied.stdout) as AuditEvent[]).map((e) => e.data)).toEqual([
      expect.objectContaining({ route: 'rotateCredentials', path: '/api/v1/connections/app-pg/rotate', subject: 'alice', reason: 'only members of the admin groups may rotate credentials' }),
    ]);
  });

  it('rotateEvery rotates on its own once the secret file is older than that', async () => {
    await expect.poll(async () => (await rotations()).filter((e) => e.data.connection === 'pg-sched').length, { timeout: 60_000 }).toBe(1);
    const [event] = (await rotations()).filter((e) => e.data.connection === 'pg-sched');
    expect(event!.data).toMatchObject({ by: 'schedule', user: 'sched_user' });
    const file = String(event!.data.file);
    const fresh = readFileSync(file, 'utf8').trim();
    expect(fresh).not.toBe(SCHED_PASSWORD);
    expect((await direct('sched_user', SCHED_PASSWORD)).code).not.toBe(0);
    expect((await direct('sched_user', fresh)).code).toBe(0);
    const through = await runCli(['exec', 'pg-sched', '-o', 'json', '-e', 'select current_user as who'], alice);
    expect(through.code, through.stderr).toBe(0);
    expect(JSON.parse(through.stdout)[0].rows).toEqual([{ who: 'sched_user' }]);
  });
});

describe('hoopctl broker rotate (ssh)', () => {
  it('installs a new key through the old one and removes the old one; an open ssh session goes on; new ones use the new key', async () => {
    const oldKey = join(stack.dir, 'old-broker-key');
    writeFileSync(oldKey, sshd.clientPrivateKey, { mode: 0o600 });
    expect((await directSsh(oldKey)).code).toBe(0);
    const tunnel = new CliProcess(['connect', 'ssh-rot', '-o', 'json'], alice);
    const ready = JSON.parse((await tunnel.waitFor(/\{.*\}\n/))[0]!) as { port: number; hostKey: string; identityFile: string };
    const knownHosts = join(stack.dir, 'known_hosts_rot');
    writeFileSync(knownHosts, `[127.0.0.1]:${ready.port} ${ready.hostKey}\n`);
    const ssh = ['-p', String(ready.port), '-i', ready.identityFile, '-o', 'IdentitiesOnly=yes', ...sshOptions(knownHosts), `${sshd.user}@127.0.0.1`];
    const open = new CliProcess([...ssh, 'read a; echo "first $a"; read b; echo "second $b"'], process.env, 'ssh');
    try {
      open.child.stdin!.write('one\n');
      await open.waitFor(/first one/);

      const r = await runCli(['broker', 'rotate', 'ssh-rot'], bob);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^ssh-rot: credential rotated \(new key SHA256:\S+, written to /);

      // The session open across the rotation goes on.
      open.child.stdin!.write('two\n');
      await open.waitFor(/second two/);
      // The old key no longer logs in to the backend; the one now in the broker's key file does.
      const old = await directSsh(oldKey);
      expect(old.code).toBe(255);
      expect(old.stderr).toContain('Permission denied');
      const now = await directSsh(sshd.clientKeyPath);
      expect(now.stdout.trim(), now.stderr).toBe('direct');
      expect(readFileSync(sshd.clientKeyPath, 'utf8')).not.toBe(sshd.clientPrivateKey);
      const keys = readFileSync(join(sshd.dir, 'authorized_keys'), 'utf8').split('\n').filter((l) => l.trim());
      expect(keys).toHaveLength(1);
      // A new session through the broker logs in with the new key.
      const fresh = await runSsh([...ssh, 'echo fresh']);
      expect(fresh.code, fresh.stderr).toBe(0);
      expect(fresh.stdout.trim()).toBe('fresh');

      const [event] = (await rotations()).filter((e) => e.data.connection === 'ssh-rot');
      expect(event!.data).toMatchObject({ type: 'ssh', by: 'bob', user: sshd.user, file: sshd.clientKeyPath });
      expect(String(event!.data.fingerprint)).toMatch(/^SHA256:/);
      expect(event!.data.fingerprint).not.toBe(event!.data.previous);
    } finally {
      open.child.stdin!.end();
      await open.exit().catch(() => undefined);
      await tunnel.stop();
    }
  });
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
