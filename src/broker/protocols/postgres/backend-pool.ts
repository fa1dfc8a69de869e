/**
 * A pool of PostgreSQL backends for connections with `pool` set (config.ts): a backend logged in with the
 * connection's static credential is kept after a session that ended cleanly, reset, and lent to the next session,
 * which then skips PostgreSQL's fork and SCRAM login (some 7 ms of the server's CPU per session).
 *
 * What a session gives back is reset with `DISCARD ALL` (pgbouncer's server_reset_query) before anyone else gets it:
 * temporary tables, prepared statements, cursors, LISTENs, advisory locks, session GUCs (back to the values of the
 * backend's startup) and SET ROLE / SESSION AUTHORIZATION are gone. What it does not reset is in SECURITY.md ("Backend
 * pool"). A backend is only given back when the proxy saw the session end cleanly (the client's Terminate, the last
 * ReadyForQuery idle, nothing owed, no cancel sent to it): anything else is closed, as is a backend whose reset fails.
 *
 * Backends are kept per connection and keyed by all that makes one differ from another: the target, the routed
 * database, the role, a hash of the exact password (a password rotated by hand ends the backends of the old one), and
 * the startup parameters forwarded from the client (DISCARD ALL resets GUCs to them). Per-session roles and scheduled
 * rotation are refused with a pool in config. Cancel keys are not the pool's business: every session hands its client
 * a key of its own (CancelRegistry), forgotten when it ends, so a key of an earlier session reaches nothing.
 */
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { connectBackend as defaultConnectBackend, readMessage, type BackendLease, type BackendSession, type ConnectBackendOptions } from './backend.js';
import type { PostgresConnection } from './config.js';
import { BackendCode } from '../../../lib/pg-wire/message-codes.js';
import { createQuery, createTerminate, parseCommandComplete, parseParameterStatus, parseReadyForQuery, type CancelKey } from './messages.js';
import { StreamReader } from './stream-reader.js';

/** What resets a backend between sessions. */
export const RESET_SQL = 'DISCARD ALL';

export interface BackendPoolOptions {
  logger?: Logger;
  /** How a backend is reached when none is idle; default connectBackend. */
  connect?: (conn: PostgresConnection, params: Record<string, string>, options?: ConnectBackendOptions) => Promise<BackendSession>;
  /** A reset that has not answered by then closes the backend. */
  resetTimeoutMs?: number;
}

interface PooledBackend {
  id: string;
  connection: string;
  key: string;
  credential: string;
  generation: number;
  socket: Socket;
  /** ParameterStatus as the client must see them: from the login, updated by what the resets report. */
  parameters: Array<{ name: string; value: string }>;
  backendKey?: CancelKey;
  tls: boolean;
  user?: string;
  createdAt: number;
  idleTimeout: number;
  maxLifetime: number;
  /** The connection's `pool.idle`. */
  idleCap: number;
  /** Listeners the socket had when lent: what a session added is taken off when it comes back. */
  listeners?: Map<string, Set<Function>>;
  idleTimer?: NodeJS.Timeout;
  watch?: () => void;
}

const WATCHED_EVENTS = ['data', 'end', 'close', 'error', 'drain', 'finish', 'readable', 'timeout'] as const;

export class BackendPool {
  readonly #idle = new Map<string, PooledBackend[]>();
  readonly #connect: NonNullable<BackendPoolOptions['connect']>;
  readonly #log: Logger | undefined;
  readonly #resetTimeoutMs: number;
  /** Bumped by every reload: a backend lent before it is not taken back. */
  #generation = 0;
  #closed = false;
  #serial = 0;
  #kept = 0;

  constructor(options: BackendPoolOptions = {}) {
    this.#connect = options.connect ?? defaultConnectBackend;
    this.#log = options.logger;
    this.#resetTimeoutMs = options.resetTimeoutMs ?? 5_000;
  }

  /** How many times a backend was reset and kept since the pool started. */
  get keptTotal(): number {
    return this.#kept;
  }

