import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionRow, StoredEvent } from '../../src/api/session.js';
import { startSshd, type TestSshd } from '../../src/dev/sshd.js';
import { freePort } from '../../src/lib/net.js';
import { startFakeKubeApiServer, type FakeKubeApiServer } from '../support/fake-kube-apiserver.js';
import { startHttpBackend, type HttpBackend } from '../support/http-backend.js';
import { CliProcess, loginAs, runCli, runProcess, startStack, type CliResult, type Stack } from '../support/stack.js';

/**
 * A tunnel serves only the person who opened it. Alice (root here) runs `hoopctl connect` as a process; a second OS
 * user (`nobody`, through runuser) points real psql, curl, kubectl, ssh and redis-cli at her listener and is turned
 * away on every type, the connect process says so, and the broker records each refusal. Alice herself still gets
 * through (the per-tunnel password, the Unix socket); `--insecure-shared-port` lets nobody in again and warns.
 */
let stack: Stack;
let backend: HttpBackend;
let kube: FakeKubeApiServer;
let sshd: TestSshd;
let redis: ChildProcess;
let alice: NodeJS.ProcessEnv;
/** A directory `nobody` may read and write: its own files (kubeconfig, kubectl cache, ssh known_hosts). */
let shared: string;
const procs: CliProcess[] = [];

const nobodyEnv = () => ({ PATH: process.env.PATH, HOME: shared });
const asNobody = (cmd: string, args: string[]): Promise<CliResult> => runProcess('runuser', ['-u', 'nobody', '--', cmd, ...args], nobodyEnv());

async function connect(name: string, ...extra: string[]): Promise<{ proc: CliProcess; ready: Record<string, any> }> {
  const proc = new CliProcess(['connect', name, '-o', 'json', ...extra], alice);
  procs.push(proc);
  return { proc, ready: JSON.parse((await proc.waitFor(/\{.*\}\n/))[0]!) };
}

/** Polls until `probe` gives a value: the refusal reaches the broker a moment after the client was turned away. */
async function eventually<T>(probe: () => Promise<T | undefined>, what: string): Promise<T> {
  for (let i = 0; i < 600; i++) {
    const v = await probe();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Waits for a line on the connect process's stderr. */
async function stderrOf(proc: CliProcess, pattern: RegExp): Promise<string> {
  return eventually(async () => proc.stderr.match(pattern)?.[0], `${pattern} on stderr; it has: ${proc.stderr}`);
}

/** The refused session the broker recorded for a local peer of `connection`, and its reason. */
async function recordedRefusal(connection: string, pattern: RegExp): Promise<string> {
  return eventually(async () => {
    const list = JSON.parse((await runCli(['sessions', '--connection', connection, '--status', 'refused', '-o', 'json'], alice)).stdout) as SessionRow[];
    for (const s of list) {
      const { events } = JSON.parse((await runCli(['replay', s.id, '-o', 'json'], alice)).stdout) as { events: StoredEvent[] };
      const reason = String(events.find((e) => e.type === 'access-denied')?.data.reason ?? '');
      if (pattern.test(reason)) return reason;
    }
    return undefined;
  }, `a refused session on ${connection} matching ${pattern}`);
}

async function auditEvents(): Promise<StoredEvent[]> {
  return JSON.parse((await runCli(['audit', 'events', '-o', 'json'], alice)).stdout) as StoredEvent[];
}

beforeAll(async () => {
  shared = mkdtempSync(join(tmpdir(), 'hoop-nobody-'));
  chmodSync(shared, 0o777);
  backend = await startHttpBackend();
  kube = await startFakeKubeApiServer({ token: 'kube-token-of-the-broker' });
  sshd = await startSshd();
  const redisPort = await freePort();
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    redis.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('Ready to accept connections')) resolve();
    });
    redis.once('exit', (code) => reject(new Error(`redis-server exited ${code}: ${out}`)));
  });
  stack = await startStack({
    extraConnections: [
      { name: 'api', type: 'http', target: { url: backend.url }, credentials: { bearer: { value: 'api-token-of-the-broker' } } },
      { name: 'k8s', type: 'kubernetes', target: { url: kube.url }, credentials: { bearer: { value: 'kube-token-of-the-broker' } } },
      {
        name: 'ssh-host', type: 'ssh', target: { host: sshd.host, port: sshd.port, user: sshd.user, hostKey: sshd.hostPublicKey },
        credentials: { privateKey: { file: sshd.clientKeyPath } },
      },
      { name: 'cache', type: 'tcp', target: { host: '127.0.0.1', port: redisPort }, credentials: undefined },
    ],
  });
  alice = await loginAs(stack, 'alice');
}, 120_000);

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop().catch(() => undefined)));
  await stack?.stop();
  await backend?.close();
  await kube?.close();
  await sshd?.stop();
  redis?.kill();
  if (shared) rmSync(shared, { recursive: true, force: true });
});

