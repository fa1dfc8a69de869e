import type { Identity } from '../../api/identity.js';
import type { StatementReviews } from '../protocols/protocol.js';
import type { ReviewService } from './review-service.js';

export interface StatementHoldOptions {
  reviews: ReviewService;
  identity: Identity;
  connection: string;
  sessionId: string;
  /** The client asked not to wait (`hoopctl exec --no-wait`): file the review and refuse at once, naming it. */
  detach: boolean;
  /** How the held thing is called in messages: a statement (SQL), a command (ssh), a request (HTTP). */
  noun: 'statement' | 'command' | 'request';
  /** Whether the broker is stopping: a review still pending then is orphaned, not withdrawn. */
  stopping: () => boolean;
  /** Why the client says it runs this (an agent's stated reason): the approver sees it with the review. */
  reason?: string;
}

/**
 * How a session's held statements, commands and requests meet the review machinery: one contract for every protocol.
 * An approval given earlier for the same text by the same identity is used once; otherwise a review is filed, the
 * client is told who decides, and the hold waits for the decision (or, detached, ends at once with the review id).
 */
export function statementHolds(o: StatementHoldOptions): StatementReviews {
  const { reviews, identity, connection, noun } = o;
  return {
    async hold(request, io) {
      const earlier = await reviews.consumeApproved(identity, connection, request.statement);
      if (earlier) return { approved: true, reviewId: earlier.id, message: `approved earlier in review ${earlier.id}` };
      const review = await reviews.requestStatement({
        requester: identity, connection, sessionId: o.detach ? undefined : o.sessionId, statement: request.statement, rule: request.rule,
        ...(request.detail ? { detail: request.detail } : {}), ...(o.reason ? { reason: o.reason } : {}),
      });
      const who = `${review.minApprovals} approval(s) from ${review.approverGroups.join(', ')}`;
      if (o.detach) {
        return {
          approved: false, reviewId: review.id, ending: 'detached',
          message: `hoopctl: ${noun} held for review ${review.id} by rule "${request.rule}"; it needs ${who}. Run it again once approved (hoopctl approve ${review.id})`,
        };
      }
      const detail = request.detail ? ` (${request.detail})` : '';
      await io.notice(`hoopctl: ${noun} held for review ${review.id} by rule "${request.rule}"${detail}: waiting for ${who}. An approver runs: hoopctl approve ${review.id}`);
      const decided = await reviews.waitForDecision(review.id, io.signal);
      if (decided.status === 'pending') {
        if (o.stopping()) {
          await reviews.orphan(review.id, 'the broker holding it stopped');
          return { approved: false, reviewId: review.id, message: `hoopctl: review ${review.id} abandoned: the broker is stopping` };
        }
        await reviews.withdraw(review.id, String(io.signal.reason ?? 'withdrawn'));
        return { approved: false, reviewId: review.id, ending: 'withdrawn', message: `canceling statement due to user request (review ${review.id} withdrawn)` };
      }
      if (decided.status === 'approved') {
        await reviews.consumeApproved(identity, connection, request.statement);
        return { approved: true, reviewId: review.id, message: `approved in review ${review.id}` };
      }
      const last = decided.decisions.at(-1);
      const why = decided.status === 'rejected' ? ` by ${last?.name}: ${last?.reason ?? 'no reason given'}` : decided.status === 'expired' ? ': nobody decided in time' : '';
      return { approved: false, reviewId: review.id, message: `hoopctl: review ${review.id} ${decided.status}${why}` };
    },
  };
}
