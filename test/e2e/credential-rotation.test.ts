import { readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APP_PASSWORD, CliProcess, loginAs, runCli, runProcess, startStack, type Stack } from '../support/stack.js';
import { startSshd, type TestSshd } from '../../src/dev/sshd.js';
import { runSsh, sshOptions } from '../support/ssh-proxy-harness.js';

/**
 * Issue 18: rotation of a postgres connection's password, with the real broker, PostgreSQL, psql, pg and the CLI as
 * processes. After `hoopctl broker rotate` the old password no longer logs in directly and the one in the secret file
 * does; a session open across the rotation keeps working; new sessions use the new password; the audit stream says
 * when and by whom. `rotateEvery` does the same on its own.
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;
let bob: NodeJS.ProcessEnv;
let sshd: TestSshd;
const SCHED_PASSWORD = `sched-${Math.random().toString(36).slice(2, 10)}`;

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

beforeAll(async () => {
  const schedFile = join('/tmp', `hoop-sched-${process.pid}-${Date.now()}`);
  writeFileSync(schedFile, `${SCHED_PASSWORD}\n`, { mode: 0o600 });
  // Written two hours ago: with rotateEvery 1h the broker's schedule finds it due at start, and then not for an hour.
  utimesSync(schedFile, new Date(Date.now() - 7_200_000), new Date(Date.now() - 7_200_000));
  sshd = await startSshd();
  stack = await startStack({
    extraConnections: [
      { name: 'pg-sched', credentials: { user: 'sched_user', password: { file: schedFile }, rotateEvery: '1h' } },
      {
        name: 'ssh-rot', type: 'ssh',
        target: { host: sshd.host, port: sshd.port, user: sshd.user, hostKey: sshd.hostPublicKey },
        credentials: { privateKey: { file: sshd.clientKeyPath }, authorizedKeys: join(sshd.dir, 'authorized_keys') },
        access: { groups: ['dba'] },
      },
    ],
    // The role exists before the broker starts: its schedule finds the file due at start and rotates it.
    beforeBroker: async (cluster) => {
      const admin = new pg.Client({ connectionString: cluster.url('app') });
      await admin.connect();
      await admin.query(`CREATE ROLE sched_user LOGIN PASSWORD '${SCHED_PASSWORD}'`);
      await admin.end();
    },
  });
  alice = await loginAs(stack, 'alice');
  bob = await loginAs(stack, 'bob');
}, 120_000);

afterAll(async () => {
  await stack?.stop();
  await sshd?.stop();
});

/** OpenSSH straight to the sshd (not through the broker) with one key file. */
const directSsh = (keyFile: string) =>
  runSsh(['-F', '/dev/null', '-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-p', String(sshd.port), `${sshd.user}@${sshd.host}`, 'echo direct']);

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
