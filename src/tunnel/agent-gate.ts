/**
 * The gate behind `hoopctl mcp`: each tool call opens its own tunnel to the broker as the agent's identity, saying it
 * carries an MCP call (front door, MCP client, stated reason), so the broker admits, judges, masks, holds and records
 * it as a session like any `hoopctl exec`. Reviews are detached: a held call is answered at once with its review id,
 * and the tools (src/mcp/tools.ts) wait for the human and call again, which the approval lets through once.
 */
import { Writable, type Duplex } from 'node:stream';
import { request as httpRequest } from 'node:http';
import pg from 'pg';
import { agentHeaders } from '../api/agent-headers.js';
import type { BrokerClient } from '../api/broker-client.js';
import type { ConnectionInfo } from '../api/connection.js';
import type { Review } from '../api/review.js';
import { HoopError } from '../lib/errors.js';
import type { AgentGate, GateOutcome, StatementResult, ToolCallContext } from '../mcp/gate.js';
import { commandOutcome, httpOutcome, sqlOutcome } from '../mcp/outcomes.js';
import { connectPgOverTunnel } from './pg-over-tunnel.js';
import { queryForExec } from './pg-exec-query.js';
import { execOverTunnel } from './ssh-over-tunnel.js';
import { openTunnel } from './ws-transport.js';

/** The most of a command's output or a response body kept in memory before it is cut (the tools cap it further). */
const MAX_CAPTURE_BYTES = 16 * 1024 * 1024;

export interface TunnelGateOptions {
  broker: string;
  api: BrokerClient;
  /** The agent's access token, resolved again for every call (stored credentials refresh; HOOPCTL_TOKEN may expire). */
  token(): Promise<string>;
}

export function tunnelGate(o: TunnelGateOptions): AgentGate {
  const headers = (call: ToolCallContext) => agentHeaders({ via: 'mcp', client: call.client, ...(call.reason ? { reason: call.reason } : {}) });
  return {
    async connections() {
      return (await o.api.get<{ connections: ConnectionInfo[] }>('/api/v1/connections')).connections;
    },

    async query(connection, sql, params, call) {
      let tunnel;
      try {
        tunnel = await connectPgOverTunnel(o.broker, connection, await o.token(), { detachReviews: true, headers: headers(call), peer: 'hoopctl-mcp' });
      } catch (e) {
        return refusal(e);
      }
      const { client } = tunnel;
      client.on('error', () => undefined);
      try {
        const results =
          params === undefined
            ? (await queryForExec(client, sql)).map(toStatementResult)
            : [toStatementResult(await client.query({ text: sql, values: params, rowMode: 'array' }))];
        return { status: 'ok', value: results };
      } catch (e) {
        return sqlOutcome(e as pg.DatabaseError);
      } finally {
        await client.end().catch(() => undefined);
      }
    },

    async command(connection, command, call) {
      const stdout = capture();
      const stderr = capture();
      let held: string | undefined;
      try {
        const { connection: info } = await o.api.get<{ connection: ConnectionInfo }>(`/api/v1/connections/${encodeURIComponent(connection)}`);
        const exitStatus = await execOverTunnel({
          broker: o.broker, connection, token: await o.token(), hostKeyFingerprint: info.hostKeyFingerprint, command,
          detachReviews: true, onHeld: (id) => (held = id), stdin: null, stdout: stdout.sink, stderr: stderr.sink, headers: headers(call),
        });
        return commandOutcome({ exitStatus, stdout: stdout.text(), stderr: stderr.text() }, held);
      } catch (e) {
        return refusal(e);
      }
    },

    async request(connection, req, call) {
      let stream: Duplex & Record<string, unknown>;
      try {
        stream = (await openTunnel(o.broker, connection, await o.token(), 'hoopctl-mcp', { review: 'detach' }, headers(call))) as Duplex & Record<string, unknown>;
      } catch (e) {
        return refusal(e);
      }
      // node:http treats the tunnel as its socket and calls a few socket methods on it.
      for (const m of ['setNoDelay', 'setKeepAlive', 'setTimeout', 'ref', 'unref']) stream[m] = () => stream;
      const body = req.body === undefined ? undefined : Buffer.from(req.body);
      try {
        const res = await new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>((resolve, reject) => {
          const r = httpRequest(
            { method: req.method, path: req.path, host: 'hoopctl', headers: { ...req.headers, ...(body ? { 'content-length': String(body.length) } : {}) }, createConnection: () => stream as never },
            (response) => {
              const chunks: Buffer[] = [];
              let size = 0;
              response.on('data', (c: Buffer) => {
                size += c.length;
                if (size <= MAX_CAPTURE_BYTES) chunks.push(c);
              });
              response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks).toString('utf8') }));
              response.on('error', reject);
            },
          );
          r.on('error', reject);
          r.end(body);
        });
        return httpOutcome(res);
      } catch (e) {
        return { status: 'error', message: `the request through the broker failed: ${(e as Error).message}` };
      } finally {
        stream.destroy();
      }
    },

    async review(id) {
      return (await o.api.get<{ review: Review }>(`/api/v1/reviews/${encodeURIComponent(id)}`)).review;
    },
  };
}

function toStatementResult(r: pg.QueryArrayResult): StatementResult {
  return { command: r.command, rowCount: r.rowCount, columns: r.fields.map((f) => f.name), rows: r.rows };
}

/** A tunnel the broker would not open (token, access, unknown connection) or could not reach. */
function refusal(e: unknown): GateOutcome<never> {
  if (e instanceof HoopError) return { status: 'refused', code: e.code, message: e.hint ? `${e.message} (${e.hint})` : e.message };
  return { status: 'error', message: (e as Error).message };
}

/** A writable that keeps what is written, up to MAX_CAPTURE_BYTES. */
function capture(): { sink: Writable; text(): string } {
  const chunks: Buffer[] = [];
  let size = 0;
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      size += chunk.length;
      if (size <= MAX_CAPTURE_BYTES) chunks.push(Buffer.from(chunk));
      cb();
    },
  });
  return { sink, text: () => Buffer.concat(chunks).toString('utf8') };
}
