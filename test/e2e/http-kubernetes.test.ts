import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { CliProcess, loginAs, mapLimit, runCli, runProcess, startStack, type Stack } from '../support/stack.js';
import { startHttpBackend, type HttpBackend } from '../support/http-backend.js';
import { startFakeKubeApiServer, type FakeKubeApiServer } from '../support/fake-kube-apiserver.js';
import { makeTestPki } from '../support/pki.js';
import type { Review } from '../../src/api/review.js';

/**
 * HTTP and Kubernetes through the whole gate: the broker process with both connection types, `hoopctl connect`
 * as a process (a local HTTP endpoint; a kubeconfig of hoopctl's own), real curl and real kubectl.
 */
const API_TOKEN = 'backend-api-token-never-on-the-client';
const KUBE_TOKEN = 'kube-sa-token-never-on-the-client';
let stack: Stack;
let backend: HttpBackend;
let tlsBackend: { url: string; close(): Promise<void> };
let tlsDir: string;
let kube: FakeKubeApiServer;
let alice: NodeJS.ProcessEnv;
let bob: NodeJS.ProcessEnv;
const procs: CliProcess[] = [];

/**
 * An HTTPS backend with a certificate from a CA made for the test (and a second, unrelated CA). It asks for a client
 * certificate (mutual TLS) and says whose it saw, if the CA signed it.
 */
