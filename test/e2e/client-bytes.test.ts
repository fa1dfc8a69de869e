import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Duplex } from 'node:stream';
import { loginAs, readText, runCli, startStack, type Stack } from '../support/stack.js';
import { startHttpBackend, type HttpBackend } from '../support/http-backend.js';
import { startFakeKubeApiServer, type FakeKubeApiServer } from '../support/fake-kube-apiserver.js';
import { openTunnel } from '../../src/tunnel/ws-transport.js';
import { accessToken } from '../../src/commands/context.js';

/**
 * "A broker never crashes on a client's bytes": seeded random and mutated input, straight into the tunnels of a
 * PostgreSQL, an HTTP and a Kubernetes connection (no hoopctl connect in between to tidy anything up). Afterwards
 * the same broker process must still serve real clients, and every attempt must have ended as a session.
 */
let stack: Stack;
let backend: HttpBackend;
let kube: FakeKubeApiServer;
let alice: NodeJS.ProcessEnv;
let token: string;

beforeAll(async () => {
  backend = await startHttpBackend();
  kube = await startFakeKubeApiServer({ token: 'kube-token' });
  stack = await startStack({
    extraConnections: [
      { name: 'api', type: 'http', target: { url: backend.url }, credentials: { bearer: { value: 'api-token' } }, access: { groups: ['dba'] }, mask: { jsonPaths: ['$.users[*].email'] } },
      { name: 'k8s', type: 'kubernetes', target: { url: kube.url }, credentials: { bearer: { value: 'kube-token' } }, access: { groups: ['dba'] } },
    ],
  });
  alice = await loginAs(stack, 'alice');
  const saved = { ...process.env };
  Object.assign(process.env, alice);
  try {
    token = await accessToken(stack.brokerUrl);
  } finally {
    process.env = saved;
  }
}, 120_000);

afterAll(async () => {
  await stack?.stop();
  await backend?.close();
  await kube?.close();
});

/** mulberry32: a small seeded generator, so a failure replays with the same bytes. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(next: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(next() * 256);
  return b;
}

/** A valid opening of each protocol with random bytes after it, flipped bytes in it, or only random bytes. */
function attempt(next: () => number, valid: Buffer): Buffer {
  const kind = Math.floor(next() * 3);
  if (kind === 0) return Buffer.concat([valid, randomBytes(next, 1 + Math.floor(next() * 300))]);
  if (kind === 1) {
    const b = Buffer.from(valid);
    for (let i = 0; i < 1 + Math.floor(next() * 4); i++) b[Math.floor(next() * b.length)] = Math.floor(next() * 256);
    return b;
  }
  return randomBytes(next, 1 + Math.floor(next() * 600));
}

/** Writes the bytes and ends this side; waits for the broker to close (or 2 s), then cuts the tunnel. */
async function throwAt(connection: string, bytes: Buffer): Promise<void> {
  let tunnel: Duplex;
  try {
    tunnel = await openTunnel(stack.brokerUrl, connection, token);
  } catch {
    return;
  }
  await new Promise<void>((resolve) => {
    const timer = setTimeout(finish, 2000);
    function finish() {
      clearTimeout(timer);
      tunnel.destroy();
      resolve();
    }
    tunnel.on('data', () => undefined);
    tunnel.on('error', finish);
    tunnel.on('close', finish);
    tunnel.end(bytes);
  });
}

const PG_STARTUP = (() => {
  const params = Buffer.from('user\0x\0database\0app\0\0');
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + params.length, 0);
  head.writeInt32BE(196608, 4);
  const query = Buffer.from("select 1\0");
  const q = Buffer.alloc(5);
  q[0] = 0x51;
  q.writeInt32BE(4 + query.length, 1);
  return Buffer.concat([head, params, q, query]);
})();
const HTTP_REQUEST = Buffer.from('GET /users HTTP/1.1\r\nHost: api\r\nAccept: application/json\r\n\r\n');
const KUBE_REQUEST = Buffer.from('GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: kube\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');

describe('client bytes', () => {
  it('survives 150 seeded random and mutated inputs across PostgreSQL, HTTP and Kubernetes tunnels, then serves real clients', async () => {
    const next = rng(20261125);
    const targets: Array<[string, Buffer]> = [['app-pg', PG_STARTUP], ['api', HTTP_REQUEST], ['k8s', KUBE_REQUEST]];
    const before = JSON.parse((await runCli(['sessions', '-o', 'json', '-n', '1000'], alice)).stdout).length as number;
    const attempts = Array.from({ length: 150 }, (_, i) => [targets[i % targets.length]![0], attempt(next, targets[i % targets.length]![1])] as const);
    for (let i = 0; i < attempts.length; i += 10) await Promise.all(attempts.slice(i, i + 10).map(([connection, bytes]) => throwAt(connection, bytes)));
    expect(stack.broker.exitCode, 'the broker process is still running').toBeNull();

    // The same broker still serves each protocol to a real client.
    const sql = await runCli(['exec', 'app-pg', '-o', 'json', '-e', 'select 6 * 7 as n'], alice);
    expect(sql.code, sql.stderr).toBe(0);
    expect(JSON.parse(sql.stdout)[0].rows).toEqual([{ n: 42 }]);
    const http = await runCli(['exec', 'api', '-o', 'json', '--', 'GET', '/users'], alice);
    expect(http.code, http.stderr).toBe(0);
    expect(http.stdout).not.toContain('ada@example.com');
    const kubeRun = await runCli(['exec', 'k8s', '-o', 'json', '--', 'GET', '/api/v1/namespaces'], alice);
    expect(kubeRun.code, kubeRun.stderr).toBe(0);

    // Every attempt is on record as a session that ended (none left open), and the broker logged no crash.
    let open = 1;
    let total = 0;
    for (let i = 0; i < 50 && open > 0; i++) {
      const sessions = JSON.parse((await runCli(['sessions', '-o', 'json', '-n', '1000'], alice)).stdout) as Array<{ status: string }>;
      open = sessions.filter((s) => s.status === 'open').length;
      total = sessions.length;
      if (open > 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(open).toBe(0);
    expect(total - before).toBeGreaterThanOrEqual(150);
    const log = readText(stack.brokerLogPath);
    expect(log, "client bytes are never a broker error").not.toMatch(/"level":(50|60)/);
  }, 120_000);
});
