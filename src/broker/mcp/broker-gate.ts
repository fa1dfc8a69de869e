/**
 * The gate behind the broker's `/mcp`: each tool call is admitted and run as a session exactly as a tunnel is
 * (admission: locks, access, grants, slots; then src/broker/session-runner.ts: recorder, live registry, limits,
 * review holds, the connection type's module), except that the client end of the stream is in this process: a
 * PostgreSQL, SSH or HTTP client speaking to the module over an in-memory pair instead of a WebSocket.
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { request as httpRequest } from 'node:http';
import { Writable, type Duplex } from 'node:stream';
import pg from 'pg';
import ssh2 from 'ssh2';
import { withAgent, type AgentContext } from '../../api/agent-headers.js';
import type { ConnectionInfo } from '../../api/connection.js';
import type { Identity } from '../../api/identity.js';
import { HoopError, errorMessage } from '../../lib/errors.js';
import type { AgentGate, CommandResult, GateOutcome, HttpResult, StatementResult, ToolCallContext } from '../../mcp/gate.js';
import { commandOutcome, heldCommandReview, httpOutcome, sqlOutcome } from '../../mcp/outcomes.js';
import { decideAccess } from '../../policy/access.js';
import type { Connection } from '../config.js';
import { clientAddress } from '../http-util.js';
import type { ProtocolRuntimes } from '../protocols/registry.js';
import { describeConnection } from '../routes/connection-routes.js';
import { runSession, type SessionRunnerDeps } from '../session-runner.js';
import { fetchSessionCredentials } from '../session-credentials.js';
import { streamPair } from './stream-pair.js';

/** The most of a command's output or a response body kept in memory (the tools cap what the agent sees further). */
const MAX_CAPTURE_BYTES = 16 * 1024 * 1024;

export interface BrokerGateDeps extends SessionRunnerDeps {
  connections: () => ReadonlyMap<string, Connection>;
  protocols: ProtocolRuntimes;
  /** Calls still running, so the broker can wait for their sessions to close when it stops. */
  running: Set<Promise<unknown>>;
}

