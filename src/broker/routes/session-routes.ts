import { sameIdentity, type Identity } from '../../api/identity.js';
import { HoopError } from '../../lib/errors.js';
import { errors, sendJson } from '../http-util.js';
import { followSession } from '../live-sessions.js';
import type { CheckpointSigner } from '../recording/checkpoints.js';
import { AUDIT_STREAM } from '../session-service.js';
import type { SessionRow, Store } from '../store/store.js';
import type { RouteHandlers } from './route-table.js';

export interface SessionRouteContext {
  store: Store;
  signer: CheckpointSigner;
  isAuditor(identity: Identity): boolean;
}

const STATUSES = ['open', 'closed', 'refused', 'failed'];

/**
 * Recorded sessions (an auditor sees everyone's, others their own), one session's events or their live stream, the
 * audit stream and the key that signs it.
 */
export function sessionHandlers(
  ctx: SessionRouteContext,
): Pick<RouteHandlers, 'listSessions' | 'getSession' | 'watchSession' | 'auditKey' | 'auditEvents'> {
  const { store } = ctx;
  return {
    async listSessions({ res, url, identity }) {
      const limit = Math.min(Number(url.searchParams.get('limit') ?? 50) || 50, 1000);
      const status = url.searchParams.get('status') ?? undefined;
      if (status !== undefined && !STATUSES.includes(status)) {
        throw new HoopError('status must be open, closed, refused or failed', { code: 'BAD_REQUEST', status: 400 });
      }
      const auditor = ctx.isAuditor(identity);
      const list = await store.listSessions({
        subject: auditor ? (url.searchParams.get('subject') ?? undefined) : identity.subject,
        connection: url.searchParams.get('connection') ?? undefined,
        status: status as SessionRow['status'] | undefined,
        claims: claimFilter(url.searchParams.getAll('claim')),
        via: viaFilter(url.searchParams.get('via')),
        limit,
      });
      // The store keys by subject; the same subject from another issuer is someone else.
      sendJson(res, 200, { sessions: auditor ? list : list.filter((s) => sameIdentity(s.identity, identity)) });
    },
    async watchSession({ req, res, url, identity, params }) {
      const session = await visibleSession(ctx, identity, params.id!);
      followSession(store, req, res, session.id, Number(url.searchParams.get('after') ?? 0) || 0);
    },
    async getSession({ res, identity, params }) {
      const session = await visibleSession(ctx, identity, params.id!);
      sendJson(res, 200, { session, events: await store.listEvents(session.id) });
    },
    auditKey({ res }) {
      sendJson(res, 200, { algorithm: 'ed25519', keyId: ctx.signer.keyId, publicKey: ctx.signer.publicKeyPem });
    },
    async auditEvents({ res, url }) {
      const after = Number(url.searchParams.get('after') ?? 0) || 0;
      sendJson(res, 200, { events: await store.listEvents(AUDIT_STREAM, { afterSeq: after, limit: 1000 }) });
    },
  };
}

/** A session the identity may see: its own, or any for an auditor; anything else is "not found". */
async function visibleSession(ctx: SessionRouteContext, identity: Identity, id: string): Promise<SessionRow> {
  const session = await ctx.store.getSession(id);
  if (!session || (!ctx.isAuditor(identity) && !sameIdentity(session.identity, identity))) throw errors.notFound(`session ${id}`);
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
