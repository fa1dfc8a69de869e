import type { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Identity } from '../api/identity.js';
import type { Review } from '../api/review.js';
import { errorMessage } from '../lib/errors.js';
import type { MaskKey } from '../policy/masking.js';
import type { Admission } from './admission.js';
import type { Connection } from './config.js';
import { enforceSessionLimits, type LiveSessionRegistry } from './live-sessions.js';
import { protocolOf, type ProtocolRuntimes } from './protocols/registry.js';
import type { ReviewService } from './reviews/review-service.js';
import { statementHolds } from './reviews/statement-holds.js';
import type { SessionService } from './session-service.js';

export interface SessionRunnerDeps {
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

export interface AdmittedSession {
  identity: Identity;
  connection: Connection;
  grant?: Review;
  clientAddr: string;
  /** What the client says of itself (user agent, peer, an agent's front door and MCP client), for the open event. */
  client: Record<string, unknown>;
  /** Held statements end at once with their review id instead of waiting. */
  detach: boolean;
  /** The reason the client stated (an agent's), kept with any review the session files. */
  reason?: string;
  /** An OpenSSH public key the tunnel's owner requires of the clients it carries (ssh; see ProtocolSession.clientKey). */
  clientKey?: string;
  /** Emits `message` whenever the client sends something (idle limits). */
  activity: EventEmitter;
  /** Its cancels carry no token (the PostgreSQL front door): the key alone may cancel (see SessionContext). */
  cancelKeyAlone?: boolean;
}

/** A session row and its recorder, written to the store before the client's stream is taken over. */
export type OpenedSession = Awaited<ReturnType<SessionService['open']>>;

/**
 * Records an admitted session as open. A tunnel does this before its WebSocket handshake completes, so a store that
 * takes no writes is a refusal the client reads (HTTP 503 with the reason), never a tunnel that opens and then
 * carries nothing it could record.
 */
export function openSession(deps: Pick<SessionRunnerDeps, 'sessions'>, s: Pick<AdmittedSession, 'identity' | 'connection' | 'clientAddr' | 'client'>): Promise<OpenedSession> {
  return deps.sessions.open(s.identity, s.connection, s.clientAddr, s.client);
}

/**
 * One admitted session from open to close, whichever front door brought it (a tunnel's WebSocket, an MCP call on the
 * broker's /mcp): the session row and its recorder, the live registry (locks and admins can end it), its limits, its
 * review holds, then the connection type's module serving `stream` until it ends, and the close record.
 */
export async function runSession(deps: SessionRunnerDeps, stream: Duplex, s: AdmittedSession, opened?: OpenedSession): Promise<void> {
  const { identity, connection, grant } = s;
  const started = opened?.row.startedAt ?? Date.now();
  let sessionId: string | undefined;
  let limits: (() => void) | undefined;
  try {
    const { row, recorder } = opened ?? (await openSession(deps, s));
    sessionId = row.id;
    const log = deps.logger.child({ session: row.id, connection: connection.name, subject: identity.subject });
    const ending = new AbortController();
    deps.live.add(row.id, { recorder, identity, connection, grantId: grant?.id, end: (reason) => ending.abort(reason) });
    if (grant) await recorder.record('grant', { review: grant.id, until: grant.grantExpiresAt });
    const sessionLimits = deps.admission.limitsOf(connection);
    // The latest the session may end (its duration cap, its token when the session ends with it): a per-session
    // database role is valid until then.
    const endsAt = Math.min(sessionLimits.maxDuration ? started + sessionLimits.maxDuration : Infinity, sessionLimits.endWithToken ? identity.expiresAt : Infinity);
    limits = enforceSessionLimits(s.activity, sessionLimits, identity.expiresAt, (reason) => {
      void recorder.record('ended', { by: 'broker', reason }).catch(() => undefined);
      ending.abort(reason);
    });
    log.info('session opened');
    const reviews = connection.reviews
      ? statementHolds({
          reviews: deps.reviews, identity, connection: connection.name, sessionId: row.id, detach: s.detach,
          noun: protocolOf(connection.type).holds ?? 'request', stopping: deps.stopping, reason: s.reason,
        })
      : undefined;
    const summary = await deps.protocols.of(connection).serve(stream, {
      connection, recorder, identity, logger: log, maskKey: deps.maskKey, signal: ending.signal, reviews, detachedReviews: s.detach,
      ...(Number.isFinite(endsAt) ? { endsAt } : {}),
      ...(s.clientKey ? { clientKey: s.clientKey } : {}),
      ...(s.cancelKeyAlone ? { cancelKeyAlone: true } : {}),
    });
    await deps.sessions.close(row.id, recorder, {
      status: summary.outcome, statementCount: summary.statementCount, errorCount: summary.errorCount,
      ...(summary.error ? { error: summary.error } : {}), durationMs: Date.now() - started,
    });
    log.info({ outcome: summary.outcome, statements: summary.statementCount }, 'session closed');
  } catch (e) {
    deps.logger.error({ err: errorMessage(e), session: sessionId }, 'session failed');
  } finally {
    limits?.();
    if (sessionId) deps.live.delete(sessionId);
  }
}