/** A gate for one MCP conversation: `current()` is the identity and HTTP request of the call being served. */
export function brokerGate(deps: BrokerGateDeps, current: () => { identity: Identity; req: IncomingMessage }): AgentGate {
  /** Admits the call as a session and gives `use` the client end of its stream; the session closes after. */
  async function inSession<T>(name: string, call: ToolCallContext, use: (stream: Duplex) => Promise<GateOutcome<T>>): Promise<GateOutcome<T>> {
    const { req } = current();
    const agent: AgentContext = { via: 'mcp', client: call.client, ...(call.reason ? { reason: call.reason } : {}) };
    const identity = withAgent(current().identity, agent);
    let admitted;
    try {
      admitted = await deps.admission.admitSession(identity, name, req);
    } catch (e) {
      if (e instanceof HoopError) return { status: 'refused', code: e.code, message: e.hint ? `${e.message} (${e.hint})` : e.message };
      throw e;
    }
    // Helper-provided secrets are fetched before the session opens, as for a tunnel: a failing helper is a refusal.
    try {
      await fetchSessionCredentials(admitted.connection, deps.logger);
    } catch (e) {
      admitted.release();
      await deps.sessions.refuse(identity, admitted.connection.name, admitted.connection.type, clientAddress(req), errorMessage(e));
      if (e instanceof HoopError) return { status: 'refused', code: e.code, message: e.hint ? `${e.message} (${e.hint})` : e.message };
      throw e;
    }
    const activity = new EventEmitter();
    const [client, served] = streamPair({ onWrite: (side) => side === 0 && activity.emit('message') });
    const session = runSession(deps, served, {
      identity, connection: admitted.connection, grant: admitted.grant, clientAddr: clientAddress(req), activity, detach: true,
      client: { agent: req.headers['user-agent'], peer: 'broker-mcp', via: agent.via, mcpClient: agent.client, reason: agent.reason },
      ...(agent.reason ? { reason: agent.reason } : {}),
    }).finally(() => {
      admitted.release();
      served.destroy();
    });
    deps.running.add(session);
    void session.finally(() => deps.running.delete(session));
    try {
      return await use(client);
    } catch (e) {
      return { status: 'error', message: errorMessage(e) };
    } finally {
      client.destroy();
      await session;
    }
  }

  return {
    async connections() {
      const { identity } = current();
      return [...deps.connections().values()]
        .filter((c) => decideAccess(identity, c.access, c.name).allowed)
        .map((c) => describeConnection(c, deps.protocols) as unknown as ConnectionInfo);
    },

    query(name, sql, params, call) {
      return inSession<StatementResult[]>(name, call, async (stream) => {
        const client = new pg.Client({ stream: () => socketLike(stream) as never, user: 'hoopctl', database: 'hoopctl' });
        client.on('error', () => undefined);
        try {
          await client.connect();
          const res = await client.query(params === undefined ? { text: sql, rowMode: 'array' } : { text: sql, values: params, rowMode: 'array' });
          const all = (Array.isArray(res) ? res : [res]) as pg.QueryArrayResult[];
          return { status: 'ok', value: all.map((r) => ({ command: r.command, rowCount: r.rowCount, columns: (r.fields ?? []).map((f) => f.name), rows: r.rows ?? [] })) };
        } catch (e) {
          return sqlOutcome(e as pg.DatabaseError);
        } finally {
          await client.end().catch(() => undefined);
        }
      });
    },

    command(name, command, call) {
      return inSession<CommandResult>(name, call, async (stream) => {
        const r = await sshExec(stream, command);
        return commandOutcome(r, heldCommandReview(r.stderr));
      });
    },

    request(name, req, call) {
      return inSession<HttpResult>(name, call, async (stream) => {
        const body = req.body === undefined ? undefined : Buffer.from(req.body);
        const res = await new Promise<HttpResult>((resolve, reject) => {
          const r = httpRequest(
            { method: req.method, path: req.path, host: 'hoopctl', headers: { ...req.headers, ...(body ? { 'content-length': String(body.length) } : {}) }, createConnection: () => socketLike(stream) as never },
            (response) => {
              const sink = capture();
              response.pipe(sink.sink);
              response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: sink.text() }));
              response.on('error', reject);
            },
          );
          r.on('error', reject);
          r.end(body);
        });
        return httpOutcome(res);
      });
    },

    async review(id) {
      const review = await deps.reviews.get(id);
      if (!review || review.requester.subject !== current().identity.subject) throw new HoopError(`review ${id} not found`, { code: 'NOT_FOUND', status: 404 });
      return review;
    },
  };
}

/** node-postgres and node:http treat the stream as their socket and call a few socket methods on it. */
function socketLike(stream: Duplex): Duplex {
  const s = stream as Duplex & Record<string, unknown>;
  for (const m of ['setNoDelay', 'setKeepAlive', 'setTimeout', 'ref', 'unref']) s[m] = () => s;
  s.connect = () => {
    process.nextTick(() => s.emit('connect'));
    return s;
  };
  return s;
}

/** One command over SSH to the broker's own SSH server on the other end (the session already proved who asks). */
async function sshExec(stream: Duplex, command: string): Promise<CommandResult> {
  const client = new ssh2.Client();
  let banner = '';
  client.on('banner', (m: string) => (banner += m));
  let triedAuth = false;
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => resolve());
    client.once('close', () => reject(new Error(banner.trim().replace(/^hoopctl: /, '') || 'the SSH connection closed')));
    client.once('error', (e: Error) => reject(new Error((banner.trim() || e.message).replace(/^hoopctl: /, ''))));
    client.connect({
      sock: stream as never,
      username: 'hoopctl',
      authHandler: (_methods, _partial, next) => {
        if (triedAuth) return next(false as never);
        triedAuth = true;
        next({ type: 'none', username: 'hoopctl' });
      },
      // The other end is this broker's own SSH module in this process, not a host on a network.
      hostVerifier: () => true,
      readyTimeout: 30_000,
    });
  });
  try {
    return await new Promise<CommandResult>((resolve, reject) => {
      client.exec(command, (err, channel) => {
        if (err) return reject(err);
        const out = capture();
        const errOut = capture();
        let exitStatus = 255;
        channel.on('exit', (code: number | null) => (exitStatus = code ?? 255));
        channel.pipe(out.sink);
        channel.stderr.pipe(errOut.sink);
        channel.end();
        channel.on('close', () => resolve({ exitStatus, stdout: out.text(), stderr: errOut.text() }));
      });
    });
  } finally {
    client.end();
  }
}

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
