/**
 * Tells approvers where they already are: a message per review transition to a Slack incoming webhook (or any
 * chat that takes `{ "text": … }`) or a JSON webhook of your own. Best effort: a notification that cannot be sent
 * is retried twice and logged; a review never waits on it. The URL is a secret (a Slack webhook URL is a token).
 */
import type { Logger } from 'pino';
import type { Secret } from '../../lib/secret.js';
import type { Review } from '../../api/review.js';
import { errorMessage } from '../../lib/errors.js';
import { formatDurationMs } from '../../lib/duration.js';

export type NotifyTransition = 'requested' | 'approved' | 'rejected' | 'expired' | 'withdrawn' | 'revoked' | 'orphaned' | 'consumed';

export interface NotifyTarget {
  name: string;
  type: 'slack' | 'webhook';
  url: Secret;
  /** Transitions to send (default: requested, approved, rejected, expired). */
  on: NotifyTransition[];
  /** Only reviews of these connections (default: all). */
  connections?: string[];
}

/** One line a person reads in a chat channel. */
export function reviewMessage(review: Review, transition: NotifyTransition, by?: string, reason?: string): string {
  const who = review.requester.name || review.requester.subject;
  const what = review.kind === 'access'
    ? `access to ${review.connection}${review.durationMs ? ` for ${formatDurationMs(review.durationMs)}` : ''}${review.reason ? ` ("${review.reason}")` : ''}`
    : `to run on ${review.connection}: \`${(review.statement ?? '').replace(/\s+/g, ' ').slice(0, 300)}\`${review.rule ? ` (rule ${review.rule})` : ''}`;
  switch (transition) {
    case 'requested':
      return `${who} asks for ${review.kind === 'access' ? what : what.replace(/^to run/, 'approval to run')} — review ${review.id}, needs ${review.minApprovals} approval(s) from ${review.approverGroups.join(', ')}. Decide with: hoopctl approve ${review.id}`;
    case 'approved':
    case 'rejected':
    case 'revoked':
      return `review ${review.id} ${transition} by ${by ?? 'someone'}${reason ? `: ${reason}` : ''} (${who}, ${what})`;
    default:
      return `review ${review.id} ${transition}${reason ? `: ${reason}` : ''} (${who}, ${what})`;
  }
}

export class ReviewNotifier {
  constructor(
    private readonly targets: NotifyTarget[],
    private readonly log: Logger,
    private readonly retryDelayMs = 1000,
  ) {}

  /** Fire and forget: returns a promise only so tests and shutdown can wait for the sends. */
  notify(review: Review, transition: NotifyTransition, by?: string, reason?: string): Promise<void> {
    const sends = this.targets
      .filter((t) => t.on.includes(transition) && (!t.connections || t.connections.includes(review.connection)))
      .map((t) => this.#send(t, review, transition, by, reason));
    return Promise.all(sends).then(() => undefined);
  }

  async #send(t: NotifyTarget, review: Review, transition: NotifyTransition, by?: string, reason?: string): Promise<void> {
    const text = reviewMessage(review, transition, by, reason);
    const body = t.type === 'slack'
      ? { text }
      : { event: `review-${transition}`, text, review: { id: review.id, kind: review.kind, connection: review.connection, requester: review.requester.subject, status: review.status, statement: review.statement, rule: review.rule, reason: review.reason }, ...(by ? { by } : {}), ...(reason ? { reason } : {}) };
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        const res = await fetch(t.url.reveal(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) });
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) return;
        throw new Error(`HTTP ${res.status}`);
      } catch (e) {
        // The URL stays out of the log: for Slack it is the credential.
        if (attempt === 3) return void this.log.warn({ notify: t.name, review: review.id, err: errorMessage(e) }, 'review notification not delivered');
        await new Promise((r) => setTimeout(r, this.retryDelayMs * attempt));
      }
    }
  }
}
