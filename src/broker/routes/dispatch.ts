import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Identity } from '../../api/identity.js';
import type { AuthenticateRequest } from '../auth/request-auth.js';
import { HoopError } from '../../lib/errors.js';
import { clientAddress, errors } from '../http-util.js';
import { matchRoute, type AuthenticatedCall, type RouteCall, type RouteHandlers, type RouteSpec } from './route-table.js';

export interface DispatchDeps {
  handlers: RouteHandlers;
  authenticate: AuthenticateRequest;
  isAuditor(identity: Identity): boolean;
  isAdmin(identity: Identity): boolean;
  /** Records a broker-wide audit event. */
  audit(type: string, data: Record<string, unknown>): Promise<void>;
}

/**
 * Serves a request from the route table: find the route, verify the token unless the route is public, apply its
 * gate, then run its handler. Anything under /api/v1/ that is no route needs a valid token too, so an
 * unauthenticated caller cannot probe which paths exist. Every 403 the API answers, from the gate or from a handler
 * (not an approver, one's own request, a connection one may not open), is an `access-denied` audit event.
 */
export function createDispatcher(deps: DispatchDeps): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  return async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://broker');
    const match = matchRoute(req.method ?? 'GET', url.pathname);
    if (!match) {
      if (url.pathname.startsWith('/api/v1/')) await deps.authenticate(req);
      throw errors.notFound(`${req.method} ${url.pathname}`);
    }
    const call: RouteCall = { req, res, url, params: match.params };
    const handler = deps.handlers[match.id] as (call: RouteCall | AuthenticatedCall) => Promise<void> | void;
    if (match.spec.access === 'public') return handler(call);
    const identity = await deps.authenticate(req);
    try {
      gate(deps, match.spec, identity);
      return await handler({ ...call, identity });
    } catch (e) {
      if (e instanceof HoopError && e.status === 403) {
        await deps.audit('access-denied', {
          route: match.id, method: match.spec.method, path: url.pathname, subject: identity.subject, issuer: identity.issuer,
          code: e.code, reason: e.message, clientAddr: clientAddress(req),
        });
      }
      throw e;
    }
  };
}

function gate(deps: DispatchDeps, spec: RouteSpec, identity: Identity): void {
  const what = spec.what ?? `${spec.method} ${spec.path}`;
  switch (spec.access) {
    case 'auditor':
      if (!deps.isAuditor(identity)) throw errors.denied(`only members of the audit groups may ${what}`);
      return;
    case 'admin':
      if (!deps.isAdmin(identity)) throw errors.denied(`only members of the admin groups may ${what}`);
      return;
    case 'admin-or-auditor':
      if (!deps.isAdmin(identity) && !deps.isAuditor(identity)) throw errors.denied(`only admins and auditors may ${what}`);
      return;
    default:
      return;
  }
}
