import type { Identity } from './identity.js';

/** Sessions, their recorded events and identity locks as the broker stores them and the API returns them. */
export interface SessionRow {
  id: string;
  connection: string;
  connectionType: string;
  identity: Identity;
  clientAddr: string;
  /** open while running; closed after a clean end; refused when access was denied; failed on error. */
  status: 'open' | 'closed' | 'refused' | 'failed';
  startedAt: number;
  endedAt?: number;
  statementCount: number;
  errorCount: number;
}

/** The stream of broker-wide events outside any session (token rejections, locks, access decisions). */
export const AUDIT_STREAM = 'audit';

export interface StoredEvent {
  /** Stream: a session id, or "audit" for events outside any session (token rejections). */
  stream: string;
  seq: number;
  at: number;
  type: string;
  data: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

/**
 * A lock: an identity (by subject or by OAuth client id) that may open no session until the lock expires or an
 * admin lifts it. Teleport's `tctl lock`, for a bot or agent gone wrong.
 */
export interface IdentityLock {
  id: string;
  target: { subject: string } | { clientId: string };
  reason: string;
  createdBy: string;
  createdAt: number;
  expiresAt?: number;
  liftedAt?: number;
  liftedBy?: string;
}
