import type { HoopError } from './errors.js';

/** Documented exit codes: 1 general failure, 2 usage, 3 not authenticated, 4 access denied, 5 held for review. */
export function exitCodeFor(e: HoopError): number {
  // A rejected client secret is a failed authentication like an expired token (the README promises 3 for both).
  if (e.code.startsWith('TOKEN_') || e.code === 'NOT_LOGGED_IN' || e.code === 'CLIENT_AUTH_FAILED') return 3;
  if (e.code === 'ACCESS_DENIED' || e.code === 'APPROVAL_REQUIRED' || e.code === 'IDENTITY_LOCKED') return 4;
  if (e.code === 'HELD_FOR_REVIEW') return 5;
  if (e.code === 'USAGE') return 2;
  return 1;
}
