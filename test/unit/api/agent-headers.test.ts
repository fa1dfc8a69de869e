import { describe, expect, it } from 'vitest';
import { agentHeaders, describeAgent, MAX_REASON_LENGTH, readAgentHeaders, withAgent } from '../../../src/api/agent-headers.js';
import type { Identity } from '../../../src/api/identity.js';

describe('agent headers', () => {
  it('carry the front door, the MCP client and a reason in any language across the wire', () => {
    const sent = agentHeaders({ via: 'mcp', client: { name: 'claude code', version: '1.2/3' }, reason: 'nettoyer la file d’attente ✓' });
    // Header values must be Latin-1: what is sent is URI-encoded.
    expect(Object.values(sent).every((v) => /^[\x20-\x7e]*$/.test(v))).toBe(true);
    expect(readAgentHeaders(sent)).toEqual({ via: 'mcp', client: { name: 'claude code', version: '1.2/3' }, reason: 'nettoyer la file d’attente ✓' });
  });

  it('name no agent when the tunnel names no front door, or one it does not know', () => {
    expect(readAgentHeaders({})).toBeUndefined();
    expect(readAgentHeaders({ 'x-hoopctl-via': 'carrier-pigeon', 'x-hoopctl-mcp-client': 'x/1' })).toBeUndefined();
  });

  it('keep labels printable and bounded, and cut an over-long reason', () => {
    const read = readAgentHeaders({ 'x-hoopctl-via': 'mcp', 'x-hoopctl-mcp-client': `${encodeURIComponent('evil\u001b[2Jname')}/%E0%A4%A`, 'x-hoopctl-reason': 'r'.repeat(5000) });
    expect(read?.client).toEqual({ name: 'evil[2Jname', version: '%E0%A4%A' });
    expect(read?.reason).toHaveLength(MAX_REASON_LENGTH);
    expect(readAgentHeaders({ 'x-hoopctl-via': 'mcp' })?.client).toEqual({ name: 'unknown', version: 'unknown' });
  });

  it('label the identity a session records, and how listings name it', () => {
    const id: Identity = { issuer: 'https://idp', subject: 'bot', kind: 'service', name: 'bot', groups: [], expiresAt: 0 };
    expect(withAgent(id, undefined)).toBe(id);
    const agent = withAgent(id, { via: 'mcp', client: { name: 'cursor', version: '0.9' } });
    expect(agent).toMatchObject({ subject: 'bot', via: 'mcp', mcpClient: { name: 'cursor', version: '0.9' } });
    expect(describeAgent(agent)).toBe('cursor 0.9 via mcp');
    expect(describeAgent(id)).toBeUndefined();
  });
});
