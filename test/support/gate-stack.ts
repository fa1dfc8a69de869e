import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import WebSocket from 'ws';
import { startDevIssuer, type DevIssuer } from '../../src/dev/oidc-issuer.js';
import { freePort } from '../../src/lib/net.js';
import { deviceLoginAs } from './device-user.js';
import { spawnBroker } from './stack.js';

/**
 * A broker (as a process) in front of two TCP echo connections, for the security suites: the login issuer with one
 * person per role, and a second trusted issuer (a partner IdP, a CI platform) whose users may share names with the
 * first. No PostgreSQL: what is under test is who gets in, not what they run.
 *
 * - `echo`: open to group `dba`; `gated`: `dba` too, but only under an access grant approved by `dba-leads`.
 * - `audit.groups: [auditors]`, `admin.groups: [sre-leads]`.
 * - The second issuer may assert group `dba` only (`trustedGroups`), so its users can open `echo` and nothing more.
 */
export const AUDIENCE = 'urn:hoopctl:security';
export const ROLES = ['stranger', 'requester', 'approver', 'auditor', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** The login each role signs in with at the first issuer, and its groups there. */
export const PEOPLE: Record<Role, { login: string; groups: string[] }> = {
  stranger: { login: 'sam', groups: ['contractors'] },
  requester: { login: 'rita', groups: ['dba'] },
  approver: { login: 'abe', groups: ['dba-leads'] },
  auditor: { login: 'aud', groups: ['auditors'] },
  admin: { login: 'ada', groups: ['sre-leads'] },
};

export interface GateStack {
  dir: string;
  brokerUrl: string;
  broker: ChildProcess;
  issuer: DevIssuer;
  /** The second trusted issuer; its user `rita` claims every group of the first issuer. */
  otherIssuer: DevIssuer;
  /** Real device-flow access tokens from the first issuer, one per role. */
  tokens: Record<Role, string>;
  /** The requester's whole token set (ID token and refresh token too). */
  requesterTokens: { accessToken: string; idToken?: string; refreshToken?: string };
  stop(): Promise<void>;
}

export async function startGateStack(): Promise<GateStack> {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-sec-'));
  const echo = await startEchoServer();
  const users = Object.fromEntries(Object.values(PEOPLE).map((p) => [p.login, { groups: p.groups }]));
  const [issuer, otherIssuer] = await Promise.all([
    startDevIssuer({ audience: AUDIENCE, users }),
    startDevIssuer({ audience: AUDIENCE, users: { rita: { groups: ['dba', 'auditors', 'sre-leads', 'dba-leads'] } } }),
  ]);
  const port = await freePort();
  const configPath = join(dir, 'broker.yaml');
  const echoTarget = { host: '127.0.0.1', port: (echo.address() as AddressInfo).port };
  writeFileSync(
    configPath,
    stringify({
      server: { listen: `127.0.0.1:${port}` },
      store: { path: join(dir, 'broker.db') },
      auth: {
        issuers: [
          { issuer: issuer.issuer, audience: AUDIENCE, clientId: issuer.cliClientId, maxTokenLifetime: '1h', clockTolerance: '30s' },
          { issuer: otherIssuer.issuer, audience: AUDIENCE, trustedGroups: ['dba'] },
        ],
      },
      audit: { groups: ['auditors'] },
      admin: { groups: ['sre-leads'] },
      logging: { level: 'info' },
      connections: [
        { name: 'echo', type: 'tcp', target: echoTarget, access: { groups: ['dba'] } },
        { name: 'gated', type: 'tcp', target: echoTarget, access: { groups: ['dba'], approval: { groups: ['dba-leads'], reason: 'optional' } } },
      ],
    }),
  );
  const broker = await spawnBroker(configPath, join(dir, 'broker.log'));
  const logins = await Promise.all(ROLES.map((r) => deviceLoginAs(issuer, PEOPLE[r].login)));
  const tokens = Object.fromEntries(ROLES.map((r, i) => [r, logins[i]!.accessToken])) as Record<Role, string>;
  return {
    dir, brokerUrl: `http://127.0.0.1:${port}`, broker, issuer, otherIssuer, tokens,
    requesterTokens: logins[ROLES.indexOf('requester')]!,
    async stop() {
      broker.kill('SIGTERM');
      await Promise.race([once(broker, 'exit'), new Promise((r) => setTimeout(r, 3000))]);
      await Promise.all([issuer.stop(), otherIssuer.stop()]);
      echo.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A TCP server that writes back what it reads. */
async function startEchoServer(): Promise<Server> {
  const server = createServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

export interface Answer {
  status: number;
  contentType: string;
  body: string;
}

/**
 * One HTTP request; a stream (`text/event-stream`) is read up to its first line and then dropped, so an open SSE
 * answer counts as 200 without waiting for it to end.
 */
export function call(baseUrl: string, method: string, path: string, o: { token?: string; headers?: Record<string, string>; body?: unknown } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const body = o.body === undefined ? undefined : JSON.stringify(o.body);
    const req = request(new URL(path, baseUrl), {
      method,
      headers: {
        ...(o.token !== undefined ? { authorization: `Bearer ${o.token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : {}),
        ...o.headers,
      },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const contentType = res.headers['content-type'] ?? '';
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        text += d;
        if (contentType.startsWith('text/event-stream') && text.includes('\n\n')) {
          resolve({ status: res.statusCode ?? 0, contentType, body: text });
          req.destroy();
        }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType, body: text }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, contentType, body: text }));
    });
    req.end(body);
  });
}

/** A tunnel WebSocket upgrade: the broker's refusal, or 101 when it let the caller in (then the socket is closed). */
export function upgrade(baseUrl: string, path: string, headers: Record<string, string>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, baseUrl), {
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers },
    });
    req.on('error', reject);
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 101, contentType: '', body: '' });
    });
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'] ?? '', body: text }));
    });
    req.end();
  });
}

/**
 * A live tunnel session on `echo`/`gated` for `token`: resolves once a byte has gone through the broker to the echo
 * server and back, so the session is open and recorded by then. `close()` ends it from the client side.
 */
export async function openTunnel(baseUrl: string, connection: string, token: string): Promise<{ ws: WebSocket; closed: Promise<number>; close(): Promise<void> }> {
  const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/api/v1/tunnel/${connection}`, { headers: { authorization: `Bearer ${token}` } });
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    ws.once('unexpected-response', (_req, res) => reject(new Error(`tunnel refused: HTTP ${res.statusCode}`)));
    ws.once('error', reject);
    ws.once('open', () => {
      ws.once('message', () => resolve());
      ws.send(Buffer.from('ping'));
    });
  });
  return {
    ws, closed,
    async close() {
      if (ws.readyState !== ws.CLOSED) {
        ws.close();
        await closed;
      }
    },
  };
}
