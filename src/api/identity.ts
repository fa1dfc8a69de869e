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
  /**
   * The front door the session came through when it is not a hoopctl command of a person or job: `mcp` for an AI
   * agent's tool call (`hoopctl mcp`, the broker's `/mcp`). Kept with the identity so sessions, reviews, replays and
   * exports all say so; stated by the client, like its user agent, never a reason to admit anyone.
   */
  via?: 'mcp';
  /** The MCP client (agent host) as it named itself in the MCP handshake (`initialize`): stated, not proven. */
  mcpClient?: { name: string; version: string };
}

/**
 * Whether two identities are the same: the same subject at the same issuer. Subjects are only unique within their
 * issuer, so a second trusted issuer naming the same `sub` is someone else and never sees or acts as the first.
 */
export function sameIdentity(a: Pick<Identity, 'issuer' | 'subject'>, b: Pick<Identity, 'issuer' | 'subject'>): boolean {
  return a.subject === b.subject && a.issuer === b.issuer;
}