  /** The pool's names of the backends idle for `connection`, oldest first. */
  idleIds(connection: string): string[] {
    return (this.#idle.get(connection) ?? []).map((b) => b.id);
  }

  /** Idle backends kept for `connection` (all connections when absent). */
  idleCount(connection?: string): number {
    if (connection !== undefined) return this.#idle.get(connection)?.length ?? 0;
    let n = 0;
    for (const list of this.#idle.values()) n += list.length;
    return n;
  }

  /**
   * A backend for a session of `conn`: an idle one with the same key, else a new login. Same contract as
   * connectBackend; the session carries a `lease` when it came through the pool.
   */
  readonly connect = async (conn: PostgresConnection, params: Record<string, string>, options: ConnectBackendOptions = {}): Promise<BackendSession> => {
    const config = conn.pool;
    if (!config || this.#closed || conn.credentials.dynamic) return this.#connect(conn, params, options);
    const credential = credentialTag(conn);
    const key = poolKey(conn, options.database ?? conn.target.database, params, credential);
    const list = this.#idle.get(conn.name);
    if (list) {
      // A password rotated by hand: what logged in with the old one goes.
      for (const b of list.filter((x) => x.credential !== credential)) this.#close(b, 'the password changed');
      for (let i = list.length - 1; i >= 0; i--) {
        const b = list[i]!;
        if (b.key !== key) continue;
        this.#unidle(b);
        if (Date.now() - b.createdAt >= b.maxLifetime || b.socket.destroyed || !b.socket.writable) {
          this.#close(b, 'too old or gone');
          continue;
        }
        return this.#lend(b, true);
      }
    }
    const session = await this.#connect(conn, params, options);
    const b: PooledBackend = {
      id: `b${++this.#serial}`, connection: conn.name, key, credential, generation: this.#generation, socket: session.socket,
      parameters: session.parameters.map((p) => ({ ...p })), ...(session.key ? { backendKey: session.key } : {}), tls: session.tls,
      ...(session.user !== undefined ? { user: session.user } : {}), createdAt: Date.now(), idleTimeout: config.idleTimeout, maxLifetime: config.maxLifetime, idleCap: config.idle,
    };
    return this.#lend(b, false, session);
  };

  /** Closes every idle backend; those lent now are closed when their sessions end (config reload). */
  clear(): void {
    this.#generation++;
    for (const list of [...this.#idle.values()]) for (const b of [...list]) this.#close(b, 'the config was reloaded');
  }

  /** Closes every idle backend and takes none back from now on (drain, shutdown). */
  close(): void {
    this.#closed = true;
    this.clear();
  }

  #lend(b: PooledBackend, reused: boolean, fresh?: BackendSession): BackendSession {
    const socket = b.socket;
    b.listeners = new Map(WATCHED_EVENTS.map((e) => [e, new Set(socket.listeners(e))]));
    const handBack = new AbortController();
    const lease: BackendLease = { id: b.id, reused, handedBack: handBack.signal, giveBack: () => this.#giveBack(b, handBack) };
    return {
      socket,
      parameters: fresh?.parameters ?? b.parameters.map((p) => ({ ...p })),
      ...(b.backendKey ? { key: b.backendKey } : {}),
      transactionStatus: 'I',
      leftover: fresh?.leftover ?? Buffer.alloc(0),
      tls: b.tls,
      notices: fresh?.notices ?? [],
      ...(b.user !== undefined ? { user: b.user } : {}),
      lease,
    };
  }

  #giveBack(b: PooledBackend, handBack: AbortController): boolean {
    if (this.#closed || b.generation !== this.#generation) return false;
    if (Date.now() - b.createdAt >= b.maxLifetime) return false;
    const socket = b.socket;
    handBack.abort();
    socket.pause();
    // Bytes the session did not read are an answer to something: the backend is not idle.
    if (socket.readableLength > 0 || socket.readableEnded) return false;
    if (socket.destroyed || !socket.writable) return false;
    for (const event of WATCHED_EVENTS) {
      const kept = b.listeners?.get(event);
      for (const l of socket.listeners(event)) if (!kept?.has(l)) socket.off(event, l as (...args: unknown[]) => void);
    }
    void this.#reset(b).then((ok) => {
      if (!ok) return this.#close(b, 'its reset failed');
      const list = this.#idle.get(b.connection) ?? [];
      if (this.#closed || b.generation !== this.#generation) return this.#close(b, 'the pool was closed or reloaded');
      // The one used longest ago makes room: the newest is the warmest, and the one a session is likeliest to want.
      while (list.length >= b.idleCap && list[0]) this.#close(list[0], 'enough backends are idle');
      this.#keep(b, this.#idle.get(b.connection) ?? []);
    });
    return true;
  }

  /** Runs the reset; true when the backend answered it fully, idle, and said nothing else. */
  async #reset(b: PooledBackend): Promise<boolean> {
    const reader = new StreamReader(b.socket);
    const timer = setTimeout(() => b.socket.destroy(), this.#resetTimeoutMs);
    try {
      b.socket.write(createQuery(RESET_SQL));
      let completed = false;
      const reported: Array<{ name: string; value: string }> = [];
      for (;;) {
        const { code, body } = await readMessage(reader);
        switch (code) {
          case BackendCode.CommandComplete:
            completed = parseCommandComplete(body) === RESET_SQL;
            break;
          case BackendCode.ParameterStatus:
            reported.push(parseParameterStatus(body));
            break;
          // A notice, or a notification that came for the session before UNLISTEN: nobody's now.
          case BackendCode.NoticeResponse:
          case BackendCode.NotificationResponse:
            break;
          case BackendCode.ReadyForQuery: {
            const idle = parseReadyForQuery(body) === 'I';
            if (!completed || !idle || reader.release().length > 0) return false;
            for (const p of reported) {
              const known = b.parameters.find((x) => x.name === p.name);
              if (known) known.value = p.value;
              else b.parameters.push(p);
            }
            return true;
          }
          default:
            // An ErrorResponse (a cancel that came late, a terminated backend), or anything unexpected.
            return false;
        }
      }
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
      reader.release();
    }
  }

  #keep(b: PooledBackend, list: PooledBackend[]): void {
    this.#kept++;
    list.push(b);
    this.#idle.set(b.connection, list);
    // Anything the server says to an idle backend (a FATAL before it is terminated, a changed setting) ends it.
    const watch = () => this.#close(b, 'it spoke or closed while idle');
    b.watch = watch;
    b.socket.on('data', watch);
    b.socket.on('end', watch);
    b.socket.on('close', watch);
    b.socket.on('error', watch);
    b.socket.resume();
    const wait = Math.max(0, Math.min(b.idleTimeout, b.createdAt + b.maxLifetime - Date.now()));
    b.idleTimer = setTimeout(() => this.#close(b, 'idle timeout or lifetime reached'), wait);
    b.idleTimer.unref();
  }

  #unidle(b: PooledBackend): void {
    if (b.idleTimer) clearTimeout(b.idleTimer);
    b.idleTimer = undefined;
    if (b.watch) for (const e of ['data', 'end', 'close', 'error'] as const) b.socket.off(e, b.watch);
    b.watch = undefined;
    b.socket.pause();
    const list = this.#idle.get(b.connection);
    const i = list?.indexOf(b) ?? -1;
    if (list && i >= 0) {
      list.splice(i, 1);
      if (list.length === 0) this.#idle.delete(b.connection);
    }
  }

  #close(b: PooledBackend, why: string): void {
    this.#unidle(b);
    this.#log?.debug({ connection: b.connection, backend: b.id, why }, 'pooled backend closed');
    const socket = b.socket;
    socket.on('error', () => undefined);
    if (socket.destroyed) return;
    if (socket.writable) socket.end(createTerminate());
    // The server closes once it reads Terminate; a server that does not is not waited for.
    setTimeout(() => socket.destroy(), 1_000).unref();
    socket.resume();
  }
}

/** Stands for the credential in keys: the role and the exact password, hashed (the key is kept in memory only). */
function credentialTag(conn: PostgresConnection): string {
  return createHash('sha256').update(conn.credentials.user).update('\0').update(conn.credentials.password?.reveal() ?? '').digest('base64');
}

function poolKey(conn: PostgresConnection, database: string, params: Record<string, string>, credential: string): string {
  const t = conn.target;
  const forwarded = Object.entries(params).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify([t.host, t.port, t.sslmode, t.sslrootcert ?? null, database, conn.credentials.user, credential, forwarded]);
}
