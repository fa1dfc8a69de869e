import type { Command } from 'commander';
import type { ConnectionInfo } from '../api/connection.js';
import { accessToken, brokerClient, resolveBroker, resolveToken } from './context.js';
import { HoopError, UserError } from '../lib/errors.js';
import { parseDuration } from '../lib/duration.js';

/**
 * `hoopctl mcp`: an MCP server on standard input/output for agent hosts that launch local servers. The agent holds
 * its own short-lived identity (HOOPCTL_TOKEN, client credentials or a stored login, as every command picks it),
 * never a backend secret; each tool call is a session through the broker (src/tunnel/agent-gate.ts). Standard output
 * belongs to the MCP protocol: anything for a person goes to standard error.
 */
export function register(program: Command): void {
  program
    .command('mcp')
    .description('Serve MCP on stdio for an AI agent: its tool calls run through the broker as its own identity (judged, masked, held for review, recorded)')
    .option('--broker <url>', 'broker URL')
    .option('--review-wait <duration>', 'how long a call held for review waits for a human before it returns the review id', '2m')
    .addHelpText(
      'after',
      '\nAn agent host config (mcpServers):\n' +
        '  { "hoopctl": { "command": "hoopctl", "args": ["mcp"],\n' +
        '                 "env": { "HOOPCTL_BROKER": "https://hoop.example.com", "HOOPCTL_CLIENT_ID": "agent-1", "HOOPCTL_CLIENT_SECRET": "…" } } }\n' +
        '\nTools: list_connections; postgres_query, postgres_describe; ssh_command; http_request (for the connection types you may use).\n' +
        'Without a usable token it prints one line on standard error and exits 3 before the MCP handshake.',
    )
    .action(async (opts: { broker?: string; reviewWait: string }) => {
      let reviewWaitMs: number;
      try {
        reviewWaitMs = parseDuration(opts.reviewWait);
      } catch (e) {
        throw new UserError(`invalid --review-wait: ${(e as Error).message}`, { code: 'USAGE' });
      }
      let broker: string;
      let connections: ConnectionInfo[];
      try {
        // Before the handshake: an agent without a usable identity learns it now, in one line, not on its first call.
        broker = resolveBroker(opts.broker);
        const token = (await resolveToken(broker)).token;
        connections = (await brokerClient(broker, token).get<{ connections: ConnectionInfo[] }>('/api/v1/connections')).connections;
      } catch (e) {
        // One line on stderr (the hint folded in), the usual exit code (3: not authenticated), no MCP handshake.
        if (e instanceof HoopError) throw new HoopError(`hoopctl mcp: ${e.message}${e.hint ? ` (${e.hint})` : ''}`, { code: e.code, ...(e.status ? { status: e.status } : {}) });
        throw e;
      }
      // Loaded here: every other command would pay for the SDK at start-up.
      const [{ McpServer }, { StdioServerTransport }, { AGENT_INSTRUCTIONS, registerGateTools }, { tunnelGate }] = await Promise.all([
        import('@modelcontextprotocol/sdk/server/mcp.js'), import('@modelcontextprotocol/sdk/server/stdio.js'),
        import('../mcp/tools.js'), import('../tunnel/agent-gate.js'),
      ]);
      const server = new McpServer({ name: 'hoopctl', version: '0.1.0' }, { instructions: AGENT_INSTRUCTIONS });
      const client = () => {
        const v = server.server.getClientVersion();
        return { name: v?.name ?? 'unknown', version: v?.version ?? 'unknown' };
      };
      const gate = tunnelGate({ broker, api: brokerClient(broker), token: () => accessToken(broker) });
      registerGateTools(server, gate, { connections, reviewWaitMs, client });
      const transport = new StdioServerTransport();
      const closed = new Promise<void>((resolve) => (transport.onclose = resolve));
      await server.connect(transport);
      // The host ends the conversation by closing our input.
      process.stdin.once('end', () => void server.close());
      await closed;
    });
}
