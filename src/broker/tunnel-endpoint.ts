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
import type { StreamRecorder } from './recording/stream-recorder.js';
import type { SessionRow } from './store/store.js';
import { storeUnavailable } from './store/store-errors.js';

/** A session recorded as open before its tunnel's handshake completes. */
type OpenedSession = { row: SessionRow; recorder: StreamRecorder; req: IncomingMessage };

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
    (async () => {
      const identity = await deps.authenticate(req);
      const { connection, grant, release } = await deps.admission.admitSession(identity, m[1]!, req);
      // The session is in the store before the tunnel opens: a store that takes no writes is a refusal the client
      // reads (HTTP 503 with the reason), never a tunnel that opens and then carries nothing it could record.
      let opened: OpenedSession;
      try {
        const client = { agent: req.headers['user-agent'], peer: req.headers['x-hoopctl-peer'] };
        opened = { ...(await deps.sessions.open(identity, connection, clientAddress(req), client)), req };
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
      wss.handleUpgrade(req, socket, head, (ws) => {
        started = true;
        const session = runTunnel(ws, identity, connection, opened, grant);
        running.add(session);
        void session.finally(() => {
          running.delete(session);
          release();
        });
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

  async function runTunnel(ws: WebSocket, identity: Identity, connection: Connection, opened: OpenedSession, grant?: Review): Promise<void> {
    const req = opened.req;
    const started = opened.row.startedAt;
    const stream = createWebSocketStream(ws);
    stream.on('error', () => undefined);
    streams.add(stream);
    const keepalive = setInterval(() => ws.ping(), 30_000);
    const { row, recorder } = opened;
    const sessionId = row.id;
    let limits: (() => void) | undefined;
    try {
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
      deps.live.delete(sessionId);
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

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
