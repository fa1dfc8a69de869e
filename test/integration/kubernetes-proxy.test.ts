import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFakeKubeApiServer, type FakeKubeApiServer } from '../support/fake-kube-apiserver.js';
import { startTunnelHarness, type TunnelHarness } from '../support/http-backend.js';
import { kubernetesConnectionSchema, resolveWebConnection } from '../../src/broker/protocols/http/config.js';
import { writeKubeconfig } from '../../src/tunnel/kubeconfig.js';
import type { HoldOutcome, HoldRequest, StatementReviews } from '../../src/broker/protocols/protocol.js';

const KUBECTL = '/usr/bin/kubectl';
const TOKEN = 'kube-broker-token-9c1e';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

let api: FakeKubeApiServer;
/** What "pod port 8080" is: a small HTTP server kubectl port-forward reaches through the gate. */
let podHttp: Server;
let gate: TunnelHarness;
let dir: string;
let kubeconfig: string;

/** The review machinery's interface, played by the test: each hold is answered by `next`. */
const reviews = new (class implements StatementReviews {
  held: HoldRequest[] = [];
  next: (r: HoldRequest) => HoldOutcome = () => ({ approved: false, message: 'no decision scripted' });
  async hold(request: HoldRequest): Promise<HoldOutcome> {
    this.held.push(request);
    await new Promise((r) => setTimeout(r, 100));
    return this.next(request);
  }
})();

