/**
 * The broker's remote MCP front door for agents that run elsewhere: Streamable HTTP at `/mcp`, protected by the same
 * bearer tokens as the API, following the MCP authorization spec — OAuth protected resource metadata (RFC 9728) at
 * `/.well-known/oauth-protected-resource[/mcp]` naming the trusted issuers, and a 401 whose `WWW-Authenticate` points
 * at it. The tools are the ones `hoopctl mcp` serves (src/mcp/tools.ts); calls run through src/broker/mcp/broker-gate.ts.
 *
 * Each MCP session (its `mcp-session-id`) belongs to the identity that opened it: every request is authenticated
 * again (a token may expire mid-conversation: 401), and a request of another identity for it is "not found".
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { Identity } from '../../api/identity.js';
import { HoopError, errorMessage } from '../../lib/errors.js';
import type { AuthenticateRequest } from '../auth/request-auth.js';
import { sendError, sendJson } from '../http-util.js';
import type { BrokerGateDeps } from './broker-gate.js';

/**
 * The MCP SDK (with its own zod, ajv and JSON-schema code), the gate's tools and the clients they drive (pg, ssh2)
 * load with the first conversation: a broker no agent talks to does not carry them (~20 MB of its resident memory).
 */
let runtime: Promise<{
  McpServer: typeof McpServer;
  StreamableHTTPServerTransport: typeof StreamableHTTPServerTransport;
  tools: typeof import('../../mcp/tools.js');
  brokerGate: typeof import('./broker-gate.js').brokerGate;
}> | undefined;
function loadRuntime() {
  runtime ??= Promise.all([
    import('@modelcontextprotocol/sdk/server/mcp.js'),
    import('@modelcontextprotocol/sdk/server/streamableHttp.js'),
    import('../../mcp/tools.js'),
    import('./broker-gate.js'),
  ]).then(([mcp, http, tools, gate]) => ({ McpServer: mcp.McpServer, StreamableHTTPServerTransport: http.StreamableHTTPServerTransport, tools, brokerGate: gate.brokerGate }));
  return runtime;
}

export const MCP_PATH = '/mcp';
const METADATA_PATH = '/.well-known/oauth-protected-resource';
/** Conversations kept at once; an agent that opens more is told to close some (their sessions cost memory). */
const MAX_CONVERSATIONS = 1000;
/** A conversation nobody used for this long is forgotten (its agent starts a new one). */
const IDLE_MS = 60 * 60 * 1000;
/** How long a held call waits for a human before it returns the review id. */
const REVIEW_WAIT_MS = 2 * 60 * 1000;

export interface McpEndpointDeps extends BrokerGateDeps {
  authenticate: AuthenticateRequest;
  /** The broker's public URL (server.publicUrl, or where it listens). */
  publicUrl: () => string;
  /** The issuers whose tokens the broker accepts: the authorization servers of RFC 9728. */
  issuers: () => string[];
}

interface Conversation {
  transport: StreamableHTTPServerTransport;
  server: McpServer;
  owner: { issuer: string; subject: string };
  current: { identity: Identity; req: IncomingMessage };
  lastUsed: number;
}