describe('postgres tunnel', () => {
  it("refuses another OS user's psql, records it, and lets its owner in with the tunnel's password or the Unix socket", async () => {
    const { proc, ready } = await connect('app-pg');
    // The printed URL carries the tunnel's password; without it the listener asks and refuses.
    expect(ready.url).toMatch(/^postgresql:\/\/hoopctl:[\w-]{32}@127\.0\.0\.1:\d+\/app\?sslmode=disable$/);

    const other = await asNobody('psql', [ready.url, '-Atc', 'select current_user']);
    expect(other.code).not.toBe(0);
    expect(other.stderr).toContain('belongs to OS user 65534');
    await stderrOf(proc, /local connection from 127\.0\.0\.1:\d+ \(OS user 65534\) refused/);
    expect(await recordedRefusal('app-pg', /OS user 65534/)).toMatch(/local tunnel refused 127\.0\.0\.1:\d+ \(OS user 65534\)/);
    const audit = await eventually(async () => (await auditEvents()).find((e) => e.type === 'tunnel-peer-refused' && e.data.connection === 'app-pg'), 'the audit event');
    expect(audit.data).toMatchObject({ uid: 65534, subject: expect.any(String) });

    const owner = await runProcess('psql', [ready.url, '-Atc', 'select current_user'], alice);
    expect(owner.stderr).toBe('');
    expect(owner.stdout.trim()).toBe('app_rw');
    const socket = await runProcess('psql', ['-h', ready.socketDir, '-p', String(ready.port), '-U', 'hoopctl', '-d', 'app', '-Atc', 'select 2'], alice);
    expect(socket.stdout.trim()).toBe('2');
    expect(statSync(ready.socketDir).mode & 0o777).toBe(0o700);
    // The service file names a 0600 pgpass file: no password on the command line.
    expect(statSync(ready.passfile).mode & 0o777).toBe(0o600);
    const service = await runProcess('psql', [`service=${ready.service}`, '-Atc', 'select 3'], { ...alice, PGSERVICEFILE: ready.serviceFile });
    expect(service.stdout.trim()).toBe('3');
  });

  it('refuses its owner without the password, says why, and records it', async () => {
    const { ready } = await connect('app-pg');
    const wrong = ready.url.replace(/hoopctl:[\w-]+@/, 'hoopctl:guessed@');
    const r = await runProcess('psql', [wrong, '-Atc', 'select 1'], alice);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('wrong or no password for this tunnel');
    expect(await recordedRefusal('app-pg', /wrong or no password/)).toMatch(/local tunnel refused 127\.0\.0\.1:\d+: wrong or no password/);
  });

  it('--insecure-shared-port lets another OS user through, and warns', async () => {
    const { proc, ready } = await connect('app-pg', '--insecure-shared-port');
    expect(proc.stderr).toMatch(/warning: --insecure-shared-port: any local user or process/);
    expect(ready.url).toMatch(/^postgresql:\/\/hoopctl@127\.0\.0\.1/);
    const other = await asNobody('psql', [ready.url, '-Atc', 'select current_user']);
    expect(other.stdout.trim()).toBe('app_rw');
  });
});