function kubectl(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      KUBECTL,
      ['--request-timeout=20s', ...args],
      { env: { PATH: process.env.PATH, HOME: dir, KUBECONFIG: kubeconfig }, encoding: 'utf8', timeout: 40_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

beforeAll(async () => {
  expect(existsSync(KUBECTL), `kubectl is expected at ${KUBECTL} (kubectl 1.32 from the cloud SDK packaging)`).toBe(true);
  dir = mkdtempSync(join(tmpdir(), 'hoop-kube-it-'));
  podHttp = createServer((req, res) => res.end(`hello from the pod, you asked for ${req.url}\n`));
  await new Promise<void>((r) => podHttp.listen(0, '127.0.0.1', r));
  api = await startFakeKubeApiServer({ token: TOKEN, portForward: { 8080: (podHttp.address() as AddressInfo).port } });
  const raw = kubernetesConnectionSchema.parse({
    name: 'k8s-test',
    type: 'kubernetes',
    target: { url: api.url },
    credentials: { bearer: { value: TOKEN } },
    access: { groups: ['sre'] },
    defaultAction: 'deny',
    rules: [
      { name: 'read-only', match: { verb: ['get', 'list', 'watch'] }, action: 'allow' },
      { name: 'keep-namespaces', match: { verb: 'delete', resource: 'namespaces' }, action: 'deny', message: 'namespaces are deleted by the platform team' },
      { name: 'exec-needs-approval', match: { verb: 'create', resource: 'pods/exec' }, action: 'review' },
      { name: 'port-forward-needs-approval', match: { verb: 'create', resource: 'pods/portforward' }, action: 'review' },
    ],
  });
  const connection = resolveWebConnection(raw, (s) => ({ reveal: () => ('value' in s ? s.value : '') }));
  gate = await startTunnelHarness({ connection, reviews, identity: { subject: 'sam', kind: 'human', groups: ['sre'] } });
  const written = writeKubeconfig({ path: join(dir, 'hoopctl', 'k8s-test.yaml'), server: gate.url, contextName: 'hoopctl-k8s-test' });
  kubeconfig = written.path;
  expect(written.hint).toBe(`KUBECONFIG=${kubeconfig} kubectl get pods`);
});

afterAll(async () => {
  await gate?.close();
  await api?.close();
  podHttp?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('kubeconfig', () => {
  it('is hoopctl’s own file: the local listener, no credentials, mode 0600', () => {
    const text = readFileSync(kubeconfig, 'utf8');
    expect(text).toContain(`server: ${gate.url}`);
    expect(text).toContain('current-context: hoopctl-k8s-test');
    expect(text).not.toMatch(/token|client-key|password/);
    expect(statSync(kubeconfig).mode & 0o777).toBe(0o600);
  });
});

describe('kubectl through the gate', () => {
  it('gets pods (allowed by the read-only rule) with the broker’s token injected', async () => {
    const r = await kubectl(['get', 'pods', '-n', 'default']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^NAME\s/);
    expect(r.stdout).toContain('web');
    expect(r.stdout).toContain('worker');
    const list = api.seen.find((s) => s.url.startsWith('/api/v1/namespaces/default/pods'));
    expect(list?.headers.authorization).toBe(`Bearer ${TOKEN}`);
    const ev = gate.events.find((e) => e.type === 'request' && e.data.path === '/api/v1/namespaces/default/pods');
    expect(ev?.data).toMatchObject({ method: 'GET', status: 200, verdict: 'allow', rule: 'read-only', kube: { verb: 'list', resource: 'pods', namespace: 'default' } });
  });

  it('denies deleting a namespace; kubectl prints the rule’s message and the API server never sees the DELETE', async () => {
    const r = await kubectl(['delete', 'namespace', 'prod']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('Error from server (Forbidden): hoopctl: denied by rule "keep-namespaces": namespaces are deleted by the platform team');
    expect(api.deleted).toEqual([]);
    expect(api.seen.some((s) => s.method === 'DELETE')).toBe(false);
  });

  it('denies what no rule allows (defaultAction: deny)', async () => {
    const r = await kubectl(['delete', 'pod', 'web', '-n', 'default']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('Forbidden');
    expect(r.stderr).toContain('no rule allows it (defaultAction: deny)');
  });

  it('holds exec for review: rejected → kubectl shows the reviewer’s reason, nothing runs', async () => {
    reviews.next = () => ({ approved: false, reviewId: 'rev_k1', message: 'hoopctl: review rev_k1 rejected by olga: use the runbook' });
    const before = api.seen.length;
    const r = await kubectl(['exec', 'web', '-n', 'default', '--', 'echo', 'hi']);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('review rev_k1 rejected by olga: use the runbook');
    // kubectl falls back to SPDY after the refused WebSocket: that attempt gets the same answer, not a second hold.
    const attempts = gate.events.filter((e) => e.type === 'request' && String(e.data.path).endsWith('/exec')).map((e) => [e.data.method, e.data.upgrade, e.data.status]);
    expect(attempts).toEqual([['GET', 'websocket', 403], ['POST', 'spdy/3.1', 403]]);
    expect(reviews.held).toHaveLength(1);
    expect(reviews.held.at(-1)).toMatchObject({ rule: 'exec-needs-approval' });
    expect(reviews.held.at(-1)?.statement).toMatch(/^GET \/api\/v1\/namespaces\/default\/pods\/web\/exec\?.*command=echo&command=hi/);
    expect(api.seen.slice(before).some((s) => s.url.includes('/exec'))).toBe(false);
  });

  it('holds exec for review: approved → the command runs, output reaches kubectl, the stream is recorded', async () => {
    const held = reviews.held.length;
    reviews.next = () => ({ approved: true, reviewId: 'rev_k2', message: 'approved' });
    const r = await kubectl(['exec', 'web', '-n', 'default', '--', 'echo', 'hi']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('hi\n');
    expect(reviews.held.length).toBe(held + 1);
    const exec = api.seen.find((s) => s.url.includes('/exec'));
    expect(exec?.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(exec?.headers['sec-websocket-protocol']).toContain('v5.channel.k8s.io');
    const upgradeRecorded = () => gate.events.find((e) => e.type === 'request' && String(e.data.path).endsWith('/exec') && e.data.status === 101);
    // The upgrade's own event is recorded once the exec stream is over, a moment after its exit status.
    for (let i = 0; i < 1500 && (!gate.events.some((e) => e.type === 'exec-exit') || !upgradeRecorded()); i++) await new Promise((res) => setTimeout(res, 20));
    const terminal = gate.events.find((e) => e.type === 'terminal');
    expect(terminal?.data).toMatchObject({ version: 2, command: 'echo hi' });
    const casts = gate.events.filter((e) => e.type === 'cast' && e.sessionId === terminal?.sessionId);
    const output = casts.flatMap((e) => e.data.events as Array<[number, string, string]>).filter((x) => x[1] === 'o').map((x) => x[2]).join('');
    expect(output).toBe('hi\n');
    expect(gate.events.find((e) => e.type === 'exec-exit')?.data).toMatchObject({ status: 'Success', exitCode: 0 });
    expect(upgradeRecorded()?.data).toMatchObject({ verdict: 'review', review: 'rev_k2', protocol: 'v5.channel.k8s.io', kube: { verb: 'create', resource: 'pods', subresource: 'exec', name: 'web' } });
  });

  it('records a failing command’s exit code', async () => {
    reviews.next = () => ({ approved: true, reviewId: 'rev_k3', message: 'approved' });
    const before = gate.events.length;
    const r = await kubectl(['exec', 'web', '-n', 'default', '--', 'fail']);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('it failed');
    for (let i = 0; i < 1500 && !gate.events.slice(before).some((e) => e.type === 'exec-exit'); i++) await new Promise((res) => setTimeout(res, 20));
    expect(gate.events.slice(before).find((e) => e.type === 'exec-exit')?.data).toMatchObject({ status: 'Failure', exitCode: 3 });
  });
});

/** `kubectl port-forward` as a running process: resolves the local port of each pod port once kubectl prints it. */
function portForward(args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
  const child = spawn(KUBECTL, ['port-forward', ...args], { env: { PATH: process.env.PATH, HOME: dir, KUBECONFIG: kubeconfig, ...extraEnv } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    exited,
    async localPort(podPort: number): Promise<number | undefined> {
      const re = new RegExp(`Forwarding from 127\\.0\\.0\\.1:(\\d+) -> ${podPort}`);
      for (let i = 0; i < 600 && child.exitCode === null && !re.test(stdout); i++) await new Promise((r) => setTimeout(r, 50));
      const m = re.exec(stdout);
      return m ? Number(m[1]) : undefined;
    },
    stop: () => child.kill(),
  };
}

function curl(url: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '10', url], { encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
  });
}

describe('kubectl port-forward through the gate', () => {
  it('is held for review; once approved, connections reach the pod port and each one is recorded with its port and bytes', async () => {
    reviews.next = () => ({ approved: true, reviewId: 'rev_pf1', message: 'approved' });
    const held = reviews.held.length;
    const pf = portForward(['-n', 'default', 'pod/web', ':8080', ':9999']);
    try {
      const port = await pf.localPort(8080);
      expect(port, pf.stderr).toBeDefined();
      expect(reviews.held.slice(held)).toEqual([expect.objectContaining({ rule: 'port-forward-needs-approval', statement: 'GET /api/v1/namespaces/default/pods/web/portforward' })]);
      const first = await curl(`http://127.0.0.1:${port}/first`);
      const second = await curl(`http://127.0.0.1:${port}/second`);
      expect([first.stdout, second.stdout]).toEqual(['hello from the pod, you asked for /first\n', 'hello from the pod, you asked for /second\n']);
      // 9999 is a port the pod does not listen on: the kubelet's error comes back on the error stream.
      const closed = await curl(`http://127.0.0.1:${await pf.localPort(9999)}/`);
      expect(closed.code).not.toBe(0);
    } finally {
      pf.stop();
      await pf.exited;
    }
    const forwards = () => gate.events.filter((e) => e.type === 'port-forward').map((e) => e.data);
    const upgradeRecorded = () => gate.events.find((e) => e.type === 'request' && String(e.data.path).endsWith('/portforward') && e.data.status === 101);
    // The upgrade's own event is recorded once it is over, a moment after the last forwarded connection closed.
    for (let i = 0; i < 1500 && (forwards().filter((d) => d.action === 'close').length < 3 || !upgradeRecorded()); i++) await new Promise((r) => setTimeout(r, 20));
    const opens = forwards().filter((d) => d.action === 'open');
    expect(opens).toEqual([
      { action: 'open', port: 8080, requestId: '0', namespace: 'default', pod: 'web' },
      { action: 'open', port: 8080, requestId: '1', namespace: 'default', pod: 'web' },
      { action: 'open', port: 9999, requestId: '2', namespace: 'default', pod: 'web' },
    ]);
    const closes = forwards().filter((d) => d.action === 'close');
    const http = closes.filter((d) => d.port === 8080);
    expect(http).toHaveLength(2);
    for (const c of http) {
      expect(c.bytesToPod).toBeGreaterThan(70); // curl's request
      expect(c.bytesFromPod).toBeGreaterThan(100); // the response, headers and body
      expect(c.error).toBeUndefined();
    }
    expect(closes.find((d) => d.port === 9999)).toMatchObject({ bytesFromPod: 0, error: expect.stringContaining('error forwarding port 9999') });
    expect(upgradeRecorded()?.data).toMatchObject({ verdict: 'review', review: 'rev_pf1', protocol: 'SPDY/3.1+portforward.k8s.io', kube: { verb: 'create', subresource: 'portforward', name: 'web' } });
    expect(api.seen.find((s) => s.url.endsWith('/portforward'))?.headers.authorization).toBe(`Bearer ${TOKEN}`);
  });

  it('is refused when the review is rejected: kubectl shows the reason and no stream reaches the API server', async () => {
    reviews.next = () => ({ approved: false, reviewId: 'rev_pf2', message: 'hoopctl: review rev_pf2 rejected by olga: not during the freeze' });
    const before = api.seen.length;
    const pf = portForward(['-n', 'default', 'pod/worker', ':8080']);
    const code = await pf.exited;
    expect(code).not.toBe(0);
    expect(pf.stderr).toContain('review rev_pf2 rejected by olga: not during the freeze');
    expect(api.seen.slice(before).some((s) => s.url.endsWith('/portforward'))).toBe(false);
  });

  it('forwards over plain SPDY too (KUBECTL_PORT_FORWARD_WEBSOCKETS=false, older kubectl), held and recorded the same way', async () => {
    reviews.next = () => ({ approved: true, reviewId: 'rev_pf3', message: 'approved' });
    const held = reviews.held.length;
    const before = gate.events.length;
    const pf = portForward(['-n', 'default', 'pod/web', ':8080'], { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' });
    try {
      const port = await pf.localPort(8080);
      expect(port, pf.stderr).toBeDefined();
      expect(reviews.held.length, 'one hold, for the SPDY request').toBe(held + 1);
      expect((await curl(`http://127.0.0.1:${port}/over-spdy`)).stdout).toBe('hello from the pod, you asked for /over-spdy\n');
    } finally {
      pf.stop();
      await pf.exited;
    }
    const mine = () => gate.events.slice(before);
    const done = () => mine().some((e) => e.type === 'port-forward' && e.data.action === 'close') && mine().some((e) => e.type === 'request' && e.data.status === 101);
    for (let i = 0; i < 1500 && !done(); i++) await new Promise((r) => setTimeout(r, 20));
    expect(mine().find((e) => e.type === 'port-forward' && e.data.action === 'close')?.data).toMatchObject({ port: 8080, bytesToPod: expect.any(Number), bytesFromPod: expect.any(Number) });
    const req = mine().find((e) => e.type === 'request' && String(e.data.path).endsWith('/portforward') && e.data.status === 101);
    expect(req?.data).toMatchObject({ upgrade: 'spdy/3.1', protocol: 'SPDY/3.1+portforward.k8s.io', verdict: 'review', review: 'rev_pf3' });
    expect(api.seen.filter((s) => s.url.endsWith('/portforward')).at(-1)?.headers.authorization).toBe(`Bearer ${TOKEN}`);
  });

  it('refuses exec over plain SPDY (KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false), which it does not read, and says how to get through', async () => {
    const held = reviews.held.length;
    const spdy = await new Promise<Run>((resolve) => {
      execFile(KUBECTL, ['--request-timeout=20s', 'exec', 'worker', '-n', 'default', '--', 'echo', 'hi'], {
        env: { PATH: process.env.PATH, HOME: dir, KUBECONFIG: kubeconfig, KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'false' }, encoding: 'utf8', timeout: 40_000,
      }, (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }));
    });
    expect(spdy.code).not.toBe(0);
    expect(spdy.stderr).toContain('do not set KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false');
    expect(reviews.held.length, 'nothing is put to a reviewer for a stream that would be refused anyway').toBe(held);
  });
});
