import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Identity } from '../../api/identity.js';

/**
 * Every HTTP route the broker answers, declared in one place: method, path pattern and who may call it. The broker
 * dispatches from this table (dispatch.ts), each area supplies the handlers of its routes, and the authorization
 * matrix test reads the same table, so a route cannot ship without a handler (the type below) nor without its row in
 * the matrix (the test). The tunnel's WebSocket upgrade is not a request route; tunnel-endpoint.ts serves it.
 *
 * `access` is the gate applied before the handler runs:
 * - `public`: no token needed (liveness, where to log in);
 * - `identity`: any verified token; the handler narrows what the caller sees or may do (their own sessions,
 *   reviews of connections they approve, connections they may open);
 * - `auditor`, `admin`, `admin-or-auditor`: members of `audit.groups` / `admin.groups` only, refused with 403
 *   naming `what` they may not do.
 */
export type RouteAccess = 'public' | 'identity' | 'auditor' | 'admin' | 'admin-or-auditor';

export interface RouteSpec {
  method: 'GET' | 'POST';
  /** Literal segments and `:param` segments; a param matches `params[name]` (default: one non-empty segment). */
  path: string;
  access: RouteAccess;
  params?: Readonly<Record<string, RegExp>>;
  /** For gated routes: the refusal reads "only members of the admin groups may <what>". */
  what?: string;
}

const REVIEW_ID = /^rev_[0-9a-f]+$/;
const LOCK_ID = /^lock_[0-9a-f]+$/;

export const API_ROUTES = {
  health: { method: 'GET', path: '/healthz', access: 'public' },
  /** For a load balancer: 200 while the store answers and the broker is not draining (SIGTERM), else 503 and why. */
  ready: { method: 'GET', path: '/readyz', access: 'public' },
  authConfig: { method: 'GET', path: '/api/v1/auth/config', access: 'public' },
  whoami: { method: 'GET', path: '/api/v1/whoami', access: 'identity' },
  listConnections: { method: 'GET', path: '/api/v1/connections', access: 'identity' },
  getConnection: { method: 'GET', path: '/api/v1/connections/:name', access: 'identity' },
  rotateCredentials: { method: 'POST', path: '/api/v1/connections/:name/rotate', access: 'admin', what: 'rotate credentials' },
  requestAccess: { method: 'POST', path: '/api/v1/connections/:name/access-requests', access: 'identity' },
  listReviews: { method: 'GET', path: '/api/v1/reviews', access: 'identity' },
  streamReviews: { method: 'GET', path: '/api/v1/reviews/stream', access: 'identity' },
  getReview: { method: 'GET', path: '/api/v1/reviews/:id', access: 'identity', params: { id: REVIEW_ID } },
  approveReview: { method: 'POST', path: '/api/v1/reviews/:id/approve', access: 'identity', params: { id: REVIEW_ID } },
  rejectReview: { method: 'POST', path: '/api/v1/reviews/:id/reject', access: 'identity', params: { id: REVIEW_ID } },
  revokeGrant: { method: 'POST', path: '/api/v1/reviews/:id/revoke', access: 'identity', params: { id: REVIEW_ID } },
  withdrawReview: { method: 'POST', path: '/api/v1/reviews/:id/withdraw', access: 'identity', params: { id: REVIEW_ID } },
  listSessions: { method: 'GET', path: '/api/v1/sessions', access: 'identity' },
  getSession: { method: 'GET', path: '/api/v1/sessions/:id', access: 'identity' },
  watchSession: { method: 'GET', path: '/api/v1/sessions/:id/stream', access: 'identity' },
  endSession: { method: 'POST', path: '/api/v1/sessions/:id/end', access: 'admin', what: 'end sessions' },
  auditEvents: { method: 'GET', path: '/api/v1/audit', access: 'auditor', what: 'read the audit stream' },
  auditKey: { method: 'GET', path: '/api/v1/audit/key', access: 'identity' },
  listLocks: { method: 'GET', path: '/api/v1/locks', access: 'admin-or-auditor', what: 'list locks' },
  createLock: { method: 'POST', path: '/api/v1/locks', access: 'admin', what: 'lock identities' },
  liftLock: { method: 'POST', path: '/api/v1/locks/:id/lift', access: 'admin', what: 'lift locks', params: { id: LOCK_ID } },
} as const satisfies Record<string, RouteSpec>;

export type RouteId = keyof typeof API_ROUTES;

/** What a handler gets: the request, its URL and path params, and (past the gate) the verified caller. */
export interface RouteCall {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  params: Record<string, string>;
}
export interface AuthenticatedCall extends RouteCall {
  identity: Identity;
}

type HandlerFor<A extends RouteAccess> = (call: A extends 'public' ? RouteCall : AuthenticatedCall) => Promise<void> | void;

/** One handler per route; a route without one does not compile. */
export type RouteHandlers = { [K in RouteId]: HandlerFor<(typeof API_ROUTES)[K]['access']> };

export interface RouteMatch {
  id: RouteId;
  spec: RouteSpec;
  params: Record<string, string>;
}

/**
 * The route for a method and path. Literal segments win over params (`/reviews/stream` is not review "stream"),
 * whatever order the table lists them in. Params are percent-decoded; one that does not decode does not match.
 */
export function matchRoute(method: string, pathname: string, routes: Readonly<Record<string, RouteSpec>> = API_ROUTES): RouteMatch | undefined {
  const segments = pathname.split('/');
  let best: { match: RouteMatch; literals: number } | undefined;
  for (const [id, spec] of Object.entries(routes)) {
    if (spec.method !== method) continue;
    const pattern = spec.path.split('/');
    if (pattern.length !== segments.length) continue;
    const params: Record<string, string> = {};
    let literals = 0;
    let ok = true;
    for (let i = 0; i < pattern.length && ok; i++) {
      const p = pattern[i]!;
      const s = segments[i]!;
      if (!p.startsWith(':')) {
        ok = p === s;
        literals++;
        continue;
      }
      const value = decodeSegment(s);
      const name = p.slice(1);
      ok = value !== undefined && value !== '' && (spec.params?.[name]?.test(value) ?? true);
      if (ok) params[name] = value!;
    }
    if (ok && (!best || literals > best.literals)) best = { match: { id: id as RouteId, spec, params }, literals };
  }
  return best?.match;
}

function decodeSegment(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}
