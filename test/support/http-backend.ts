/**
 * A real HTTP backend for the http proxy tests: echoes what it received (so a test sees the credential the broker
 * injected), serves JSON with personal data (plain or gzip), and accepts WebSocket upgrades that echo messages.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { gzipSync } from 'node:zlib';
import type { AddressInfo } from 'node:net';
import { createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { pino } from 'pino';
import { WebSocket, WebSocketServer, createWebSocketStream } from 'ws';
import { proxyHttpTunnel, type HttpSessionContext, type HttpSessionSummary } from '../../src/broker/protocols/http/proxy.js';
import type { ResolvedWebConnection } from '../../src/broker/protocols/http/config.js';
import type { StatementReviews } from '../../src/broker/protocols/protocol.js';
import { MemoryRecorder, type RecordedEvent } from './memory-recorder.js';

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface HttpBackend {
  url: string;
  /** Every request (and WebSocket upgrade) the backend received, in order. */
  seen: SeenRequest[];
  close(): Promise<void>;
}

export const USERS = {
  users: [
    { id: 1, name: 'Ada', email: 'ada@example.com', card: '4111 1111 1111 1111', note: 'call +1 415 555 0100' },
    { id: 2, name: 'Bob', email: 'bob@example.org', card: 5555555555554444, note: 'mail bob.backup@example.net' },
  ],
  total: 2,
};

export async function startHttpBackend(): Promise<HttpBackend> {
  const seen: SeenRequest[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      const url = new URL(req.url ?? '/', 'http://backend');
      const json = (status: number, value: unknown, extra: Record<string, string> = {}) => {
        const text = JSON.stringify(value);
        res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...extra });
        res.end(text);
      };
      if (url.pathname === '/users') {
        const accepts = String(req.headers['accept-encoding'] ?? '');
        // `?gzip=always` ignores Accept-Encoding, as some backends do.
        if (url.searchParams.get('gzip') === 'always' || /\bgzip\b/.test(accepts)) {
          const z = gzipSync(JSON.stringify(USERS));
          res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': z.length });
          res.end(z);
          return;
        }
        return json(200, USERS);
      }
      if (url.pathname === '/big') return json(200, { blob: 'x'.repeat(Number(url.searchParams.get('n') ?? 100_000)) });
      if (url.pathname === '/text') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('line one ada@example.com\nline two\n');
        return;
      }
      if (url.pathname === '/binary') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        res.end(Buffer.from([0, 1, 2, 3, 255]));
        return;
      }
      // Everything else: what the backend saw (credentials left out: a test reads those from `seen`).
      const { authorization: _a, 'x-api-key': _k, ...headers } = req.headers;
      json(200, { method: req.method, path: url.pathname, query: url.search, headers, body });
    });
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: '' });
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send(JSON.stringify({ hello: 'from backend' }));
      ws.on('message', (data, isBinary) => ws.send(isBinary ? data : `echo: ${String(data)}`, { binary: isBinary }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    async close() {
      for (const c of wss.clients) c.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface TunnelHarness {
  /** `http://127.0.0.1:PORT`: where curl or kubectl connect. */
  url: string;
  port: number;
  /** Every session's events, in order. */
  events: RecordedEvent[];
  summaries: HttpSessionSummary[];
  close(): Promise<void>;
}

/**
 * Stands in for `hoopctl connect` + the broker's tunnel endpoint: each TCP connection accepted on a local port
 * rides a real WebSocket, and the far end's stream (ws `createWebSocketStream`, as the broker's) goes to
 * `proxyHttpTunnel` with an in-memory recorder — one session per connection, as the broker opens them.
 */
export async function startTunnelHarness(o: {
  connection: ResolvedWebConnection;
  reviews?: StatementReviews;
  identity?: HttpSessionContext['identity'];
}): Promise<TunnelHarness> {
  const events: RecordedEvent[] = [];
  const summaries: HttpSessionSummary[] = [];
  const logger = pino({ level: process.env.HOOP_TEST_LOG ? 'debug' : 'silent' });
  const identity = o.identity ?? { subject: 'alice', kind: 'human' as const, groups: ['dev'] };
  let sessions = 0;
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  const running = new Set<Promise<unknown>>();
  wss.on('connection', (ws) => {
    const stream = createWebSocketStream(ws);
    stream.on('error', () => undefined);
    const recorder = new MemoryRecorder(`ses_${++sessions}`, events);
    const p = proxyHttpTunnel(stream, { connection: o.connection, recorder, identity, logger, reviews: o.reviews })
      .then((s) => summaries.push(s))
      .finally(() => {
        stream.destroy();
        ws.close();
        running.delete(p);
      });
    running.add(p);
  });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  const wsPort = (wss.address() as AddressInfo).port;
  const sockets = new Set<import('node:net').Socket>();
  const tcp: TcpServer = createTcpServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.pause();
    const ws = new WebSocket(`ws://127.0.0.1:${wsPort}/`, { perMessageDeflate: false });
    ws.once('open', () => {
      const tunnel = createWebSocketStream(ws);
      tunnel.on('error', () => socket.destroy());
      socket.on('error', () => tunnel.destroy());
      socket.pipe(tunnel).pipe(socket);
      socket.resume();
    });
    ws.once('error', () => socket.destroy());
  });
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
  const port = (tcp.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    events,
    summaries,
    async close() {
      const stopped = new Promise<void>((resolve) => tcp.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await stopped;
      for (const c of wss.clients) c.terminate();
      await Promise.allSettled([...running]);
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}
