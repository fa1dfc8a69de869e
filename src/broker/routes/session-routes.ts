import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Identity } from '../../api/identity.js';
import { HoopError } from '../../lib/errors.js';
import { errors, sendJson } from '../http-util.js';
import { followSession } from '../live-sessions.js';
import type { CheckpointSigner } from '../recording/checkpoints.js';
import { AUDIT_STREAM } from '../session-service.js';
import type { SessionRow, Store } from '../store/store.js';

export interface SessionRouteContext {
  store: Store;
  signer: CheckpointSigner;
  isAuditor(identity: Identity): boolean;
}

const STATUSES = ['open', 'closed', 'refused', 'failed'];

/**
 * Recorded sessions (an auditor sees everyone's, others their own), one session's events or their live stream, the
 * audit stream and the key that signs it. Returns false when the request is not one of these.
 */
export async function routeSessions(ctx: SessionRouteContext, req: IncomingMessage, res: ServerResponse, identity: Identity, url: URL): Promise<boolean> {
  if (req.method !== 'GET') return false;
  const { store } = ctx;
  const path = url.pathname;
  if (path === '/api/v1/sessions') {
    const limit = Math.min(Number(url.searchParams.get('limit') ?? 50) || 50, 1000);
    const status = url.searchParams.get('status') ?? undefined;
    if (status !== undefined && !STATUSES.includes(status)) {
      throw new HoopError('status must be open, closed, refused or failed', { code: 'BAD_REQUEST', status: 400 });
    }
    const list = await store.listSessions({
      subject: ctx.isAuditor(identity) ? (url.searchParams.get('subject') ?? undefined) : identity.subject,
      connection: url.searchParams.get('connection') ?? undefined,
      status: status as SessionRow['status'] | undefined,
      claims: claimFilter(url.searchParams.getAll('claim')),
      via: viaFilter(url.searchParams.get('via')),
      limit,
    });
    sendJson(res, 200, { sessions: list });
    return true;
  }
  let m = /^\/api\/v1\/sessions\/([^/]+)\/stream$/.exec(path);
  if (m) {
    const session = await visibleSession(ctx, identity, decodeURIComponent(m[1]!));
    followSession(store, req, res, session.id, Number(url.searchParams.get('after') ?? 0) || 0);
    return true;
  }
  m = /^\/api\/v1\/sessions\/([^/]+)$/.exec(path);
  if (m) {
    const session = await visibleSession(ctx, identity, decodeURIComponent(m[1]!));
    sendJson(res, 200, { session, events: await store.listEvents(session.id) });
    return true;
  }
  if (path === '/api/v1/audit/key') {
    sendJson(res, 200, { algorithm: 'ed25519', keyId: ctx.signer.keyId, publicKey: ctx.signer.publicKeyPem });
    return true;
  }
  if (path === '/api/v1/audit') {
    if (!ctx.isAuditor(identity)) throw errors.denied('only members of the audit groups may read the audit stream');
    const after = Number(url.searchParams.get('after') ?? 0) || 0;
    sendJson(res, 200, { events: await store.listEvents(AUDIT_STREAM, { afterSeq: after, limit: 1000 }) });
    return true;
  }
  return false;
}

/** A session the identity may see: its own, or any for an auditor; anything else is "not found". */
async function visibleSession(ctx: SessionRouteContext, identity: Identity, id: string): Promise<SessionRow> {
  const session = await ctx.store.getSession(id);
  if (!session || (!ctx.isAuditor(identity) && session.identity.subject !== identity.subject)) throw errors.notFound(`session ${id}`);
  return session;
}

/** `?via=mcp`: the only front door a session names today; anything else is a 400, not an empty list. */
function viaFilter(via: string | null): string | undefined {
  if (via === null) return undefined;
  if (via !== 'mcp') throw new HoopError(`via must be mcp, got "${via}"`, { code: 'BAD_REQUEST', status: 400 });
  return via;
}

/** `?claim=run_id=4242` filters → `{ run_id: '4242' }`; a malformed one is a 400. */
function claimFilter(pairs: string[]): Record<string, string> | undefined {
  if (pairs.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const m = /^([A-Za-z0-9_]+)=(.*)$/.exec(p);
    if (!m) throw new HoopError(`claim filter must be NAME=VALUE (letters, digits, _), got "${p}"`, { code: 'BAD_REQUEST', status: 400 });
    out[m[1]!] = m[2]!;
  }
  return out;
}
