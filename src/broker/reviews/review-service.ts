import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { Connection } from '../config.js';
import { sameIdentity, type Identity } from '../../api/identity.js';
import type { Store } from '../store/store.js';
import type { Signal } from '../store/signal-bus.js';
import { HoopError } from '../../lib/errors.js';
import type { Review, ReviewDecision, ReviewStatus } from '../../api/review.js';

export function newReviewId(): string {
  return `rev_${randomBytes(5).toString('hex')}`;
}

const final = (status: ReviewStatus) => status !== 'pending';

export interface ReviewEvents {
  change: [Review];
  /** An access grant stopped holding (expired or revoked): sessions opened under it must end. */
  'grant-ended': [Review];
}

/** Records a review transition in the audit stream and, when the review belongs to one, the session's stream. */
export type ReviewAudit = (review: Review, transition: string, by?: { subject: string; name: string }, reason?: string) => Promise<void>;

/**
 * Just-in-time approval: creates reviews, enforces who may decide them, expires them, and wakes whoever waits
 * for a decision. The store is the source of truth (compare-and-set on status), so a restart loses nothing:
 * grants still hold and expire on time; statements held by a broker that died are marked orphaned.
 */
export class ReviewService extends EventEmitter<ReviewEvents> {
  readonly #store: Store;
  readonly #connections: Map<string, Connection>;
  readonly #audit: ReviewAudit;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #now: () => number;
  /** Tells the other replicas (set once the signal bus is up); nothing to tell with one broker. */
  #publish: (s: Signal) => void = () => undefined;
  /** Reviews a client of this replica waits on: re-read on resync. */
  readonly #waited = new Set<string>();

  constructor(store: Store, connections: Connection[], audit: ReviewAudit, now: () => number = Date.now) {
    super();
    this.#store = store;
    this.#connections = new Map(connections.map((c) => [c.name, c]));
    this.#audit = audit;
    this.#now = now;
  }

  /** A reloaded config: reviews from now on follow its connections' approver rules. */
  setConnections(connections: Connection[]): void {
    this.#connections.clear();
    for (const c of connections) this.#connections.set(c.name, c);
  }

  /** Picks up where a previous broker run left off. */
  async start(): Promise<void> {
    const open = await this.#store.listReviews({ status: ['pending', 'approved'], limit: 100_000 });
    for (const review of open) {
      if (review.status === 'pending' && review.kind === 'statement' && review.sessionId && (await this.#store.getSession(review.sessionId))?.status !== 'open') {
        // Its session (and the client waiting on it) died with the broker that held it. A session still open is
        // another live replica's: its statement stays held.
        await this.#transition(review, 'pending', { status: 'orphaned', decidedAt: this.#now() }, 'orphaned', undefined, 'held by a broker that stopped');
      } else {
        this.#schedule(review);
      }
    }
  }

  /** From now on, every change made here is also published to the other replicas. */
  publishTo(publish: (s: Signal) => void): void {
    this.#publish = publish;
  }

  /** Another replica changed a review: re-read it from the store and act as if the change were made here. */
  async applyRemote(s: Extract<Signal, { kind: 'review' | 'grant-ended' }>): Promise<Review | undefined> {
    const review = await this.#store.getReview(s.id);
    if (!review) return undefined;
    this.#schedule(review);
    this.emit('change', review);
    if (s.kind === 'grant-ended' || (review.kind === 'access' && review.status === 'revoked')) this.emit('grant-ended', review);
    return review;
  }

  /**
   * After a gap in signals: re-reads every review a client here waits on (a decision made meanwhile releases it) and
   * returns those decided (the caller records each in the session that held it, as the signal would have) and the
   * access grants that stopped holding (the caller ends sessions still riding them).
   */
  async resync(): Promise<{ decided: Review[]; endedGrants: Review[] }> {
    const decided: Review[] = [];
    for (const id of [...this.#waited]) {
      const review = await this.#store.getReview(id);
      if (review && final(review.status)) {
        decided.push(review);
        this.emit('change', review);
      }
    }
    const now = this.#now();
    const grants = await this.#store.listReviews({ kind: 'access', status: ['approved', 'revoked', 'expired'], limit: 100_000 });
    return { decided, endedGrants: grants.filter((g) => g.status !== 'approved' || (g.grantExpiresAt ?? 0) <= now) };
  }

  #changed(review: Review): void {
    this.emit('change', review);
    this.#publish({ kind: 'review', id: review.id });
  }

  #grantEnded(review: Review): void {
    this.emit('grant-ended', review);
    this.#publish({ kind: 'grant-ended', id: review.id });
  }

