/**
 * How a tunnel says it carries an AI agent's tool call: the front door (`via`), the MCP client's name and version
 * from its handshake, and the reason the agent stated for this call. Sent by `hoopctl mcp` on each tunnel it opens
 * (and set by the broker's own `/mcp`), read by the broker into the session's identity, its open event and any review
 * it files. All of it is stated by the client, like a user agent: it labels the record, it never admits anyone.
 */
import type { Identity } from './identity.js';

export const VIA_HEADER = 'x-hoopctl-via';
export const MCP_CLIENT_HEADER = 'x-hoopctl-mcp-client';
export const REASON_HEADER = 'x-hoopctl-reason';

/** The longest reason kept; an agent's essay is cut, not refused. */
export const MAX_REASON_LENGTH = 500;
const MAX_NAME_LENGTH = 100;

export interface AgentContext {
  via: 'mcp';
  client: { name: string; version: string };
  reason?: string;
}

/** Headers for a tunnel opened on behalf of an MCP tool call. Header values must be Latin-1: the text is URI-encoded. */
export function agentHeaders(agent: AgentContext): Record<string, string> {
  return {
    [VIA_HEADER]: agent.via,
    [MCP_CLIENT_HEADER]: `${encodeURIComponent(agent.client.name)}/${encodeURIComponent(agent.client.version)}`,
    ...(agent.reason ? { [REASON_HEADER]: encodeURIComponent(agent.reason.slice(0, MAX_REASON_LENGTH)) } : {}),
  };
}

/** The agent context of a request's headers, or undefined when it names no front door (a plain hoopctl tunnel). */
export function readAgentHeaders(headers: Record<string, string | string[] | undefined>): AgentContext | undefined {
  const via = first(headers[VIA_HEADER]);
  if (via !== 'mcp') return undefined;
  const [name, version] = (first(headers[MCP_CLIENT_HEADER]) ?? '').split('/');
  const reason = decode(first(headers[REASON_HEADER]))?.slice(0, MAX_REASON_LENGTH);
  return {
    via,
    client: { name: clean(decode(name)) || 'unknown', version: clean(decode(version)) || 'unknown' },
    ...(reason?.trim() ? { reason: reason.trim() } : {}),
  };
}

/** The identity as recorded for a session that came through an agent's front door. */
export function withAgent(identity: Identity, agent: AgentContext | undefined): Identity {
  return agent ? { ...identity, via: agent.via, mcpClient: agent.client } : identity;
}

/** `claude-code 1.2.3 via mcp`: how listings and the approver console name an agent's client. */
export function describeAgent(identity: Pick<Identity, 'via' | 'mcpClient'>): string | undefined {
  if (!identity.via) return undefined;
  return identity.mcpClient ? `${identity.mcpClient.name} ${identity.mcpClient.version} via ${identity.via}` : `via ${identity.via}`;
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function decode(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

/** Names are labels in a table: no control characters, bounded. */
function clean(v: string | undefined): string {
  return (v ?? '').replace(/[\u0000-\u001f\u007f]/g, '').slice(0, MAX_NAME_LENGTH).trim();
}