export interface McpEndpoint {
  /** Serves the request when it is one of /mcp or its metadata; false otherwise. */
  route(req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean>;
  close(): Promise<void>;
}

export function mcpEndpoint(deps: McpEndpointDeps): McpEndpoint {
  const conversations = new Map<string, Conversation>();
  const metadataUrl = () => `${deps.publicUrl()}${METADATA_PATH}${MCP_PATH}`;
  const sweep = setInterval(() => {
    for (const [id, c] of conversations) if (Date.now() - c.lastUsed > IDLE_MS) void c.transport.close();
  }, 60_000);
  sweep.unref();

  function metadata() {
    return {
      resource: `${deps.publicUrl()}${MCP_PATH}`,
      authorization_servers: deps.issuers(),
      bearer_methods_supported: ['header'],
      resource_name: 'hoopctl broker',
      resource_documentation: 'https://github.com/hoopctl/hoopctl#ai-agents',
    };
  }

  /** RFC 6750 §3 + RFC 9728 §5.1: where an agent learns which issuer to get a token from. */
  function unauthorized(res: ServerResponse, e: HoopError, tokenSent: boolean): void {
    const params = [`resource_metadata="${metadataUrl()}"`, ...(tokenSent ? ['error="invalid_token"', `error_description="${e.message.replace(/["\\]/g, '')}"`] : [])];
    res.setHeader('www-authenticate', `Bearer ${params.join(', ')}`);
    sendError(res, e);
  }

  async function open(identity: Identity, req: IncomingMessage): Promise<Conversation> {
    const { McpServer, StreamableHTTPServerTransport, tools, brokerGate } = await loadRuntime();
    const { AGENT_INSTRUCTIONS, registerGateTools } = tools;
    const connections = await brokerGate(deps, () => ({ identity, req })).connections();
    const server = new McpServer({ name: 'hoopctl-broker', version: '0.1.0' }, { instructions: AGENT_INSTRUCTIONS });
    const conversation: Conversation = {
      server, owner: { issuer: identity.issuer, subject: identity.subject }, current: { identity, req }, lastUsed: Date.now(),
      transport: new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => void conversations.set(id, conversation),
        onsessionclosed: (id) => void conversations.delete(id),
      }),
    };
    conversation.transport.onclose = () => {
      if (conversation.transport.sessionId) conversations.delete(conversation.transport.sessionId);
      void server.close().catch(() => undefined);
    };
    const gate = brokerGate(deps, () => conversation.current);
    const client = () => {
      const v = server.server.getClientVersion();
      return { name: v?.name ?? 'unknown', version: v?.version ?? 'unknown' };
    };
    registerGateTools(server, gate, { connections, reviewWaitMs: REVIEW_WAIT_MS, client });
    await server.connect(conversation.transport);
    return conversation;
  }

  return {
    async route(req, res, url) {
      if (url.pathname === METADATA_PATH || url.pathname === `${METADATA_PATH}${MCP_PATH}`) {
        if (req.method !== 'GET') return false;
        sendJson(res, 200, metadata());
        return true;
      }
      if (url.pathname !== MCP_PATH) return false;
      let identity: Identity;
      try {
        identity = await deps.authenticate(req);
      } catch (e) {
        if (e instanceof HoopError && e.status === 401) return unauthorized(res, e, req.headers.authorization !== undefined), true;
        throw e;
      }
      const sessionId = req.headers['mcp-session-id'];
      let conversation: Conversation | undefined;
      if (typeof sessionId === 'string') {
        conversation = conversations.get(sessionId);
        // Another identity's conversation is as good as none: it learns nothing of it.
        if (!conversation || conversation.owner.issuer !== identity.issuer || conversation.owner.subject !== identity.subject) {
          sendJson(res, 404, { jsonrpc: '2.0', error: { code: -32001, message: 'MCP session not found: initialize a new one' }, id: null });
          return true;
        }
      } else if (req.method === 'POST') {
        if (conversations.size >= MAX_CONVERSATIONS) throw new HoopError('too many MCP sessions on this broker: close some (DELETE /mcp)', { code: 'TOO_MANY_SESSIONS', status: 503 });
        conversation = await open(identity, req);
      } else {
        sendJson(res, 400, { jsonrpc: '2.0', error: { code: -32000, message: 'no mcp-session-id: initialize first with a POST' }, id: null });
        return true;
      }
      // The call is made by this request's identity (its token may be newer than the one that opened the conversation).
      conversation.current = { identity, req };
      conversation.lastUsed = Date.now();
      try {
        await conversation.transport.handleRequest(req, res);
      } catch (e) {
        if (!res.headersSent) sendError(res, new HoopError(`MCP request failed: ${errorMessage(e)}`, { code: 'BAD_REQUEST', status: 400 }));
      }
      return true;
    },
    async close() {
      clearInterval(sweep);
      await Promise.allSettled([...conversations.values()].map((c) => c.transport.close()));
      await Promise.allSettled([...deps.running]);
    },
  };
}
