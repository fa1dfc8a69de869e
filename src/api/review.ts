import type { Identity } from './identity.js';

/**
 * A review is a request for a human decision: a held statement (`statement`) or a time-boxed grant to open a
 * connection at all (`access`). It lives in the store so it survives a broker restart.
 *
 * Lifecycle: pending → approved | rejected | expired | withdrawn | orphaned; an approved access review can later
 * be revoked (→ revoked), and ends by itself at `grantExpiresAt`. An approved statement review is consumed when
 * the statement runs (`consumedAt`).
 */
export type ReviewKind = 'statement' | 'access';
export type ReviewStatus = 'pending' | 'approved' | 'rejected' | 'expired' | 'withdrawn' | 'revoked' | 'orphaned';

export interface ReviewDecision {
  subject: string;
  name: string;
  action: 'approve' | 'reject' | 'revoke';
  reason?: string;
  at: number;
}

export interface Review {
  id: string;
  kind: ReviewKind;
  connection: string;
  requester: Identity;
  /** Session that holds the statement, when one does (a detached `exec --no-wait` review has none). */
  sessionId?: string;
  /** The statement as recorded (masked), for statement reviews. */
  statement?: string;
  /** The rule that asked for the review (statement reviews). */
  rule?: string;
  /** What the approver must know beyond the text, e.g. the row guard's count (`would delete 1000 rows …`). */
  detail?: string;
  /** The requester's reason (required for access reviews where configured). */
  reason?: string;
  /** Requested grant length, for access reviews. */
  durationMs?: number;
  status: ReviewStatus;
  /** Approver groups and how many approvals are needed. */
  approverGroups: string[];
  minApprovals: number;
  decisions: ReviewDecision[];
  createdAt: number;
  /** A pending review expires at this time. */
  expiresAt: number;
  decidedAt?: number;
  /** Access reviews: when the grant ends. */
  grantExpiresAt?: number;
  consumedAt?: number;
}
