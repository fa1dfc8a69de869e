import type { Identity } from '../../api/identity.js';
import type { Review } from '../../api/review.js';

/**
 * What the console lets `me` do with a review. The broker enforces the same rules; the console repeats them so an
 * approver sees *before* pressing a key that a review is not theirs to decide, and why.
 */
export type DecisionRight =
  | { may: true }
  | { may: false; code: 'own-request' | 'not-an-approver' | 'already-decided' | 'not-pending'; why: string };

export function decisionRight(review: Review, me: Identity): DecisionRight {
  if (review.status !== 'pending') return { may: false, code: 'not-pending', why: `already ${review.status}` };
  // Self-approval is refused even for members of an approver group: that is the point of a second pair of eyes.
  if (review.requester.subject === me.subject) return { may: false, code: 'own-request', why: 'your own request' };
  if (!isApprover(review, me)) return { may: false, code: 'not-an-approver', why: 'not an approver' };
  const mine = review.decisions.find((d) => d.subject === me.subject && d.action !== 'revoke');
  if (mine) return { may: false, code: 'already-decided', why: `you ${mine.action === 'approve' ? 'approved' : 'rejected'} already` };
  return { may: true };
}

/** Revoking narrows access, so any approver of the grant may do it (including for a grant of their own). */
export function revokeRight(review: Review, me: Identity, now: number): DecisionRight {
  if (!isActiveGrant(review, now)) return { may: false, code: 'not-pending', why: 'not an active grant' };
  if (!isApprover(review, me)) return { may: false, code: 'not-an-approver', why: 'not an approver' };
  return { may: true };
}

export function isApprover(review: Review, me: Identity): boolean {
  return review.approverGroups.some((g) => me.groups.includes(g));
}

/** An approved access review whose window has not ended yet. */
export function isActiveGrant(review: Review, now: number): boolean {
  return review.kind === 'access' && review.status === 'approved' && review.grantExpiresAt !== undefined && review.grantExpiresAt > now;
}
