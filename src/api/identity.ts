/** Who is on the other end of a tunnel, as proven by a verified access token. */
export interface Identity {
  issuer: string;
  subject: string;
  /** A human (device flow) or a service account / CI job (client credentials, platform token). */
  kind: 'human' | 'service';
  /** OAuth client the token was issued to (RFC 9068 `client_id`, or `azp`). */
  clientId?: string;
  /** Display name: email, preferred_username or the subject. */
  name: string;
  groups: string[];
  /** Claims kept from the token (the issuer's `identityClaims`: a CI job's repository, workflow, run …). */
  claims?: Record<string, string>;
  /** Token expiry, ms since epoch. */
  expiresAt: number;
}

/**
 * Whether two identities are the same: the same subject at the same issuer. Subjects are only unique within their
 * issuer, so a second trusted issuer naming the same `sub` is someone else and never sees or acts as the first.
 */
export function sameIdentity(a: Pick<Identity, 'issuer' | 'subject'>, b: Pick<Identity, 'issuer' | 'subject'>): boolean {
  return a.subject === b.subject && a.issuer === b.issuer;
}
