import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { Identity } from '../../api/identity.js';
import { HoopError } from '../../lib/errors.js';
import { bearerToken, clientAddress, errors } from '../http-util.js';
import type { BrokerMetrics } from '../metrics.js';
import type { SessionService } from '../session-service.js';
import type { createTokenVerifier } from './verify-token.js';

export type AuthenticateRequest = (req: IncomingMessage) => Promise<Identity>;
/** The identity behind a token that arrived some other way than a bearer header (the PostgreSQL front door's password). */
export type AuthenticateToken = (token: string | undefined, from: { clientAddr: string; path: string }) => Promise<Identity>;

/**
 * The identity behind a request's bearer token, fully verified; a missing or rejected token is a 401 with a hint,
 * counted and recorded in the audit stream (every rejection is an audit event).
 */
export function requestAuthenticator(deps: {
  verifier: ReturnType<typeof createTokenVerifier>;
  sessions: SessionService;
  metrics: BrokerMetrics;
  logger: Logger;
}): AuthenticateRequest {
  const byToken = tokenAuthenticator(deps);
  return (req) => byToken(bearerToken(req), { clientAddr: clientAddress(req), path: req.url?.split('?')[0] ?? '' });
}

/**
 * The same verification, counting and `token-rejected` audit as a request's bearer token, for a token given some
 * other way. Never logs or records the token itself.
 */
export function tokenAuthenticator(deps: {
  verifier: ReturnType<typeof createTokenVerifier>;
  sessions: SessionService;
  metrics: BrokerMetrics;
  logger: Logger;
}): AuthenticateToken {
  return async (token, from) => {
    try {
      if (!token) throw errors.missingToken();
      return await deps.verifier.verify(token);
    } catch (e) {
      const err = e instanceof HoopError ? e : new HoopError('access token rejected', { code: 'TOKEN_INVALID', status: 401, cause: e });
      deps.metrics.tokenRejections.inc({ code: err.code });
      await deps.sessions.audit('token-rejected', { code: err.code, reason: err.message, clientAddr: from.clientAddr, path: from.path });
      deps.logger.info({ code: err.code, clientAddr: from.clientAddr }, 'access token rejected');
      throw new HoopError(err.message, { code: err.code, status: 401, hint: err.hint ?? 'run `hoopctl login` to get a fresh token' });
    }
  };
}
