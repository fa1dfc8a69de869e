/**
 * The tools an agent sees, shared by both MCP front doors (`hoopctl mcp` over stdio, the broker's `/mcp`). They shape
 * calls and outcomes only: every call goes through an AgentGate, i.e. through the broker's own sessions, rules,
 * masking, reviews and recording. Outcomes an agent can act on: rows as objects with caps and `truncated`; a deny is a
 * tool error naming the rule; a held call waits for the human (with progress notifications), then runs once, or
 * returns the review id to call again with after approval.
 */
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult, ServerNotification, ServerRequest } from '@modelcontextprotocol/sdk/types.js';
import type { RequestHandlerExtra } from '@modelcontextprotocol/sdk/shared/protocol.js';
import { z } from 'zod';
import type { ConnectionInfo } from '../api/connection.js';
import type { AgentGate, GateOutcome, ToolCallContext } from './gate.js';
import { capText, DEFAULT_LIMITS, shapeResults, type ResultLimits } from './result-shape.js';

/** The longest SQL text, command or request body a tool takes: beyond it a call is refused, not cut. */
export const MAX_INPUT_LENGTH = 100_000;

export interface ToolOptions {
  /** The connections this identity may use, when the server starts: tools exist for the types among them. */
  connections: ConnectionInfo[];
  /** How long a held call waits for a human before it returns the review id (ms). */
  reviewWaitMs: number;
  /** How often a waiting call looks at its review and tells the agent it still waits (ms). */
  reviewPollMs?: number;
  /** The MCP client of this conversation (its `initialize`). */
  client(): { name: string; version: string };
}

/** What both front doors tell an agent at the handshake (MCP `instructions`). */
export const AGENT_INSTRUCTIONS =
  'Every call goes through the hoopctl gate as your own identity: rules may deny a call (the error names the rule), ' +
  'hold it for a human (you get progress while it waits, then the result or a review id: make the same call again ' +
  'once approved), and mask sensitive values. State a reason on each call; approvers and the audit record see it.';

type Extra = RequestHandlerExtra<ServerRequest, ServerNotification>;

const reason = z.string().max(2000).optional().describe('Why you run this: shown to the human who approves it and kept in the audit record');

