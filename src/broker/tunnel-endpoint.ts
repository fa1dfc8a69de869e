import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer, createWebSocketStream, type WebSocket } from 'ws';
import type { Identity } from '../api/identity.js';
import type { Review } from '../api/review.js';
import { HoopError, errorMessage } from '../lib/errors.js';
import type { MaskKey } from '../policy/masking.js';
import type { Admission } from './admission.js';
import type { AuthenticateRequest } from './auth/request-auth.js';
import type { Connection } from './config.js';
import { clientAddress, errors } from './http-util.js';
import { enforceSessionLimits, type LiveSessionRegistry } from './live-sessions.js';
import { protocolOf, type ProtocolRuntimes } from './protocols/registry.js';
import type { ReviewService } from './reviews/review-service.js';
import { statementHolds } from './reviews/statement-holds.js';
import type { SessionService } from './session-service.js';

const TUNNEL_PATH = /^\/api\/v1\/tunnel\/([a-z0-9][a-z0-9._-]{0,62})$/;

export interface TunnelEndpointDeps {
  authenticate: AuthenticateRequest;
  admission: Admission;
  sessions: SessionService;
  reviews: ReviewService;
  live: LiveSessionRegistry;
  protocols: ProtocolRuntimes;
  maskKey: MaskKey;
  logger: Logger;
  /** Whether the broker is stopping (a review still pending then is orphaned). */
  stopping: () => boolean;
}

export interface TunnelEndpoint {
  /** Ends every session: their clients are told why, then what is left is cut. */
  close(): Promise<void>;
}

/**
 * `GET /api/v1/tunnel/<connection>` upgraded to a WebSocket: authenticate the token, admit the identity (locks,
 * access, grant, session slot), open the session, then hand the stream to the connection type's module until it
 * ends. A refusal is an HTTP answer with a JSON body the CLI prints, and a refused session in the record.
 */
export function attachTunnelEndpoint(server: Server, deps: TunnelEndpointDeps): TunnelEndpoint {
  const { logger } = deps;
  const wss = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 * 1024, perMessageDeflate: false });
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
    (async () => {
      const identity = await deps.authenticate(req);
      const { connection, grant, release } = await deps.admission.admitSession(identity, m[1]!, req);
      let started = false;
      // A handshake that fails never reaches runTunnel: its session slot is given back when the socket goes.
      socket.once('close', () => {
        if (!started) release();
      });
      wss.handleUpgrade(req, socket, head, (ws) => {
        started = true;
        const session = runTunnel(ws, req, identity, connection, grant);
        running.add(session);
        void session.finally(() => {
          running.delete(session);
          release();
        });
      });
    })().catch((e: unknown) => {
      if (e instanceof HoopError) return refuse(e);
      logger.error({ err: errorMessage(e) }, 'tunnel upgrade failed');
      refuse(new HoopError('internal error', { code: 'INTERNAL', status: 500 }));
    });
  });

  async function runTunnel(ws: WebSocket, req: IncomingMessage, identity: Identity, connection: Connection, grant?: Review): Promise<void> {
    const started = Date.now();
    const stream = createWebSocketStream(ws);
    stream.on('error', () => undefined);
    streams.add(stream);
    const keepalive = setInterval(() => ws.ping(), 30_000);
    const client = { agent: req.headers['user-agent'], peer: req.headers['x-hoopctl-peer'] };
    let sessionId: string | undefined;
    let limits: (() => void) | undefined;
    try {
      const { row, recorder } = await deps.sessions.open(identity, connection, clientAddress(req), client);
      sessionId = row.id;
      const log = logger.child({ session: row.id, connection: connection.name, subject: identity.subject });
      const ending = new AbortController();
      deps.live.add(row.id, { recorder, identity, connection, grantId: grant?.id, end: (reason) => ending.abort(reason) });
      if (grant) await recorder.record('grant', { review: grant.id, until: grant.grantExpiresAt });
      limits = enforceSessionLimits(ws, deps.admission.limitsOf(connection), identity.expiresAt, (reason) => {
        void recorder.record('ended', { by: 'broker', reason }).catch(() => undefined);
        ending.abort(reason);
      });
      log.info('session opened');
      const detach = new URL(req.url ?? '/', 'http://broker').searchParams.get('review') === 'detach';
      const reviews = connection.reviews
        ? statementHolds({
            reviews: deps.reviews, identity, connection: connection.name, sessionId: row.id, detach,
            noun: protocolOf(connection.type).holds ?? 'request', stopping: deps.stopping,
          })
        : undefined;
      const summary = await deps.protocols.of(connection).serve(stream, {
        connection, recorder, identity, logger: log, maskKey: deps.maskKey, signal: ending.signal, reviews, detachedReviews: detach,
        ...(typeof req.headers['x-hoopctl-client-key'] === 'string' ? { clientKey: req.headers['x-hoopctl-client-key'] } : {}),
      });
      await deps.sessions.close(row.id, recorder, {
        status: summary.outcome, statementCount: summary.statementCount, errorCount: summary.errorCount,
        ...(summary.error ? { error: summary.error } : {}), durationMs: Date.now() - started,
      });
      log.info({ outcome: summary.outcome, statements: summary.statementCount }, 'session closed');
    } catch (e) {
      logger.error({ err: errorMessage(e), session: sessionId }, 'session failed');
    } finally {
      limits?.();
      if (sessionId) deps.live.delete(sessionId);
      clearInterval(keepalive);
      streams.delete(stream);
      stream.destroy();
      if (ws.readyState === ws.OPEN) ws.close(1000);
    }
  }

  return {
    async close() {
      // Tell each session's client why it ends (FATAL), give them a moment, then cut what is left.
      deps.live.endWhere(() => true, 'the broker is stopping');
      await Promise.race([Promise.allSettled([...running]), delay(2000)]);
      for (const s of streams) s.destroy();
      wss.close();
      await Promise.race([Promise.allSettled([...running]), delay(5000)]);
    },
  };
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
