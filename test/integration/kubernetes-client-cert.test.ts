import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFakeKubeApiServer, type FakeKubeApiServer } from '../support/fake-kube-apiserver.js';
import { startTunnelHarness, type TunnelHarness } from '../support/http-backend.js';
import { makeTestPki, type TestPki } from '../support/pki.js';
import { kubernetesConnectionSchema, resolveWebConnection } from '../../src/broker/protocols/http/config.js';
import { resolveSecret } from '../../src/broker/config.js';
import { writeKubeconfig } from '../../src/tunnel/kubeconfig.js';

/**
 * A cluster whose API server is HTTPS and authenticates the broker by client certificate (CN = the user), as a
 * kubeadm cluster's admin credential does: the connection's `target.ca` pins the server, `credentials.clientCert`
 * (files) is what the broker presents. kubectl's kubeconfig holds neither.
 */
let pki: TestPki;
let api: FakeKubeApiServer;
const gates: TunnelHarness[] = [];
let dir: string;

function connection(name: string, o: { ca: string; client: string }) {
  const raw = kubernetesConnectionSchema.parse({
    name,
    type: 'kubernetes',
    target: { url: api.url, ca: pki.paths(o.ca).cert },
    credentials: { clientCert: { cert: { file: pki.paths(o.client).cert }, key: { file: pki.paths(o.client).key } } },
    access: { groups: ['sre'] },
    rules: [{ name: 'read-only', match: { verb: ['get', 'list', 'watch'] }, action: 'allow' }],
    defaultAction: 'deny',
  });
  return resolveWebConnection(raw, (s, field) => resolveSecret(s, field, {}, dir));
}

async function kubectlThrough(name: string, conn: ReturnType<typeof connection>, args: string[]) {
  const gate = await startTunnelHarness({ connection: conn, identity: { subject: 'sam', kind: 'human', groups: ['sre'] } });
  gates.push(gate);
  const kubeconfig = writeKubeconfig({ path: join(dir, `${name}.yaml`), server: gate.url, contextName: name }).path;
  const run = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile('kubectl', ['--request-timeout=20s', ...args], { env: { PATH: process.env.PATH, HOME: dir, KUBECONFIG: kubeconfig }, encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })),
  );
  return { ...run, gate, kubeconfig };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hoop-kube-cert-'));
  pki = makeTestPki({
    cas: ['cluster-ca', 'other-ca'],
    server: { name: 'apiserver', ca: 'cluster-ca' },
    clients: [
      { name: 'broker', ca: 'cluster-ca', cn: 'hoopctl-broker' },
      { name: 'stranger', ca: 'other-ca', cn: 'hoopctl-broker' },
    ],
  });
  const server = pki.pem('apiserver');
  api = await startFakeKubeApiServer({ tls: { ...server, clientCa: readFileSync(pki.paths('cluster-ca').cert, 'utf8'), clientUser: 'hoopctl-broker' } });
});

afterAll(async () => {
  for (const g of gates) await g.close();
  await api?.close();
  rmSync(dir, { recursive: true, force: true });
  rmSync(pki.dir, { recursive: true, force: true });
});

describe('kubernetes connection with a client certificate', () => {
  it('presents the broker’s certificate to an HTTPS API server it verifies against the configured CA; kubectl holds no credential', async () => {
    const r = await kubectlThrough('k8s-cert', connection('k8s-cert', { ca: 'cluster-ca', client: 'broker' }), ['get', 'pods', '-n', 'default']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^NAME\s/);
    expect(r.stdout).toContain('web');
    expect(readFileSync(r.kubeconfig, 'utf8')).not.toMatch(/client-certificate|client-key|token/);
    expect(api.seen.some((s) => s.url.startsWith('/api/v1/namespaces/default/pods'))).toBe(true);
    expect(api.seen.every((s) => s.headers.authorization === undefined)).toBe(true);
  });

  it('is turned away by the API server when the certificate comes from another CA (401 reaches kubectl)', async () => {
    const r = await kubectlThrough('k8s-stranger', connection('k8s-stranger', { ca: 'cluster-ca', client: 'stranger' }), ['get', 'pods', '-n', 'default']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Unauthorized|provide credentials/);
  });

  it('refuses an API server whose certificate the configured CA did not sign (502, nothing sent)', async () => {
    const before = api.seen.length;
    const r = await kubectlThrough('k8s-wrong-ca', connection('k8s-wrong-ca', { ca: 'other-ca', client: 'broker' }), ['get', 'pods', '-n', 'default']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('Error from server (InternalError)');
    expect(api.seen.length).toBe(before);
    const failed = r.gate.events.find((e) => e.type === 'request' && e.data.status === 502);
    expect(String(failed?.data.error)).toMatch(/certificate/);
    // What the broker answered (kubectl's discovery shows only "InternalError"): a Status naming the reason.
    const raw = await new Promise<string>((resolve) => execFile('curl', ['-s', `${r.gate.url}/api/v1/namespaces`], { encoding: 'utf8' }, (_e, out) => resolve(out)));
    expect(JSON.parse(raw)).toMatchObject({ kind: 'Status', code: 502, message: expect.stringMatching(/^hoopctl: the backend could not be reached: .*certificate/) });
  });
});
