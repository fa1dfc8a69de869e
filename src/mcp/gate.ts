/**
 * What an MCP front door needs from the gate behind it. `hoopctl mcp` (stdio) implements it with tunnels to the broker
 * (src/tunnel/agent-gate.ts); every call is a session the broker admits, judges, masks and records like any other.
 * The tools (tools.ts) only shape calls and outcomes, so both fronts give an agent the same answers.
 */
import type { ConnectionInfo } from '../api/connection.js';
import type { Review } from '../api/review.js';

/** Who makes a tool call: the MCP client from the handshake and the reason the agent stated. */
export interface ToolCallContext {
  client: { name: string; version: string };
  reason?: string;
}

/** One statement's result as the gate returns it: column names and rows of values, already masked by the broker. */
export interface StatementResult {
  command: string;
  rowCount: number | null;
  columns: string[];
  rows: unknown[][];
}

/** What a command on an ssh connection produced. */
export interface CommandResult {
  exitStatus: number;
  stdout: string;
  stderr: string;
}

/** What a request on an http or kubernetes connection got back. */
export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * How the gate answered a call. `denied` names the rule; `held` names the review a human must decide (nothing ran);
 * `refused` is the broker turning the call away before it ran (access, token, unknown connection).
 */
export type GateOutcome<T> =
  | { status: 'ok'; value: T }
  | { status: 'denied'; rule?: string; message: string }
  | { status: 'held'; reviewId: string; message: string }
  | { status: 'refused'; code: string; message: string }
  | { status: 'error'; message: string; code?: string };

export interface AgentGate {
  /** The connections this identity may open. */
  connections(): Promise<ConnectionInfo[]>;
  /** Runs SQL on a postgres connection: with `params`, one statement with bound parameters; without, one or more. */
  query(connection: string, sql: string, params: unknown[] | undefined, call: ToolCallContext): Promise<GateOutcome<StatementResult[]>>;
  /** Runs a command on an ssh connection. */
  command(connection: string, command: string, call: ToolCallContext): Promise<GateOutcome<CommandResult>>;
  /** Sends one request on an http or kubernetes connection. */
  request(connection: string, req: { method: string; path: string; headers: Record<string, string>; body?: string }, call: ToolCallContext): Promise<GateOutcome<HttpResult>>;
  /** The review as it stands now (the requester may always read its own). */
  review(id: string): Promise<Review>;
}