async function startTlsBackend(): Promise<{ url: string; close(): Promise<void> }> {
  const { createServer } = await import('node:https');
  const pki = makeTestPki({ cas: ['ca', 'other-ca'], server: { name: 'server', ca: 'ca' }, clients: [{ name: 'broker-client', ca: 'ca', cn: 'hoopctl-broker' }] });
  tlsDir = pki.dir;
  const server = createServer({ ...pki.pem('server'), ca: readFileSync(`${pki.dir}/ca.pem`), requestCert: true, rejectUnauthorized: false }, (req, res) => {
    const socket = req.socket as import('node:tls').TLSSocket;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ over: 'tls', sawToken: req.headers.authorization === `Bearer ${API_TOKEN}`, client: socket.authorized ? socket.getPeerCertificate().subject?.CN : null }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return { url: `https://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}

beforeAll(async () => {
  backend = await startHttpBackend();
  tlsBackend = await startTlsBackend();
  kube = await startFakeKubeApiServer({ token: KUBE_TOKEN });
  stack = await startStack({
    extraConnections: [
      {
        name: 'api', type: 'http', target: { url: backend.url }, credentials: { bearer: { value: API_TOKEN } },
        access: { groups: ['dba'] }, reviews: { groups: ['leads'] },
        rules: [
          { name: 'no-admin', match: { path: '/admin/**' }, action: 'deny' },
          { name: 'writes-need-review', match: { method: ['POST', 'PUT', 'DELETE'] }, action: 'review' },
        ],
        mask: { jsonPaths: ['$.users[*].email'], detectors: ['credit_card'] },
      },
      {
        name: 'api-tls', type: 'http', target: { url: tlsBackend.url, tls: { ca: `${tlsDir}/ca.pem` } },
        credentials: { bearer: { value: API_TOKEN } }, access: { groups: ['dba'] },
      },
      {
        name: 'api-mtls', type: 'http',
        target: { url: tlsBackend.url, tls: { ca: `${tlsDir}/ca.pem`, clientCert: { cert: { file: `${tlsDir}/broker-client.pem` }, key: { file: `${tlsDir}/broker-client.key` } } } },
        credentials: { bearer: { value: API_TOKEN } }, access: { groups: ['dba'] },
      },
      {
        name: 'api-wrong-ca', type: 'http', target: { url: tlsBackend.url, tls: { ca: `${tlsDir}/other-ca.pem` } },
        credentials: { bearer: { value: API_TOKEN } }, access: { groups: ['dba'] },
      },
      {
        name: 'k8s', type: 'kubernetes', target: { url: kube.url }, credentials: { bearer: { value: KUBE_TOKEN } },
        access: { groups: ['dba'] }, reviews: { groups: ['leads'] }, defaultAction: 'deny',
        rules: [
          { name: 'read-only', match: { verb: ['get', 'list', 'watch'] }, action: 'allow' },
          { name: 'keep-namespaces', match: { verb: 'delete', resource: 'namespaces' }, action: 'deny' },
          { name: 'exec-needs-approval', match: { verb: 'create', resource: 'pods/exec' }, action: 'review' },
          { name: 'port-forward-needs-approval', match: { verb: 'create', resource: 'pods/portforward' }, action: 'review' },
        ],
        mask: { detectors: ['email'] },
      },
    ],
  });
  [alice, bob] = await Promise.all([loginAs(stack, 'alice'), loginAs(stack, 'bob')]);
  // The pod's port 5432 is the test's real PostgreSQL: psql → kubectl port-forward → the gate → the API server → it.
  kube.portForward[5432] = stack.cluster.port;
}, 120_000);

afterAll(async () => {
  for (const p of procs) await p.stop().catch(() => undefined);
  await stack?.stop();
  await backend?.close();
  await tlsBackend?.close();
  await kube?.close();
});

async function connect(name: string): Promise<Record<string, any>> {
  const p = new CliProcess(['connect', name, '-o', 'json'], alice);
  procs.push(p);
  return JSON.parse((await p.waitFor(/\{.*\}\n/))[0]!);
}

describe('http connection', () => {
  it('injects the credential, denies by rule, masks JSON, and never shows the client the backend token', async () => {
    const { url, bearer } = await connect('api');
    // The client's bearer is the tunnel's own: the local listener takes it out, the broker injects the backend's.
    const users = await runProcess('curl', ['-s', '-H', `Authorization: Bearer ${bearer}`, `${url}/users`], { PATH: process.env.PATH });
    expect(users.stdout).not.toContain('ada@example.com');
    expect(users.stdout).not.toContain('4111 1111 1111 1111');
    expect(JSON.parse(users.stdout).users).toHaveLength(2);
    const seen = backend.seen.find((r) => r.url === '/users')!;
    expect(seen.headers.authorization).toBe(`Bearer ${API_TOKEN}`);
    const admin = await runProcess('curl', ['-s', '-w', '\n%{http_code}', '--oauth2-bearer', bearer, `${url}/admin/users`], { PATH: process.env.PATH });
    expect(admin.stdout).toMatch(/denied by rule \\?"no-admin\\?"[\s\S]*\n403$/);
    expect(backend.seen.some((r) => r.url.startsWith('/admin'))).toBe(false);
    expect(users.stdout + admin.stdout).not.toContain(API_TOKEN);
    expect(JSON.stringify(backend.seen)).not.toContain(bearer);
  });

  it('holds a write for review and forwards it once approved', async () => {
    const { url, bearer } = await connect('api');
    const post = runProcess('curl', ['-s', '-X', 'POST', '-d', '{"name":"x"}', '-H', 'content-type: application/json', '--oauth2-bearer', bearer, `${url}/things`], { PATH: process.env.PATH });
    let review: Review | undefined;
    for (let i = 0; i < 100 && !review; i++) {
      review = (JSON.parse((await runCli(['reviews', '-o', 'json'], bob)).stdout) as Review[]).find((r) => r.connection === 'api');
      if (!review) await new Promise((r) => setTimeout(r, 100));
    }
    expect(review?.statement).toBe('POST /things');
    expect((await runCli(['approve', review!.id, '--reason', 'ok'], bob)).code).toBe(0);
    await post;
    expect(backend.seen.some((r) => r.method === 'POST' && r.url === '/things')).toBe(true);
  });

  it('hoopctl exec runs one request without a listener: body to stdout, non-2xx exits 1', async () => {
    const ok = await runCli(['exec', 'api', '-o', 'json', '--', 'GET', '/users'], alice);
    expect(ok.code, ok.stderr).toBe(0);
    const answer = JSON.parse(ok.stdout);
    expect(answer.status).toBe(200);
    expect(answer.body.users).toHaveLength(2);
    expect(ok.stdout).not.toContain('ada@example.com');
    const denied = await runCli(['exec', 'api', '--', 'GET', '/admin/x'], alice);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain('HTTP 403');
    expect(denied.stdout).toContain('no-admin');
  });

  it('reaches an HTTPS backend whose certificate the configured CA signed (presenting its client certificate where configured), and refuses one it did not', async () => {
    const ok = await runCli(['exec', 'api-tls', '-o', 'json', '--', 'GET', '/'], alice);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout).body).toEqual({ over: 'tls', sawToken: true, client: null });
    const mtls = await runCli(['exec', 'api-mtls', '-o', 'json', '--', 'GET', '/'], alice);
    expect(mtls.code, mtls.stderr).toBe(0);
    expect(JSON.parse(mtls.stdout).body).toEqual({ over: 'tls', sawToken: true, client: 'hoopctl-broker' });
    const wrong = await runCli(['exec', 'api-wrong-ca', '--', 'GET', '/'], alice);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/HTTP 502/);
  });

  it('records each request in the session, masked', async () => {
    const sessions = JSON.parse((await runCli(['sessions', '-o', 'json', '--connection', 'api'], alice)).stdout) as Array<{ id: string }>;
    const events = await mapLimit(sessions, 4, async (s) => JSON.stringify(JSON.parse((await runCli(['replay', s.id, '-o', 'json'], alice)).stdout)));
    const all = events.join('\n');
    expect(all).toContain('"path":"/users"');
    expect(all).toContain('"rule":"no-admin"');
    expect(all).not.toContain('ada@example.com');
    expect(all).not.toContain(API_TOKEN);
  });
});

describe('kubernetes connection', () => {
  it('writes a kubeconfig of its own; kubectl get works, delete namespace is denied with the rule, exec waits for review', async () => {
    const ready = await connect('k8s');
    expect(ready.kubeconfig).toMatch(/hoopctl\/kube\/k8s\.yaml$/);
    expect(readFileSync(ready.kubeconfig, 'utf8')).not.toContain(KUBE_TOKEN);
    const env = { PATH: process.env.PATH, HOME: stack.dir, KUBECONFIG: ready.kubeconfig };
    const get = await runProcess('kubectl', ['get', 'pods', '-n', 'default'], env);
    expect(get.code, get.stderr).toBe(0);
    expect(get.stdout).toMatch(/NAME/);
    const del = await runProcess('kubectl', ['delete', 'namespace', 'prod'], env);
    expect(del.code).not.toBe(0);
    expect(del.stderr).toContain('denied by rule "keep-namespaces"');
    expect(kube.deleted).toEqual([]);
    const exec = runProcess('kubectl', ['exec', '-n', 'default', 'web', '--', 'echo', 'hi'], env, undefined, 60_000);
    let review: Review | undefined;
    for (let i = 0; i < 100 && !review; i++) {
      review = (JSON.parse((await runCli(['reviews', '-o', 'json'], bob)).stdout) as Review[]).find((r) => r.connection === 'k8s');
      if (!review) await new Promise((r) => setTimeout(r, 100));
    }
    expect(review?.statement).toMatch(/\/pods\/web\/exec/);
    await runCli(['approve', review!.id, '--reason', 'debugging'], bob);
    const done = await exec;
    expect(done.stdout.trim()).toBe('hi');
    expect(kube.seen.every((r) => r.headers.authorization === `Bearer ${KUBE_TOKEN}`)).toBe(true);
  });

  it('carries stdin of kubectl exec -i to the pod and records it with the output', async () => {
    const ready = await connect('k8s');
    const env = { PATH: process.env.PATH, HOME: stack.dir, KUBECONFIG: ready.kubeconfig };
    const exec = runProcess('kubectl', ['exec', '-i', '-n', 'default', 'web', '--', 'cat'], env, 'typed through the gate\n', 60_000);
    let review: Review | undefined;
    for (let i = 0; i < 100 && !review; i++) {
      review = (JSON.parse((await runCli(['reviews', '-o', 'json'], bob)).stdout) as Review[]).find((r) => r.connection === 'k8s' && /command=cat/.test(r.statement ?? ''));
      if (!review) await new Promise((r) => setTimeout(r, 100));
    }
    await runCli(['approve', review!.id, '--reason', 'stdin check'], bob);
    const done = await exec;
    expect(done.code, done.stderr).toBe(0);
    expect(done.stdout).toBe('typed through the gate\n');
    const sessions = JSON.parse((await runCli(['sessions', '-o', 'json', '--connection', 'k8s'], alice)).stdout) as Array<{ id: string }>;
    const recorded = (await mapLimit(sessions, 4, async (x) => (await runCli(['replay', x.id, '-o', 'json'], alice)).stdout)).join('\n');
    expect(recorded).toMatch(/"i",\s*"typed through the gate/);
  });

  it('runs kubectl exec -it in a real terminal: the terminal size and keystrokes cross the gate and are recorded', async () => {
    const { execFileSync } = await import('node:child_process');
    const ready = await connect('k8s');
    const session = `hoop-kube-tty-${process.pid}`;
    const envArgs = Object.entries({ PATH: process.env.PATH, HOME: stack.dir, KUBECONFIG: ready.kubeconfig, TERM: 'xterm' })
      .map(([k, v]) => `${k}=${JSON.stringify(String(v))}`).join(' ');
    execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '120', '-y', '30', `env -i ${envArgs} kubectl exec -it -n default web -- cat; echo "kubectl exited $?"; sleep 30`]);
    try {
      let review: Review | undefined;
      for (let i = 0; i < 100 && !review; i++) {
        review = (JSON.parse((await runCli(['reviews', '-o', 'json'], bob)).stdout) as Review[]).find((r) => r.connection === 'k8s' && /tty=true/.test(r.statement ?? ''));
        if (!review) await new Promise((r) => setTimeout(r, 100));
      }
      expect(review, 'the TTY exec was held for review').toBeDefined();
      await runCli(['approve', review!.id, '--reason', 'tty check'], bob);
      await new Promise((r) => setTimeout(r, 1000));
      execFileSync('tmux', ['send-keys', '-t', session, '-l', 'z']);
      let screen = '';
      for (let i = 0; i < 50 && !/kubectl exited 0/.test(screen); i++) {
        await new Promise((r) => setTimeout(r, 100));
        screen = execFileSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' });
      }
      expect(screen).toContain('kubectl exited 0');
      const sessions = JSON.parse((await runCli(['sessions', '-o', 'json', '--connection', 'k8s'], alice)).stdout) as Array<{ id: string }>;
      const recorded = (await mapLimit(sessions, 4, async (x) => JSON.stringify(JSON.parse((await runCli(['replay', x.id, '-o', 'json'], alice)).stdout)))).join('\n');
      expect(recorded).toMatch(/\["?[\d.]+"?,"r","120x30"\]|"r","120x\d+"/);
      expect(recorded).toMatch(/"i","z"/);
    } finally {
      execFileSync('tmux', ['kill-session', '-t', session]);
    }
  });

  it('streams kubectl logs -f line by line, masked as it flows', async () => {
    const ready = await connect('k8s');
    const env = { PATH: process.env.PATH, HOME: stack.dir, KUBECONFIG: ready.kubeconfig };
    const logs = await runProcess('kubectl', ['logs', '-f', '-n', 'default', 'web'], env);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toContain('listening on :8080\nGET /health 200\n');
    expect(logs.stdout).toContain('signup from ');
    expect(logs.stdout).not.toContain('jane.doe@example.com');
  });

  it('forwards a pod port once a reviewer approves: psql reaches the database in the pod, and replay lists each connection', async () => {
    const ready = await connect('k8s');
    const env = { PATH: process.env.PATH, HOME: stack.dir, KUBECONFIG: ready.kubeconfig };
    const pf = new CliProcess(['port-forward', '-n', 'default', 'pod/web', ':5432'], env, 'kubectl');
    procs.push(pf);
    let review: Review | undefined;
    for (let i = 0; i < 100 && !review; i++) {
      review = (JSON.parse((await runCli(['reviews', '-o', 'json'], bob)).stdout) as Review[]).find((r) => r.connection === 'k8s' && /portforward/.test(r.statement ?? '') && r.status === 'pending');
      if (!review) await new Promise((r) => setTimeout(r, 100));
    }
    expect(review?.statement).toBe('GET /api/v1/namespaces/default/pods/web/portforward');
    expect(pf.stdout, 'nothing is forwarded before the approval').toBe('');
    await runCli(['approve', review!.id, '--reason', 'look at the replica'], bob);
    const [, port] = await pf.waitFor(/Forwarding from 127\.0\.0\.1:(\d+) -> 5432/);
    const { PGUSER, PGPASSWORD } = stack.cluster.psqlEnv();
    const psql = await runProcess('psql', ['-h', '127.0.0.1', '-p', port!, '-U', PGUSER!, '-d', 'app', '-At', '-c', 'SELECT 40 + 2'], { PATH: process.env.PATH, PGPASSWORD, PGSSLMODE: 'disable' });
    expect(psql.code, psql.stderr).toBe(0);
    expect(psql.stdout.trim()).toBe('42');
    await pf.stop();
    const sessions = JSON.parse((await runCli(['sessions', '-o', 'json', '--connection', 'k8s'], alice)).stdout) as Array<{ id: string }>;
    let transcript = '';
    for (let i = 0; i < 50 && !/port-fwd   :5432 closed/.test(transcript); i++) {
      transcript = (await mapLimit(sessions, 4, async (x) => (await runCli(['replay', x.id], alice)).stdout)).join('\n');
      if (!/port-fwd   :5432 closed/.test(transcript)) await new Promise((r) => setTimeout(r, 100));
    }
    expect(transcript).toMatch(/review     held for review rev_\w+ \(requested by alice\)/);
    expect(transcript).toMatch(/review     rev_\w+ approved by bob at \d\d:\d\d:\d\d: look at the replica/);
    expect(transcript).toMatch(/upgrade\s+GET \/api\/v1\/namespaces\/default\/pods\/web\/portforward — held for review by rule port-forward-needs-approval \(rev_\w+\)/);
    expect(transcript).toContain('port-fwd   default/web:5432 opened (connection 0)');
    expect(transcript).toMatch(/port-fwd   :5432 closed \(connection 0\): \d{2,} bytes to the pod, \d{3,} back/);
    expect(transcript).not.toContain(PGPASSWORD!);
  });
});