describe('other connection types', () => {
  it("http: refuses another OS user and a request without the tunnel's bearer, records both; the bearer never leaves the machine", async () => {
    const { proc, ready } = await connect('api');
    const bearer = ['-H', `Authorization: Bearer ${ready.bearer}`];
    const other = await asNobody('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', ...bearer, `${ready.url}/users`]);
    expect(other.code).not.toBe(0);
    expect(other.stdout).not.toBe('200');
    await stderrOf(proc, /\(OS user 65534\) refused/);
    await recordedRefusal('api', /OS user 65534/);

    const none = await runProcess('curl', ['-sS', '-w', '\n%{http_code}', `${ready.url}/users`], alice);
    expect(none.stdout).toMatch(/wrong or no bearer for this tunnel[\s\S]*\n401$/);
    await recordedRefusal('api', /wrong or no bearer/);

    const owner = await runProcess('curl', ['-sS', '-o', '/dev/null', '-o', '/dev/null', '-w', '%{http_code}', ...bearer, `${ready.url}/users`, `${ready.url}/users?again`], alice);
    expect(owner.stdout).toBe('200200');
    const socket = await runProcess('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--unix-socket', ready.socketPath, 'http://localhost/users'], alice);
    expect(socket.stdout).toBe('200');
    expect(JSON.stringify(backend.seen)).not.toContain(ready.bearer);
  });

  it('kubernetes: refuses kubectl of another OS user, records it; the owner gets through', async () => {
    const { proc, ready } = await connect('k8s');
    // Even with a copy of the owner's kubeconfig (its bearer and certificate), another OS user is refused.
    const theirs = join(shared, 'kubeconfig');
    writeFileSync(theirs, readFileSync(ready.kubeconfig, 'utf8'), { mode: 0o644 });
    // --raw: one request, no discovery (which kubectl retries on each failure).
    const other = await asNobody('kubectl', ['--kubeconfig', theirs, '--cache-dir', join(shared, 'kube-cache'), 'get', '--raw', '/api/v1/namespaces/default/pods']);
    expect(other.code).not.toBe(0);
    await stderrOf(proc, /\(OS user 65534\) refused/);
    await recordedRefusal('k8s', /OS user 65534/);
    const owner = await runProcess('kubectl', ['get', 'pods', '-n', 'default'], { PATH: process.env.PATH, HOME: stack.dir, KUBECONFIG: ready.kubeconfig });
    expect(owner.code, owner.stderr).toBe(0);
    // The kubeconfig's token is the tunnel's bearer: taken out before the broker, which sends its own.
    expect(readFileSync(ready.kubeconfig, 'utf8')).toContain(`token: ${ready.bearer}`);
    expect(JSON.stringify(kube.seen)).not.toContain(ready.bearer);
    expect(kube.seen.at(-1)?.headers.authorization).toBe('Bearer kube-token-of-the-broker');
  });

  it("ssh: refuses ssh of another OS user and a client without the tunnel's key, records both; the owner gets through with it", async () => {
    const { proc, ready } = await connect('ssh-host');
    expect(statSync(ready.identityFile).mode & 0o777).toBe(0o600);
    expect(ready.ssh).toBe(`ssh -i ${ready.identityFile} -o IdentitiesOnly=yes -p ${ready.port} ${sshd.user}@127.0.0.1`);
    const knownHosts = join(shared, 'known_hosts');
    writeFileSync(knownHosts, `[127.0.0.1]:${ready.port} ${ready.hostKey}\n`, { mode: 0o644 });
    const opts = ['-F', '/dev/null', '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-p', String(ready.port)];
    // Even with a copy of the tunnel's key, another OS user is refused.
    const theirKey = join(shared, 'tunnel.key');
    writeFileSync(theirKey, readFileSync(ready.identityFile), { mode: 0o600 });
    chownSync(theirKey, 65534, 65534);
    const other = await asNobody('ssh', [...opts, '-i', theirKey, '-o', 'IdentitiesOnly=yes', `${sshd.user}@127.0.0.1`, 'echo in']);
    expect(other.code).toBe(255);
    expect(other.stdout).not.toContain('in');
    await stderrOf(proc, /\(OS user 65534\) refused/);
    await recordedRefusal('ssh-host', /OS user 65534/);

    const keyless = await runProcess('ssh', [...opts, `${sshd.user}@127.0.0.1`, 'echo in'], alice);
    expect(keyless.code).toBe(255);
    expect(keyless.stderr).toContain('Permission denied (publickey)');
    const owner = await runProcess('ssh', [...opts, '-i', ready.identityFile, '-o', 'IdentitiesOnly=yes', `${sshd.user}@127.0.0.1`, 'echo in'], alice);
    expect(owner.stdout.trim(), owner.stderr).toBe('in');
    // The keyless attempt is in its session's record.
    await eventually(async () => {
      const list = JSON.parse((await runCli(['sessions', '--connection', 'ssh-host', '-o', 'json'], alice)).stdout) as SessionRow[];
      for (const s of list) {
        const { events } = JSON.parse((await runCli(['replay', s.id, '-o', 'json'], alice)).stdout) as { events: StoredEvent[] };
        if (events.some((e) => e.type === 'client-auth-refused')) return true;
      }
      return undefined;
    }, 'the refused key in a session record');
  });

  it('tcp: refuses redis-cli of another OS user, records it; the owner gets through, also over the Unix socket', async () => {
    const { proc, ready } = await connect('cache');
    const other = await asNobody('redis-cli', ['-h', '127.0.0.1', '-p', String(ready.port), 'PING']);
    expect(other.stdout).not.toContain('PONG');
    await stderrOf(proc, /\(OS user 65534\) refused/);
    await recordedRefusal('cache', /OS user 65534/);
    expect((await runProcess('redis-cli', ['-h', '127.0.0.1', '-p', String(ready.port), 'PING'], alice)).stdout.trim()).toBe('PONG');
    expect((await runProcess('redis-cli', ['-s', ready.socketPath, 'PING'], alice)).stdout.trim()).toBe('PONG');
  });
});
