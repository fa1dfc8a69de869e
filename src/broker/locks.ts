/**
 * Incident response: locking an identity and ending a live session. A lock (by subject, or by OAuth client id for a
 * service account) refuses every new session of that identity until it expires or is lifted, and ends the ones
 * running now. Only members of `admin.groups` may lock, lift or end; auditors may list locks. Every action is an
 * audit event, and an ended session records who ended it and why.
 */
import { randomBytes } from 'node:crypto';
import type { Identity } from '../api/identity.js';
import type { IdentityLock, Store } from './store/store.js';
import { HoopError } from '../lib/errors.js';
import { parseDuration } from '../lib/duration.js';
import { optionalString, readJsonBody, sendJson } from './http-util.js';
import type { RouteHandlers } from './routes/route-table.js';

export function lockMatches(lock: IdentityLock, identity: Identity): boolean {
  return 'subject' in lock.target ? lock.target.subject === identity.subject : identity.kind === 'service' && lock.target.clientId === identity.clientId;
}

export function describeLockTarget(lock: IdentityLock): string {
  return 'subject' in lock.target ? `identity ${lock.target.subject}` : `client ${lock.target.clientId}`;
}

export interface LockRouteContext {
  store: Store;
  audit(type: string, data: Record<string, unknown>): Promise<void>;
  /** Ends the live sessions a new lock covers; returns their ids. */
  endLockedSessions(lock: IdentityLock): string[];
  /** Ends one live session on this broker; false when it is not running here. */
  endSession(id: string, reason: string, by: Identity): Promise<boolean>;
}

/** The lock that keeps `identity` out now, if any. */
export async function lockFor(store: Store, identity: Identity, at = Date.now()): Promise<IdentityLock | undefined> {
  return (await store.activeLocks(at)).find((l) => lockMatches(l, identity));
}

export function lockedError(lock: IdentityLock): HoopError {
  const until = lock.expiresAt ? ` until ${new Date(lock.expiresAt).toISOString()}` : '';
  return new HoopError(`${describeLockTarget(lock)} is locked by ${lock.createdBy}${until}: ${lock.reason}`, {
    code: 'IDENTITY_LOCKED',
    status: 403,
    hint: `an admin lifts it with \`hoopctl unlock ${lock.id}\``,
  });
}

/** Locks and session ends; the route table lets only admins in (auditors may list locks). */
export function lockHandlers(ctx: LockRouteContext): Pick<RouteHandlers, 'listLocks' | 'createLock' | 'liftLock' | 'endSession'> {
  return {
    async listLocks({ res }) {
      sendJson(res, 200, { locks: await ctx.store.activeLocks(Date.now()) });
    },
    async createLock({ req, res, identity: who }) {
      const body = await readJsonBody(req);
      const subject = optionalString(body, 'subject');
      const clientId = optionalString(body, 'clientId');
      const reason = optionalString(body, 'reason')?.trim();
      const durationText = optionalString(body, 'duration');
      if ((subject === undefined) === (clientId === undefined)) throw new HoopError('give exactly one of subject or clientId', { code: 'BAD_REQUEST', status: 400 });
      if (!reason) throw new HoopError('a lock needs a reason', { code: 'BAD_REQUEST', status: 400 });
      if (subject === who.subject) throw new HoopError('you cannot lock yourself out', { code: 'BAD_REQUEST', status: 400 });
      let durationMs: number | undefined;
      if (durationText !== undefined) {
        try {
          durationMs = parseDuration(durationText);
        } catch (e) {
          throw new HoopError(`duration: ${(e as Error).message}`, { code: 'BAD_REQUEST', status: 400 });
        }
      }
      const now = Date.now();
      const lock: IdentityLock = {
        id: `lock_${randomBytes(5).toString('hex')}`,
        target: subject !== undefined ? { subject } : { clientId: clientId! },
        reason, createdBy: who.subject, createdAt: now, ...(durationMs ? { expiresAt: now + durationMs } : {}),
      };
      await ctx.store.createLock(lock);
      const ended = ctx.endLockedSessions(lock);
      await ctx.audit('lock-created', { lock: lock.id, target: lock.target, reason, by: who.subject, ...(lock.expiresAt ? { expiresAt: lock.expiresAt } : {}), endedSessions: ended });
      sendJson(res, 201, { lock, endedSessions: ended });
    },
    async liftLock({ res, identity: who, params }) {
      const lock = await ctx.store.liftLock(params.id!, who.subject, Date.now());
      if (!lock) throw new HoopError(`lock ${params.id} not found or already lifted`, { code: 'NOT_FOUND', status: 404 });
      await ctx.audit('lock-lifted', { lock: lock.id, target: lock.target, by: who.subject });
      sendJson(res, 200, { lock });
    },
    async endSession({ req, res, identity: who, params }) {
      const body = await readJsonBody(req);
      const reason = optionalString(body, 'reason')?.trim();
      if (!reason) throw new HoopError('ending a session needs a reason', { code: 'BAD_REQUEST', status: 400 });
      const id = params.id!;
      if (!(await ctx.endSession(id, reason, who))) throw new HoopError(`session ${id} is not running on this broker`, { code: 'NOT_FOUND', status: 404 });
      await ctx.audit('session-ended', { session: id, reason, by: who.subject });
      sendJson(res, 200, { ended: id });
    },
  };
}