/** Registers the gate's tools on `server`. */
export function registerGateTools(server: McpServer, gate: AgentGate, o: ToolOptions): void {
  const names = (types: string[]) => o.connections.filter((c) => types.includes(c.type)).map((c) => c.name);
  const pg = names(['postgres']);
  const ssh = names(['ssh']);
  const http = names(['http', 'kubernetes']);
  const call = (args: { reason?: string | undefined }): ToolCallContext => ({ client: o.client(), ...(args.reason ? { reason: args.reason } : {}) });

  server.registerTool(
    'list_connections',
    {
      title: 'List connections',
      description: 'The connections you may use through the hoopctl gate: name, type (postgres, ssh, http, kubernetes, tcp) and description.',
      annotations: { readOnlyHint: true },
    },
    async () => {
      const list = (await gate.connections()).map((c) => ({ name: c.name, type: c.type, ...(c.description ? { description: c.description } : {}) }));
      return ok({ connections: list }, list.map((c) => `${c.name} (${c.type})${c.description ? `: ${c.description}` : ''}`).join('\n') || 'no connections');
    },
  );

  if (pg.length > 0) {
    server.registerTool(
      'postgres_query',
      {
        title: 'Run SQL',
        description:
          `Runs SQL on a PostgreSQL connection through the hoopctl gate: rules may deny it (an error naming the rule) or hold it ` +
          `for a human's approval; sensitive values come back masked. Rows come back as JSON objects, capped (see truncated). ` +
          `Pass values as params ($1, $2 …) rather than in the text. Connections: ${pg.join(', ')}.`,
        inputSchema: {
          connection: z.string().describe(`A postgres connection: ${pg.join(', ')}`),
          sql: z.string().min(1).describe('The SQL. With params: one statement using $1, $2 …; without: one or more statements'),
          params: z.array(z.union([z.string(), z.number(), z.boolean(), z.null()])).optional().describe('Values bound to $1, $2 …'),
          reason,
        },
      },
      async (args, extra) => {
        if (args.sql.length > MAX_INPUT_LENGTH) return fail(`the SQL text is ${args.sql.length} characters; at most ${MAX_INPUT_LENGTH} are taken`);
        const limits = await limitsOf(gate, args.connection, 'postgres');
        if ('error' in limits) return limits.error;
        return held(gate, o, extra, async () => orKnown(await gate.query(args.connection, args.sql, args.params, call(args)), limits.known), (results) => {
          const shaped = shapeResults(results, limits.value);
          return ok(shaped, JSON.stringify(shaped));
        });
      },
    );

    server.registerTool(
      'postgres_describe',
      {
        title: 'Describe a database',
        description: `Tables and their columns (name, type, nullable) of a PostgreSQL connection, read through the gate. Connections: ${pg.join(', ')}.`,
        inputSchema: {
          connection: z.string().describe(`A postgres connection: ${pg.join(', ')}`),
          schema: z.string().max(63).optional().describe('Only this schema (default: every schema but the system ones)'),
          reason,
        },
        annotations: { readOnlyHint: true },
      },
      async (args, extra) => {
        const limits = await limitsOf(gate, args.connection, 'postgres');
        if ('error' in limits) return limits.error;
        const sql =
          `select table_schema, table_name, column_name, data_type, is_nullable from information_schema.columns ` +
          `where table_schema not in ('pg_catalog', 'information_schema', 'pg_toast')${args.schema ? ' and table_schema = $1' : ''} ` +
          `order by table_schema, table_name, ordinal_position`;
        return held(gate, o, extra, async () => orKnown(await gate.query(args.connection, sql, args.schema ? [args.schema] : [], call(args)), limits.known), (results) => {
          const tables = new Map<string, { schema: string; name: string; columns: Array<{ name: string; type: string; nullable: boolean }> }>();
          for (const [schema, table, column, type, nullable] of (results[0]?.rows ?? []) as string[][]) {
            const key = `${schema}.${table}`;
            if (!tables.has(key)) tables.set(key, { schema: schema!, name: table!, columns: [] });
            tables.get(key)!.columns.push({ name: column!, type: type!, nullable: nullable === 'YES' });
          }
          const all = [...tables.values()];
          const shown: typeof all = [];
          let bytes = 0;
          for (const t of all) {
            bytes += Buffer.byteLength(JSON.stringify(t));
            if (bytes > limits.value.maxBytes) break;
            shown.push(t);
          }
          const body = { tables: shown, truncated: shown.length < all.length };
          return ok(body, JSON.stringify(body));
        });
      },
    );
  }

  if (ssh.length > 0) {
    server.registerTool(
      'ssh_command',
      {
        title: 'Run a command on a host',
        description: `Runs one command on an SSH connection through the gate (rules may deny or hold it): stdout, stderr and exit status. Connections: ${ssh.join(', ')}.`,
        inputSchema: { connection: z.string().describe(`An ssh connection: ${ssh.join(', ')}`), command: z.string().min(1).describe('The command line'), reason },
      },
      async (args, extra) => {
        if (args.command.length > MAX_INPUT_LENGTH) return fail(`the command is ${args.command.length} characters; at most ${MAX_INPUT_LENGTH} are taken`);
        const limits = await limitsOf(gate, args.connection, 'ssh');
        if ('error' in limits) return limits.error;
        return held(gate, o, extra, async () => orKnown(await gate.command(args.connection, args.command, call(args)), limits.known), (r) => {
          const stdout = capText(r.stdout, limits.value.maxBytes);
          const stderr = capText(r.stderr, limits.value.maxBytes);
          const body = { exitStatus: r.exitStatus, stdout: stdout.text, stderr: stderr.text, truncated: stdout.truncated || stderr.truncated };
          return ok(body, JSON.stringify(body));
        });
      },
    );
  }

  if (http.length > 0) {
    server.registerTool(
      'http_request',
      {
        title: 'Send an HTTP request',
        description: `Sends one request on an HTTP or Kubernetes connection through the gate (rules may deny or hold it): status, headers and body. Connections: ${http.join(', ')}.`,
        inputSchema: {
          connection: z.string().describe(`An http or kubernetes connection: ${http.join(', ')}`),
          method: z.string().regex(/^[A-Za-z]{1,16}$/).describe('GET, POST, …'),
          path: z.string().startsWith('/').max(8192).describe('The path and query, e.g. /v1/orders?limit=5'),
          headers: z.record(z.string(), z.string()).optional().describe('Extra request headers'),
          body: z.string().optional().describe('The request body'),
          reason,
        },
      },
      async (args, extra) => {
        if ((args.body?.length ?? 0) > MAX_INPUT_LENGTH) return fail(`the body is ${args.body!.length} characters; at most ${MAX_INPUT_LENGTH} are taken`);
        const limits = await limitsOf(gate, args.connection, 'http');
        if ('error' in limits) return limits.error;
        const req = { method: args.method.toUpperCase(), path: args.path, headers: args.headers ?? {}, ...(args.body !== undefined ? { body: args.body } : {}) };
        return held(gate, o, extra, async () => orKnown(await gate.request(args.connection, req, call(args)), limits.known), (r) => {
          const body = capText(r.body, limits.value.maxBytes);
          let parsed: unknown = body.text;
          if (!body.truncated) {
            try {
              parsed = JSON.parse(body.text);
            } catch {
              // not JSON: the text as it came
            }
          }
          const out = { status: r.status, headers: r.headers, body: parsed, truncated: body.truncated };
          return ok(out, JSON.stringify(out));
        });
      },
    );
  }
}