  /** Orphans the pending statement reviews held by these sessions (their replica was declared lost). */
  async orphanHeldBy(sessionIds: ReadonlySet<string>, reason: string): Promise<number> {
    let orphaned = 0;
    for (const review of await this.#store.listReviews({ status: ['pending'], kind: 'statement', limit: 100_000 })) {
      if (!review.sessionId || !sessionIds.has(review.sessionId)) continue;
      // Compare-and-set: a decision or another sweeper that got there first wins.
      if (await this.#transition(review, 'pending', { status: 'orphaned', decidedAt: this.#now() }, 'orphaned', undefined, reason)) orphaned++;
    }
    return orphaned;
  }

  close(): void {
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
  }

  get(id: string): Promise<Review | undefined> {
    return this.#store.getReview(id);
  }

  list(filter: Parameters<Store['listReviews']>[0]): Promise<Review[]> {
    return this.#store.listReviews(filter);
  }

  /** May `who` decide reviews of this connection (of this kind)? */
  isApprover(who: Identity, review: Pick<Review, 'approverGroups'>): boolean {
    return who.groups.some((g) => review.approverGroups.includes(g));
  }

  async requestStatement(o: { requester: Identity; connection: string; sessionId?: string; statement: string; rule: string; detail?: string; reason?: string }): Promise<Review> {
    const c = this.#connection(o.connection);
    if (!c.reviews) throw new HoopError(`connection ${c.name} has no reviewers configured`, { code: 'REVIEW_UNAVAILABLE', status: 409 });
    const now = this.#now();
    const review: Review = {
      id: newReviewId(), kind: 'statement', connection: c.name, requester: o.requester, sessionId: o.sessionId,
      statement: o.statement, rule: o.rule, ...(o.detail ? { detail: o.detail } : {}), ...(o.reason ? { reason: o.reason } : {}), status: 'pending', approverGroups: c.reviews.groups, minApprovals: c.reviews.minApprovals,
      decisions: [], createdAt: now, expiresAt: now + c.reviews.timeout,
    };
    await this.#store.createReview(review);
    await this.#audit(review, 'requested', review.requester);
    this.#schedule(review);
    this.#changed(review);
    return review;
  }

  /**
   * An approved statement review for exactly this requester, connection and statement that has not run yet
   * (`exec --no-wait`, then rerun after approval). Consuming it is atomic: it runs once.
   */
  async consumeApproved(requester: Identity, connection: string, statement: string): Promise<Review | undefined> {
    const candidates = await this.#store.listReviews({ status: ['approved'], kind: 'statement', connection, requester: requester.subject });
    for (const r of candidates) {
      if (r.statement !== statement || r.consumedAt || !sameIdentity(r.requester, requester)) continue;
      const consumed = await this.#store.consumeReview(r.id, this.#now());
      if (consumed) {
        await this.#audit(consumed, 'consumed', requester);
        return consumed;
      }
    }
    return undefined;
  }

  async requestAccess(o: { requester: Identity; connection: string; reason?: string; durationMs?: number }): Promise<Review> {
    const c = this.#connection(o.connection);
    const approval = c.access.approval;
    if (!approval) throw new HoopError(`connection ${c.name} does not require approval`, { code: 'APPROVAL_NOT_REQUIRED', status: 409 });
    const reason = o.reason?.trim();
    if (approval.reason === 'required' && !reason) {
      throw new HoopError(`connection ${c.name} requires a reason for access`, { code: 'REASON_REQUIRED', status: 400, hint: 'pass --reason "INC-123: …"' });
    }
    const durationMs = o.durationMs ?? approval.maxDuration;
    if (durationMs <= 0 || durationMs > approval.maxDuration) {
      throw new HoopError(`requested duration must be between 1s and ${approval.maxDuration / 60_000} minutes`, { code: 'DURATION_TOO_LONG', status: 400 });
    }
    const now = this.#now();
    const review: Review = {
      id: newReviewId(), kind: 'access', connection: c.name, requester: o.requester, reason, durationMs, status: 'pending',
      approverGroups: approval.groups, minApprovals: approval.minApprovals, decisions: [], createdAt: now, expiresAt: now + approval.timeout,
    };
    await this.#store.createReview(review);
    await this.#audit(review, 'requested', review.requester, reason);
    this.#schedule(review);
    this.#changed(review);
    return review;
  }

  /** The grant under which `who` may open `connection` now, if any. */
  async activeGrant(who: Identity, connection: string): Promise<Review | undefined> {
    const now = this.#now();
    const grants = await this.#store.listReviews({ status: ['approved'], kind: 'access', connection, requester: who.subject });
    // Listed by subject; the same subject from another issuer is someone else and does not ride this grant.
    return grants.find((g) => (g.grantExpiresAt ?? 0) > now && sameIdentity(g.requester, who));
  }

  async decide(id: string, approver: Identity, action: 'approve' | 'reject', reason?: string): Promise<Review> {
    const review = await this.#require(id);
    if (review.status !== 'pending') throw new HoopError(`review ${id} is already ${review.status}`, { code: 'REVIEW_NOT_PENDING', status: 409 });
    if (review.requester.subject === approver.subject) {
      throw new HoopError(`you cannot decide your own request ${id}`, { code: 'SELF_APPROVAL', status: 403 });
    }
    if (!this.isApprover(approver, review)) {
      throw new HoopError(`${approver.name} is not an approver for ${review.connection} (approver groups: ${review.approverGroups.join(', ')})`, { code: 'NOT_APPROVER', status: 403 });
    }
    if (review.decisions.some((d) => d.subject === approver.subject)) {
      throw new HoopError(`you have already decided review ${id}`, { code: 'ALREADY_DECIDED', status: 409 });
    }
    const text = reason?.trim() || undefined;
    const c = this.#connections.get(review.connection);
    const reasonRequired = action === 'reject' || (review.kind === 'statement' ? c?.reviews?.reason === 'required' : false);
    if (reasonRequired && !text) throw new HoopError(`a reason is required to ${action} review ${id}`, { code: 'REASON_REQUIRED', status: 400 });
    const decision: ReviewDecision = { subject: approver.subject, name: approver.name, action, reason: text, at: this.#now() };
    const decisions = [...review.decisions, decision];
    const approvals = decisions.filter((d) => d.action === 'approve').length;
    let next: Partial<Review> = { decisions };
    let transition = action === 'approve' ? 'approval' : 'rejected';
    if (action === 'reject') next = { ...next, status: 'rejected', decidedAt: decision.at };
    else if (approvals >= review.minApprovals) {
      transition = 'approved';
      next = { ...next, status: 'approved', decidedAt: decision.at, ...(review.kind === 'access' ? { grantExpiresAt: decision.at + (review.durationMs ?? 0) } : {}) };
    }
    const updated = await this.#transition(review, 'pending', next, transition, approver, text);
    if (!updated) throw new HoopError(`review ${id} changed while you decided; look again`, { code: 'REVIEW_NOT_PENDING', status: 409 });
    return updated;
  }

  async revoke(id: string, approver: Identity, reason?: string): Promise<Review> {
    const review = await this.#require(id);
    if (review.kind !== 'access' || review.status !== 'approved' || (review.grantExpiresAt ?? 0) <= this.#now()) {
      throw new HoopError(`review ${id} is not an active access grant`, { code: 'NOT_ACTIVE_GRANT', status: 409 });
    }
    if (!this.isApprover(approver, review)) throw new HoopError(`${approver.name} is not an approver for ${review.connection}`, { code: 'NOT_APPROVER', status: 403 });
    const text = reason?.trim();
    if (!text) throw new HoopError('a reason is required to revoke a grant', { code: 'REASON_REQUIRED', status: 400 });
    const decision: ReviewDecision = { subject: approver.subject, name: approver.name, action: 'revoke', reason: text, at: this.#now() };
    const updated = await this.#transition(review, 'approved', { status: 'revoked', decisions: [...review.decisions, decision] }, 'revoked', approver, text);
    if (!updated) throw new HoopError(`review ${id} changed meanwhile; look again`, { code: 'REVIEW_NOT_PENDING', status: 409 });
    this.#grantEnded(updated);
    return updated;
  }

  /** The requester gave up (psql Ctrl-C, client gone). */
  async withdraw(id: string, reason: string): Promise<void> {
    const review = await this.#store.getReview(id);
    if (!review || review.status !== 'pending') return;
    await this.#transition(review, 'pending', { status: 'withdrawn', decidedAt: this.#now() }, 'withdrawn', review.requester, reason);
  }

  /** The requester withdraws their own pending review (`hoopctl withdraw`); nobody else may. */
  async withdrawByRequester(id: string, who: Identity, reason?: string): Promise<Review> {
    const review = await this.#store.getReview(id);
    if (!review || !sameIdentity(review.requester, who)) throw new HoopError(`no review ${id} of yours`, { code: 'NOT_FOUND', status: 404 });
    if (review.status !== 'pending') throw new HoopError(`review ${id} is ${review.status}, not pending`, { code: 'REVIEW_NOT_PENDING', status: 409 });
    await this.#transition(review, 'pending', { status: 'withdrawn', decidedAt: this.#now() }, 'withdrawn', who, reason?.trim() || 'withdrawn by the requester');
    const updated = await this.#store.getReview(id);
    if (!updated || updated.status !== 'withdrawn') throw new HoopError(`review ${id} changed meanwhile; look again`, { code: 'REVIEW_NOT_PENDING', status: 409 });
    return updated;
  }

  /** The broker holding it is stopping: the waiting client is about to lose its session. */
  async orphan(id: string, reason: string): Promise<void> {
    const review = await this.#store.getReview(id);
    if (!review || review.status !== 'pending') return;
    await this.#transition(review, 'pending', { status: 'orphaned', decidedAt: this.#now() }, 'orphaned', undefined, reason);
  }

  /** Resolves when the review leaves `pending` (or `signal` aborts, with the review as it is then). */
  waitForDecision(id: string, signal?: AbortSignal): Promise<Review> {
    return new Promise((resolve, reject) => {
      const onChange = (r: Review) => {
        if (r.id === id && final(r.status)) done(r);
      };
      const onAbort = () => {
        this.#store.getReview(id).then((r) => (r ? done(r) : reject(new Error(`review ${id} vanished`))), reject);
      };
      const done = (r: Review) => {
        this.#waited.delete(id);
        this.off('change', onChange);
        signal?.removeEventListener('abort', onAbort);
        resolve(r);
      };
      this.#waited.add(id);
      this.on('change', onChange);
      signal?.addEventListener('abort', onAbort, { once: true });
      // It may have been decided before we started listening.
      this.#store.getReview(id).then((r) => r && final(r.status) && done(r), reject);
    });
  }

  async #require(id: string): Promise<Review> {
    const review = await this.#store.getReview(id);
    if (!review) throw new HoopError(`no review ${id}`, { code: 'NOT_FOUND', status: 404 });
    return review;
  }

  #connection(name: string): Connection {
    const c = this.#connections.get(name);
    if (!c) throw new HoopError(`connection ${name} not found`, { code: 'NOT_FOUND', status: 404 });
    return c;
  }

  async #transition(review: Review, expected: ReviewStatus, patch: Partial<Review>, transition: string, by?: { subject: string; name: string }, reason?: string): Promise<Review | undefined> {
    const next: Review = { ...review, ...patch };
    if (!(await this.#store.replaceReview(next, expected))) return undefined;
    await this.#audit(next, transition, by, reason);
    this.#schedule(next);
    this.#changed(next);
    return next;
  }

  /** One timer per review: pending ones expire; approved access grants end. */
  #schedule(review: Review): void {
    const existing = this.#timers.get(review.id);
    if (existing) clearTimeout(existing);
    this.#timers.delete(review.id);
    let at: number | undefined;
    if (review.status === 'pending') at = review.expiresAt;
    else if (review.status === 'approved' && review.kind === 'access') at = review.grantExpiresAt;
    if (at === undefined) return;
    const fire = async () => {
      this.#timers.delete(review.id);
      const current = await this.#store.getReview(review.id);
      if (!current) return;
      if (current.status === 'pending' && this.#now() >= current.expiresAt) {
        await this.#transition(current, 'pending', { status: 'expired', decidedAt: this.#now() }, 'expired', undefined, 'nobody decided in time');
      } else if (current.status === 'approved' && current.kind === 'access' && this.#now() >= (current.grantExpiresAt ?? 0)) {
        await this.#audit(current, 'grant-ended', undefined, 'the approved window ended');
        this.#grantEnded(current);
      } else {
        this.#schedule(current);
      }
    };
    // setTimeout caps at ~24.8 days; longer waits re-arm.
    const delay = Math.min(Math.max(0, at - this.#now()), 2 ** 31 - 1);
    const timer = setTimeout(() => void fire().catch(() => undefined), delay);
    timer.unref();
    this.#timers.set(review.id, timer);
  }
}
