import { request } from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpConnectionSchema, kubernetesConnectionSchema, resolveWebConnection } from '../../src/broker/protocols/http/config.js';
import { startHttpBackend, startTunnelHarness, type HttpBackend, type TunnelHarness } from '../support/http-backend.js';
import { runCli } from '../support/stack.js';

/**
 * `hoopctl policy check` (the CLI as a process, reading a broker config) must decide each HTTP and Kubernetes
 * request the way the live proxy does: every request below goes through the real proxy (its verdict and rule read
 * from the recording) and through the dry run, and the two must agree — encoded paths and dot segments included.
 */
const HTTP = {
  name: 'api', type: 'http' as const, access: { groups: ['dev'] }, reviews: { groups: ['leads'] }, defaultAction: 'allow' as const,
  rules: [
    { name: 'no-admin', match: { path: '/admin/**' }, action: 'deny' as const },
    { name: 'refunds', match: { method: 'POST', path: '/refunds/*' }, action: 'review' as const },
    { name: 'no-deletes', match: { method: 'DELETE' }, action: 'deny' as const },
  ],
};
const KUBE = {
  name: 'k8s', type: 'kubernetes' as const, access: { groups: ['dev'] }, reviews: { groups: ['leads'] }, defaultAction: 'deny' as const,
  rules: [
    { name: 'read-only', match: { verb: ['get', 'list', 'watch'] }, action: 'allow' as const },
    { name: 'keep-namespaces', match: { verb: 'delete', resource: 'namespaces' }, action: 'deny' as const },
    { name: 'exec-needs-approval', match: { verb: 'create', resource: 'pods/exec' }, action: 'review' as const },
  ],
};

const HTTP_REQUESTS: Array<[string, string]> = [
  ['GET', '/admin/users'],
  ['GET', '/%61dmin/users'],
  ['GET', '/%2561dmin/users'],
  ['GET', '/public/../admin/users'],
  ['GET', '/admin%2Fusers'],
  ['GET', '/Admin/users'],
  ['GET', '/users?next=/admin/x'],
  ['POST', '/refunds/42'],
  ['POST', '/refunds/%34%32'],
  ['post', '/refunds/7'],
  ['DELETE', '/users/1'],
  ['GET', '/users'],
];
const KUBE_REQUESTS: Array<[string, string]> = [
  ['GET', '/api/v1/namespaces/default/pods'],
  ['DELETE', '/api/v1/namespaces/prod'],
  ['DELETE', '/api/v1/namespaces/%70rod'],
  ['POST', '/api/v1/namespaces/default/pods/web/exec?command=sh'],
  ['GET', '/api/v1/namespaces/default/pods/web/exec?command=sh'],
  ['DELETE', '/api/v1/namespaces/default/pods/web'],
  ['GET', '/apis/apps/v1/namespaces/default/deployments'],
  ['GET', '/version'],
];

let backend: HttpBackend;
let config: string;
const gates: TunnelHarness[] = [];
const resolved = (raw: unknown) => resolveWebConnection(raw as { type: 'http' }, () => ({ reveal: () => 'token' }));

beforeAll(async () => {
  backend = await startHttpBackend();
  const dir = mkdtempSync(join(tmpdir(), 'hoop-parity-web-'));
  config = join(dir, 'broker.yaml');
  const target = { url: backend.url };
  const credentials = { bearer: { value: 'token' } };
  writeFileSync(config, stringify({
    auth: { issuers: [{ issuer: 'https://login.example.com', audience: 'urn:x' }] },
    connections: [{ ...HTTP, target, credentials }, { ...KUBE, target, credentials }],
  }));
  for (const raw of [httpConnectionSchema.parse({ ...HTTP, target, credentials }), kubernetesConnectionSchema.parse({ ...KUBE, target, credentials })]) {
    gates.push(await startTunnelHarness({ connection: resolved(raw), identity: { subject: 'dana', kind: 'human', groups: ['dev'] } }));
  }
});

afterAll(async () => {
  await Promise.all(gates.map((g) => g.close()));
  await backend?.close();
});

/** Sends the request target exactly as written (no client-side normalisation) and returns the status. */
function send(port: number, method: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

async function liveVerdicts(gate: TunnelHarness, requests: Array<[string, string]>): Promise<Array<{ action: string; rule?: string }>> {
  const out: Array<{ action: string; rule?: string }> = [];
  for (const [method, path] of requests) {
    const before = gate.events.length;
    await send(gate.port, method, path);
    // The request is recorded before its answer is sent; with no reviewer, a held one is refused and recorded too.
    const ev = gate.events.slice(before).find((e) => e.type === 'request' || e.type === 'request-start')!;
    out.push({ action: String(ev.data.verdict), ...(ev.data.rule ? { rule: String(ev.data.rule) } : {}) });
  }
  return out;
}

async function dryRunVerdicts(connection: string, requests: Array<[string, string]>): Promise<Array<{ action: string; rule?: string }>> {
  return Promise.all(requests.map(async ([method, path]) => {
    const r = await runCli(['policy', 'check', '-c', config, '--connection', connection, '--as', 'group=dev', '-e', `${method} ${path}`, '-o', 'json'], { PATH: process.env.PATH, HOME: tmpdir() });
    expect(r.code, r.stderr).toBe(0);
    const { action, rule } = JSON.parse(r.stdout).verdict as { action: string; rule?: string };
    return { action, ...(rule ? { rule } : {}) };
  }));
}

describe('policy check agrees with the live proxy on requests', () => {
  it('http: paths as the backend reads them (percent-decoded, dot segments resolved), methods in any case', async () => {
    const live = await liveVerdicts(gates[0]!, HTTP_REQUESTS);
    const dry = await dryRunVerdicts('api', HTTP_REQUESTS);
    expect(dry.map((v, i) => ({ request: HTTP_REQUESTS[i]!.join(' '), ...v }))).toEqual(live.map((v, i) => ({ request: HTTP_REQUESTS[i]!.join(' '), ...v })));
    // The case that used to differ: an encoded letter is still the admin path, and is denied by both.
    expect(live[1]).toEqual({ action: 'deny', rule: 'no-admin' });
  }, 120_000);

  it('kubernetes: requests by what their API path means', async () => {
    const live = await liveVerdicts(gates[1]!, KUBE_REQUESTS);
    const dry = await dryRunVerdicts('k8s', KUBE_REQUESTS);
    expect(dry.map((v, i) => ({ request: KUBE_REQUESTS[i]!.join(' '), ...v }))).toEqual(live.map((v, i) => ({ request: KUBE_REQUESTS[i]!.join(' '), ...v })));
    expect(live[1]).toEqual({ action: 'deny', rule: 'keep-namespaces' });
  }, 120_000);
});