/**
 * The caps of a connection (and a clear error for one of another type). A name this identity may not use (or that
 * does not exist) is not refused here: the call goes to the broker, which refuses it and records the refusal like any
 * other, and the agent is told which connections it may use (`known`).
 */
async function limitsOf(gate: AgentGate, name: string, kind: 'postgres' | 'ssh' | 'http'): Promise<{ value: ResultLimits; known: string[] } | { error: CallToolResult }> {
  let list: ConnectionInfo[];
  try {
    list = await gate.connections();
  } catch (e) {
    return { error: fail((e as Error).message) };
  }
  const known = list.map((x) => x.name);
  const c = list.find((x) => x.name === name);
  if (!c) return { value: DEFAULT_LIMITS, known };
  const types = kind === 'http' ? ['http', 'kubernetes'] : [kind];
  if (!types.includes(c.type)) return { error: fail(`${name} is a ${c.type} connection, not ${kind === 'http' ? 'http or kubernetes' : kind}`) };
  return { value: c.mcp ?? DEFAULT_LIMITS, known };
}

/** A refusal tells the agent what it may use instead. */
function orKnown<T>(outcome: GateOutcome<T>, known: string[]): GateOutcome<T> {
  if (outcome.status !== 'refused') return outcome;
  return { ...outcome, message: `${outcome.message}. Connections you may use: ${known.join(', ') || 'none'}` };
}

/**
 * Runs a call; when the gate holds it for review, tells the agent (progress notifications) while a human decides, up
 * to the configured wait: approved → the same call again, which the approval lets through once; rejected or expired →
 * a tool error with the approver's reason; still pending → the review id, for the agent to call again later.
 */
async function held<T>(gate: AgentGate, o: ToolOptions, extra: Extra, run: () => Promise<GateOutcome<T>>, shape: (value: T) => CallToolResult): Promise<CallToolResult> {
  const first = await run();
  if (first.status !== 'held') return settle(first, shape);
  const { reviewId } = first;
  const token = extra._meta?.progressToken;
  const started = Date.now();
  let progress = 0;
  const tell = async (message: string) => {
    if (token === undefined) return;
    await extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress: ++progress, message } }).catch(() => undefined);
  };
  await tell(`held for review ${reviewId}: a human must approve it (hoopctl approve ${reviewId}); waiting`);
  const pollMs = o.reviewPollMs ?? 1000;
  while (Date.now() - started < o.reviewWaitMs && !extra.signal.aborted) {
    await sleep(Math.min(pollMs, Math.max(0, o.reviewWaitMs - (Date.now() - started))), extra.signal);
    let review;
    try {
      review = await gate.review(reviewId);
    } catch (e) {
      return fail(`held for review ${reviewId}, and its state cannot be read: ${(e as Error).message}`);
    }
    if (review.status === 'approved') {
      await tell(`review ${reviewId} approved by ${review.decisions.at(-1)?.name ?? 'an approver'}; running`);
      return settle(await run(), shape);
    }
    if (review.status !== 'pending') {
      const last = review.decisions.at(-1);
      const why = review.status === 'rejected' ? ` by ${last?.name}: ${last?.reason ?? 'no reason given'}` : review.status === 'expired' ? ': nobody decided in time' : '';
      return fail(`review ${reviewId} ${review.status}${why}. Nothing ran.`, { status: review.status, review: reviewId });
    }
    await tell(`still waiting for review ${reviewId} (${Math.round((Date.now() - started) / 1000)} s)`);
  }
  const body = {
    status: 'held', review: reviewId,
    message: `${first.message}. A human must decide (hoopctl approve ${reviewId}); nothing ran. Once it is approved, make the same call again: it runs once.`,
  };
  return ok(body, body.message);
}

function settle<T>(outcome: GateOutcome<T>, shape: (value: T) => CallToolResult): CallToolResult {
  switch (outcome.status) {
    case 'ok':
      return shape(outcome.value);
    case 'denied':
      return fail(outcome.message, { status: 'denied', ...(outcome.rule ? { rule: outcome.rule } : {}) });
    case 'held':
      return ok({ status: 'held', review: outcome.reviewId, message: outcome.message }, outcome.message);
    case 'refused':
      return fail(outcome.message, { status: 'refused', code: outcome.code });
    case 'error':
      return fail(outcome.message, { status: 'error', ...(outcome.code ? { code: outcome.code } : {}) });
  }
}

function ok(structured: object, text: string): CallToolResult {
  return { content: [{ type: 'text', text }], structuredContent: structured as Record<string, unknown> };
}

function fail(message: string, structured?: Record<string, unknown>): CallToolResult {
  return { isError: true, content: [{ type: 'text', text: message }], ...(structured ? { structuredContent: { message, ...structured } } : {}) };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}
