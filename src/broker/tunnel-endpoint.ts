import { EventEmitter } from 'node:events';
import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { readAgentHeaders, withAgent } from '../api/agent-headers.js';
import { HoopError, errorMessage } from '../lib/errors.js';
import type { AuthenticateRequest } from './auth/request-auth.js';
import { clientAddress, errors } from './http-util.js';
import { openSession, runSession, type AdmittedSession, type OpenedSession, type SessionRunnerDeps } from './session-runner.js';
import { storeUnavailable } from './store/store-errors.js';
import { acceptTunnel, upgradeProblem, type TunnelStream } from './tunnel-stream.js';
import { fetchSessionCredentials } from './session-credentials.js';

const TUNNEL_PATH = /^\/api\/v1\/tunnel\/([a-z0-9][a-z0-9._-]{0,62})$/;
/** Largest WebSocket frame a tunnel takes from its client. */
const MAX_PAYLOAD = 16 * 1024 * 1024;

export interface TunnelEndpointDeps extends SessionRunnerDeps {
  authenticate: AuthenticateRequest;
  /** Draining (SIGTERM): new tunnels are refused with 503 and the reason, running ones go on. */
  draining?: () => boolean;
}

export interface TunnelEndpoint {
  /** Ends every session: their clients are told `reason`, then what is left is cut. */
  close(reason?: string): Promise<void>;
}

/**
 * `GET /api/v1/tunnel/<connection>` upgraded to a WebSocket: authenticate the token, admit the identity (locks,
 * access, grant, session slot), open the session, then hand the stream to the connection type's module until it
 * ends. A refusal is an HTTP answer with a JSON body the CLI prints, and a refused session in the record.
 */
