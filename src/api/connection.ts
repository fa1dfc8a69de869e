/** A connection as the broker describes it to a client (`GET /api/v1/connections/NAME`): never a credential. */
export interface ConnectionInfo {
  name: string;
  type: string;
  description?: string;
  /** postgres: the database a client gets when it names none. */
  database?: string;
  /** postgres: every database a client may ask for (the default among them), when the connection lists several. */
  databases?: string[];
  /** ssh: the backend user, and the broker's own host key (what ssh will be shown). */
  user?: string;
  hostKeyFingerprint?: string;
  hostKey?: string;
  /** What an AI agent's tool call gets back at most (`mcp` in the connection's config); defaults apply without. */
  mcp?: { maxRows: number; maxBytes: number };
  /** Just-in-time connections: opening one needs an approved access request. */
  approval?: { maxDuration: number; reason: 'required' | 'optional' };
  /** Statements, commands or requests its rules hold are decided by reviewers (`reviews` configured). */
  reviews?: boolean;
}