export function attachTunnelEndpoint(server: Server, deps: TunnelEndpointDeps): TunnelEndpoint {
  const { logger } = deps;
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_PAYLOAD, perMessageDeflate: false });
  const running = new Set<Promise<void>>();
  const streams = new Set<Duplex>();

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const m = TUNNEL_PATH.exec(new URL(req.url ?? '/', 'http://broker').pathname);
    const refuse = (e: HoopError) => {
      const body = JSON.stringify({ error: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) } });
      socket.end(
        `HTTP/1.1 ${e.status ?? 500} ${e.status === 401 ? 'Unauthorized' : e.status === 403 ? 'Forbidden' : e.status === 404 ? 'Not Found' : 'Error'}\r\n` +
          `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    };
    if (!m) return refuse(errors.notFound('tunnel endpoint'));
    // A cancel opens no session: a draining broker still takes it (it helps a running statement end).
    if (new URL(req.url ?? '/', 'http://broker').searchParams.get('kind') === 'cancel') {
      serveCancel(deps, wss, req, socket, head, m[1]!).catch((e: unknown) => {
        if (e instanceof HoopError) return refuse(e);
        logger.error({ err: errorMessage(e) }, 'cancel tunnel failed');
        refuse(new HoopError('internal error', { code: 'INTERNAL', status: 500 }));
      });
      return;
    }
    if (deps.draining?.()) {
      return refuse(new HoopError('the broker is draining (shutting down): it takes no new sessions', { code: 'DRAINING', status: 503, hint: 'connect again: the load balancer sends you to another broker' }));
    }
    if (new URL(req.url ?? '/', 'http://broker').searchParams.get('report') === 'peer-refused') {
      recordPeerRefusal(deps, req, m[1]!).then(
        (session) => answer(socket, 200, { recorded: true, session }),
        (e: unknown) => {
          if (e instanceof HoopError) return refuse(e);
          logger.error({ err: errorMessage(e) }, 'recording a refused local client failed');
          refuse(new HoopError('internal error', { code: 'INTERNAL', status: 500 }));
        },
      );
      return;
    }
    // Checked before the token: a request that is no WebSocket handshake opens no session.
    const problem = upgradeProblem(req);
    if (problem) return refuse(new HoopError(problem, { code: 'BAD_REQUEST', status: 400 }));
    (async () => {
      // An agent's tool call (hoopctl mcp) says so: its identity is recorded with the front door and MCP client.
      const agent = readAgentHeaders(req.headers);
      const identity = withAgent(await deps.authenticate(req), agent);
      const { connection, grant, release } = await deps.admission.admitSession(identity, m[1]!, req);
      // Helper-provided secrets are fetched now, so a failing helper refuses the session in the client's terms.
      try {
        await fetchSessionCredentials(connection, logger);
      } catch (e) {
        release();
        await deps.sessions.refuse(identity, connection.name, connection.type, clientAddress(req), errorMessage(e));
        throw e;
      }
      const admitted: AdmittedSession = {
        identity, connection, grant, clientAddr: clientAddress(req), activity: new EventEmitter(),
        client: { agent: req.headers['user-agent'], peer: req.headers['x-hoopctl-peer'], ...(agent ? { via: agent.via, mcpClient: agent.client, reason: agent.reason } : {}) },
        detach: new URL(req.url ?? '/', 'http://broker').searchParams.get('review') === 'detach',
        ...(agent?.reason ? { reason: agent.reason } : {}),
        ...(typeof req.headers['x-hoopctl-client-key'] === 'string' ? { clientKey: req.headers['x-hoopctl-client-key'] } : {}),
      };
      // The session is in the store before the tunnel opens: a store that takes no writes is a refusal the client
      // reads (HTTP 503 with the reason), never a tunnel that opens and then carries nothing it could record.
      let opened: OpenedSession;
      try {
        opened = await openSession(deps, admitted);
      } catch (e) {
        release();
        throw e;
      }
      let started = false;
      // A handshake that fails never reaches runTunnel: its session slot is given back, and its session closed, when the socket goes.
      socket.once('close', () => {
        if (started) return;
        release();
        void deps.sessions.close(opened.row.id, opened.recorder, { status: 'failed', statementCount: 0, errorCount: 0, error: 'the client went away before the tunnel opened', durationMs: 0 })
          .catch((e: unknown) => logger.error({ err: errorMessage(e), session: opened.row.id }, 'could not close a session whose tunnel never opened'));
      });
      started = true;
      const stream = acceptTunnel(req, socket as Socket, head, { maxPayload: MAX_PAYLOAD });
      const session = runTunnel(stream, { ...admitted, activity: stream }, opened);
      running.add(session);
      void session.finally(() => {
        running.delete(session);
        release();
      });
    })().catch((e: unknown) => {
      const unavailable = storeUnavailable(e);
      if (unavailable) {
        logger.error({ err: errorMessage(e), path: req.url }, 'store refused a write: refusing the tunnel');
        return refuse(unavailable);
      }
      if (e instanceof HoopError) return refuse(e);
      logger.error({ err: errorMessage(e) }, 'tunnel upgrade failed');
      refuse(new HoopError('internal error', { code: 'INTERNAL', status: 500 }));
    });
  });

  async function runTunnel(stream: TunnelStream, admitted: AdmittedSession, opened: OpenedSession): Promise<void> {
    stream.on('error', () => undefined);
    streams.add(stream);
    const keepalive = setInterval(() => stream.ping(), 30_000);
    try {
      await runSession(deps, stream, admitted, opened);
    } finally {
      clearInterval(keepalive);
      streams.delete(stream);
      stream.close(1000);
      stream.destroy();
    }
  }

  return {
    async close(reason = 'the broker is stopping') {
      // Tell each session's client why it ends (FATAL), give them a moment, then cut what is left.
      deps.live.endWhere(() => true, reason);
      await Promise.race([Promise.allSettled([...running]), delay(2000)]);
      for (const s of streams) s.destroy();
      wss.close();
      await Promise.race([Promise.allSettled([...running]), delay(5000)]);
    },
  };
}

/**
 * `?kind=cancel`: a tunnel that carries one cancel request (psql's Ctrl-C through `hoopctl connect`, `hoopctl exec`'s)
 * to a session of the same identity. It is no session: the same token and access as a tunnel are required (no
 * session slot), then the connection type's module reads the request, acts on the session it names and records it
 * there; what matches none is an audit event. A type without such cancels refuses the tunnel.
 */
async function serveCancel(deps: TunnelEndpointDeps, wss: WebSocketServer, req: IncomingMessage, socket: Duplex, head: Buffer, name: string): Promise<void> {
  const identity = await deps.authenticate(req);
  const connection = await deps.admission.authorize(identity, name, req);
  const runtime = deps.protocols.of(connection);
  if (!runtime.cancel) throw new HoopError(`${connection.type} connections take no cancel tunnels`, { code: 'BAD_REQUEST', status: 400 });
  const clientAddr = clientAddress(req);
  wss.handleUpgrade(req, socket, head, (ws) => {
    const stream = createWebSocketStream(ws);
    stream.on('error', () => undefined);
    void runtime.cancel!(stream, { identity, connection, clientAddr, via: 'tunnel', logger: deps.logger }).finally(() => {
      if (ws.readyState === ws.OPEN) ws.close(1000);
    });
  });
}

/** A client's text, bounded and on one line, for the record. */
function field(v: string | null, max: number): string {
  return (v ?? '').replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, max);
}

/**
 * A tunnel's owner reports a local client its listener turned away (another OS user, no or a wrong per-tunnel
 * secret): recorded, for the same identity and access a tunnel needs, as a refused session (`hoopctl sessions`
 * shows it to the owner) and as a `tunnel-peer-refused` audit event. Returns the refused session's id.
 */
async function recordPeerRefusal(deps: TunnelEndpointDeps, req: IncomingMessage, name: string): Promise<string> {
  const identity = await deps.authenticate(req);
  const connection = await deps.admission.authorize(identity, name, req);
  const q = new URL(req.url ?? '/', 'http://broker').searchParams;
  const peer = field(q.get('peer'), 100) || 'unknown';
  const reason = field(q.get('reason'), 500) || 'refused';
  const uid = /^\d{1,10}$/.test(q.get('uid') ?? '') ? Number(q.get('uid')) : undefined;
  const count = /^\d{1,9}$/.test(q.get('count') ?? '') ? Math.max(1, Number(q.get('count'))) : 1;
  const text = `local tunnel refused ${peer}${uid !== undefined ? ` (OS user ${uid})` : ''}: ${reason}${count > 1 ? ` (${count} times)` : ''}`;
  const session = await deps.sessions.refuse(identity, connection.name, connection.type, clientAddress(req), text);
  await deps.sessions.audit('tunnel-peer-refused', {
    connection: connection.name, subject: identity.subject, issuer: identity.issuer, peer, reason, count, session, clientAddr: clientAddress(req),
    ...(uid !== undefined ? { uid } : {}),
  });
  deps.logger.info({ subject: identity.subject, connection: connection.name, peer, uid, count }, 'local tunnel refused a client');
  return session;
}

/** A plain HTTP answer on an upgrade request that is not a tunnel. */
function answer(socket: Duplex, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  socket.end(`HTTP/1.1 ${status} OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
