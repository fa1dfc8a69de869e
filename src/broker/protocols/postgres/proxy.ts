import { randomBytes } from 'node:crypto';
import { Socket } from 'node:net';
import type { Duplex, Writable } from 'node:stream';
import type { Logger } from 'pino';
import type { PostgresConnection } from './config.js';
import type { HoldOutcome, StatementReviews } from '../protocol.js';
import { maskPlanFor, rowGuardMessage, type ConnectionPolicy, type MaskKey, type PolicyIdentity, type RowGuard, type Verdict } from '../../../policy/index.js';
import type { SessionRecorder } from '../../recording/recorder.js';
import { connectBackend as defaultConnectBackend, FORWARDED_PARAMETERS, type BackendSession, type ConnectBackendOptions } from './backend.js';
import type { CancelOutcome, CancelRegistration, CancelRegistry } from './cancel-registry.js';
import { routeStartupDatabase } from './database-routing.js';
import { BackendConnectError, PgWireError, protocolViolation, SqlState } from './errors.js';
import { FrameError, FrameScanner, MAX_BACKEND_FRAME, MAX_CLIENT_FRAME, type ScannedFrame, type StreamPiece } from './frame-scanner.js';
import { BackendCode, codeName, FrontendCode, StartupCode } from '../../../lib/pg-wire/message-codes.js';
import {
  createAuthenticationOk,
  createBackendKeyData,
  createBind,
  createDescribe,
  createErrorResponse,
  createParse,
  createQuery,
  createNegotiateProtocolVersion,
  createParameterStatus,
  createReadyForQuery,
  createNoticeResponse,
  createTerminate,
  describeParam,
  parseBind,
  parseCancelRequest,
  parseClose,
  parseCommandComplete,
  parseDescribe,
  parseErrorResponse,
  parseExecute,
  parseFunctionCall,
  parseParse,
  parseQuery,
  parseReadyForQuery,
  parseStartupMessage,
  rowsFromTag,
  type TransactionStatus,
  type CancelKey,
  type ErrorFields,
  type StartupMessage,
} from './messages.js';
import { ResultMasker } from './result-masker.js';
import { StatementJudge, noUnnamedPortal, type Judgement } from './statement-judge.js';
import type { VerdictCache } from './verdict-cache.js';
import { ResultTracker, type StatementResult } from './result-tracker.js';
import { StreamEndedError, StreamReader } from './stream-reader.js';
import { pumpChunks } from './chunk-pump.js';

export interface PostgresSessionContext {
  connection: PostgresConnection;
  recorder: SessionRecorder;
  cancels: CancelRegistry;
  logger: Logger;
  /** Replaces how the backend is reached; tests and alternative transports inject it. */
  connectBackend?: (conn: PostgresConnection, params: Record<string, string>, options?: ConnectBackendOptions) => Promise<BackendSession>;
  /** A client that has not finished its startup message by then is disconnected. Default 30 s. */
  startupTimeoutMs?: number;
  /** The verified identity statements are judged and masked for; absent, one without groups or client id. */
  identity?: PolicyIdentity;
  /** Statement and mask rules; absent, the connection's own `defaultAction` and `rules`. */
  policy?: ConnectionPolicy;
  /** Key of the `hash` masking strategy (joinable across sessions); absent, a random key for this session. */
  maskKey?: MaskKey;
  /** Just-in-time approval of statements a `review` rule holds; absent, such statements are refused. */
  reviews?: StatementReviews;
  /** Aborted (with a reason) when the session must end, e.g. its access grant ran out: the client gets FATAL. */
  signal?: AbortSignal;
  /** Who may cancel this session's statements (its identity from the token); absent: whoever holds the key. */
  cancelOwner?: { issuer: string; subject: string };
  /** The client's cancels carry no token (the PostgreSQL front door): its key alone may cancel. */
  cancelKeyAlone?: boolean;
  /** Verdicts of texts judged before, shared across sessions (keyed by rules and identity); absent: none kept. */
  verdicts?: VerdictCache;
}

export interface PostgresSessionSummary {
  /** 'refused': the startup asked for something the connection does not serve; nothing reached the target. */
  outcome: 'closed' | 'failed' | 'refused' | 'cancel-request';
  statementCount: number;
  /** ErrorResponses the client received: the backend's and the broker's own. */
  errorCount: number;
  error?: string;
  /** For outcome 'cancel-request': what became of it. */
  cancel?: CancelOutcome;
}

/** Recorded as 'statement' before the statement is forwarded. */
export interface StatementEvent {
  statementSeq: number;
  protocol: 'simple' | 'extended' | 'function-call';
  /** The SQL text; null when an Execute names a portal or statement the broker did not see prepared. */
  sql: string | null;
  /** Extended protocol: prepared statement name ('' is the unnamed one). */
  statement?: string;
  /** Extended protocol: portal name ('' is the unnamed one). */
  portal?: string;
  /** Bind or FunctionCall arguments: text as is, binary as `\x<hex>`, NULL as null. */
  params?: (string | null)[];
  /** FunctionCall: the function's OID. */
  functionOid?: number;
}

/** Recorded as 'verdict' right after the 'statement' it judges, before anything of it is forwarded. */
export interface VerdictEvent {
  statementSeq: number;
  action: Verdict['action'];
  /** The deciding rule; absent when the connection's `defaultAction` decided. */
  rule?: string;
  message: string;
  /** Whether the statement was refused (deny, and review while approvals are not available). */
  refused: boolean;
}

export type { StatementResult };

/** Command tags of the statements that end a transaction block (and an implicit one). */
const TRANSACTION_ENDS = new Set(['COMMIT', 'ROLLBACK', 'PREPARE TRANSACTION']);

/**
 * What a refused statement is replaced with on its way to the server: a text that can only fail to parse, so
 * the server itself raises the error — the transaction fails as with any error, the extended protocol skips to
 * Sync, ReadyForQuery carries the true transaction status — and the proxy swaps that error for the denial.
 */
const REFUSED_SQL = 'hoopctl_statement_refused_by_policy';

/** What replaces the client's Terminate to a pooled backend. */
const NOTHING = Buffer.alloc(0);

/** The savepoint a guarded write runs in inside the client's own transaction. */
const GUARD_SAVEPOINT = 'hoopctl_row_guard';
const GUARD_FRAMES = new Set<number>([BackendCode.CommandComplete, BackendCode.ErrorResponse, BackendCode.ReadyForQuery]);
/** The most of a guarded write's answer (RETURNING rows) the broker holds while it decides; more is refused. */
const GUARD_MAX_HELD_BYTES = 16 * 1024 * 1024;

/** What the backend answered to one Query the row guard sent: the raw bytes, and what they say. */
interface GuardAnswer {
  bytes: Buffer;
  /** The answer was larger than GUARD_MAX_HELD_BYTES: its bytes were dropped, only what it says is known. */
  overflow?: boolean;
  tag?: string;
  error?: ErrorFields;
  status: TransactionStatus;
}

/** Largest startup-phase message, as in PostgreSQL (MAX_STARTUP_PACKET_LENGTH). */
const MAX_STARTUP_PACKET = 10_000;
/** How long a closing stream may take to flush before it is destroyed. */
const CLOSE_GRACE_MS = 2_000;

const CLIENT_FRAMES_WANTED = new Set<number>([
  // Close only keeps the name maps from growing with clients that name every statement and portal.
  FrontendCode.Close,
  // Describe opens an extended-protocol exchange too (see #extendedOpen).
  FrontendCode.Describe,
  FrontendCode.Query,
  FrontendCode.Parse,
  FrontendCode.Bind,
  FrontendCode.Execute,
  FrontendCode.Sync,
  // Flush is read only to check it is empty (see #onClientFrame).
  FrontendCode.Flush,
  // The end of COPY data: the Syncs before it may be ignored by the server (see ResultTracker).
  FrontendCode.CopyDone,
  FrontendCode.CopyFail,
  FrontendCode.FunctionCall,
  FrontendCode.Terminate,
]);
/** Messages that are neither COPY data nor Sync/Flush: not allowed while the server takes COPY data. */
const STATEMENT_FRAMES = new Set<number>([FrontendCode.Query, FrontendCode.Parse, FrontendCode.Bind, FrontendCode.Describe, FrontendCode.Execute, FrontendCode.Close, FrontendCode.FunctionCall]);
/** The extended-protocol messages after whose failure the server skips to Sync. */
const EXTENDED_FRAMES = new Set<number>([FrontendCode.Parse, FrontendCode.Bind, FrontendCode.Describe, FrontendCode.Execute, FrontendCode.Close]);
const BACKEND_FRAMES_WANTED = new Set<number>([
  BackendCode.CopyInResponse,
  BackendCode.CommandComplete,
  BackendCode.EmptyQueryResponse,
  BackendCode.PortalSuspended,
  BackendCode.ErrorResponse,
  BackendCode.ReadyForQuery,
]);
/** With a mask plan, Describe also tells which RowDescription belongs to which statement or portal. */
const CLIENT_FRAMES_WANTED_MASKING = CLIENT_FRAMES_WANTED;
/** With a mask plan, rows and everything that can carry a value are decoded too. */
const BACKEND_FRAMES_WANTED_MASKING = new Set<number>([
  ...BACKEND_FRAMES_WANTED,
  BackendCode.RowDescription,
  BackendCode.NoData,
  BackendCode.DataRow,
  BackendCode.CopyOutResponse,
  BackendCode.CopyBothResponse,
  BackendCode.CopyData,
  BackendCode.CopyDone,
  BackendCode.NoticeResponse,
]);
/** Under a mask plan, consecutive DataRows come from the scanner as one run each (see FrameScanner `runs`). */
const DATA_ROWS = new Set<number>([BackendCode.DataRow]);

/**
 * Serves one PostgreSQL client connection arriving over a tunnel: answers the startup itself (no
 * password is asked of the client), connects to the backend with the configured credential, then
 * relays both ways, recording each statement before it is forwarded and each result when it is known.
 * Never throws; the summary says how the session ended.
 */
export async function proxyPostgresSession(client: Duplex, ctx: PostgresSessionContext): Promise<PostgresSessionSummary> {
  return new PostgresProxySession(client, ctx).run();
}

/** Ends the session without an error to send: the peer is gone or the session is already failing. */
class SessionStopped extends Error {}

class PostgresProxySession {
  readonly #client: Duplex;
  readonly #ctx: PostgresSessionContext;
  readonly #log: Logger;
  #backend: BackendSession | undefined;
  #cancelRegistration: CancelRegistration | undefined;
  /** Cancels of this session being forwarded and recorded (by other connections): awaited before the session ends. */
  readonly #cancelsInFlight = new Set<Promise<unknown>>();
  /** A cancel came for this session: its signal may still reach the backend, which then goes to no other session. */
  #cancelSeen = false;
  readonly #clientFrames: FrameScanner;
  readonly #backendFrames: FrameScanner;
  /** Judges statements; absent when no rule could refuse one and no mask plan applies (the fast path). */
  readonly #judge: StatementJudge | undefined;
  /** Masks results; absent when no mask rule applies to this identity (frames then pass as raw slices). */
  readonly #masker: ResultMasker | undefined;
  /** Verdict of each prepared statement's text, recorded again with each Execute of it. */
  readonly #statementVerdicts = new Map<string, Verdict>();
  /** After a refused Parse or Bind the server discards everything up to Sync, and so does the bookkeeping. */
  #skipUntilSync = false;
  /**
   * Parse, Bind, Describe, Execute or Close went to the server since the last Sync. After an error there the server
   * discards every message up to Sync — a simple Query or FunctionCall too — so one sent now may or may not run, and
   * its answer (or none) could not be paired with it: the broker refuses it rather than record a wrong result.
   */
  #extendedOpen = false;
  /** A statement name no client uses: a refused Bind is replaced by a Bind of it, which the server fails. */
  readonly #refusedStatementName = `hoopctl-refused-${randomBytes(8).toString('hex')}`;
  /** Whether what went to the client so far ends on a frame boundary (an error may be sent then). */
  #clientAtBoundary = true;
  readonly #results = new ResultTracker();
  /** Prepared statement name → SQL, from Parse. */
  readonly #statements = new Map<string, string>();
  /**
   * Portal name → what Bind put in it, and `boundary`: the tracker's boundariesSent when it was bound (the Sync or
   * Query whose ReadyForQuery ends its transaction comes after). Dropped as the server drops them: by Close, the
   * unnamed one by a simple Query or the next Bind of it, and all of them when their transaction ends.
   */
  /**
   * Portals the client bound, as far as the server still has them: `boundary` is the Sync/Query count and `after` the
   * statement count when it was bound, which say whether a transaction's end (at ReadyForQuery or at a COMMIT inside
   * a Sync group) came after it.
   */
  readonly #portals = new Map<string, { statement: string; sql: string | null; params: (string | null)[]; boundary: number; after: number }>();
  #statementCount = 0;
  #errorCount = 0;
  #outcome: PostgresSessionSummary['outcome'] = 'closed';
  #error: string | undefined;
  #stopping = false;
  /** The session's failure being told to the client and recorded (#fail), once one began. */
  #failing: Promise<void> | undefined;
  #clientTerminated = false;
  #terminateSent = false;
  #cancelOutcome: CancelOutcome | undefined;
  /** Set while a statement is held for review: a cancel withdraws it. */
  #holding: AbortController | undefined;
  /** The backend's transaction status at its last ReadyForQuery. */
  #transactionStatus: TransactionStatus = 'I';
  /** Waiting for every answer the backend owes to arrive (the row guard talks to it alone). */
  #quietWaiters: Array<() => void> = [];
  /** While the row guard talks to the backend: its answers go here, not to the client. */
  #guardCollector:
    | { scanner: FrameScanner; parts: Buffer[]; held: number; answer: Partial<GuardAnswer>; done(a: GuardAnswer): void; fail(): void }
    | undefined;

  constructor(client: Duplex, ctx: PostgresSessionContext) {
    this.#client = client;
    this.#ctx = ctx;
    this.#log = ctx.logger.child({ session: ctx.recorder.sessionId, connection: ctx.connection.name });
    const policy: ConnectionPolicy = ctx.policy ?? {
      defaultAction: ctx.connection.defaultAction ?? 'allow',
      rules: ctx.connection.rules ?? [],
      ...(ctx.connection.preset ? { preset: ctx.connection.preset } : {}),
    };
    const identity: PolicyIdentity = ctx.identity ?? { subject: '', kind: 'human', groups: [] };
    const plan = maskPlanFor(policy, identity);
    this.#masker = plan ? new ResultMasker(plan, ctx.maskKey ?? randomBytes(32)) : undefined;
    this.#judge = StatementJudge.needed(policy, plan) ? new StatementJudge(policy, identity, plan, ctx.reviews !== undefined, ctx.verdicts) : undefined;
    this.#clientFrames = new FrameScanner({ wanted: plan ? CLIENT_FRAMES_WANTED_MASKING : CLIENT_FRAMES_WANTED, maxLength: MAX_CLIENT_FRAME });
    this.#backendFrames = new FrameScanner({
      wanted: plan ? BACKEND_FRAMES_WANTED_MASKING : BACKEND_FRAMES_WANTED,
      maxLength: MAX_BACKEND_FRAME,
      // The masker rewrites a chunk's DataRows at once (one piece and one buffer per chunk, not per row).
      runs: plan ? DATA_ROWS : undefined,
    });
    client.on('error', (err) => this.#log.debug({ err }, 'client stream error'));
    if (client instanceof Socket) client.setNoDelay(true);
  }

  async run(): Promise<PostgresSessionSummary> {
    try {
      await this.#serve();
    } catch (e) {
      // Only reached by a bug: the paths above turn every expected failure into a summary.
      this.#log.error({ err: e }, 'postgres session failed unexpectedly');
      this.#outcome = 'failed';
      this.#error ??= e instanceof Error ? e.message : String(e);
    } finally {
      this.#cancelRegistration?.release();
      this.#backend?.socket.destroy();
      if (!this.#client.destroyed) this.#client.destroy();
      // The recording stays open for a cancel already on its way (bounded by the registry's timeout).
      await Promise.allSettled([...this.#cancelsInFlight]);
    }
    return {
      outcome: this.#outcome,
      statementCount: this.#statementCount,
      errorCount: this.#errorCount,
      ...(this.#error !== undefined ? { error: this.#error } : {}),
      ...(this.#cancelOutcome ? { cancel: this.#cancelOutcome } : {}),
    };
  }

  async #serve(): Promise<void> {
    const first = await this.#readStartup();
    if (!first) return;
    if (first.kind === 'cancel') {
      await this.#forwardCancel(first.key);
      return;
    }
    const backend = await this.#connect(first.message);
    if (!backend) return;
    const end = () => {
      const reason = String(this.#ctx.signal?.reason ?? 'the session was ended by the broker');
      this.#holding?.abort(reason);
      void this.#fail(new PgWireError('FATAL', SqlState.AdminShutdown, `hoopctl: ${reason}`), 'broker');
    };
    if (this.#ctx.signal?.aborted) return end();
    this.#ctx.signal?.addEventListener('abort', end, { once: true });
    try {
      await Promise.all([this.#relayClient(first.leftover), this.#relayBackend(backend)]);
    } finally {
      this.#ctx.signal?.removeEventListener('abort', end);
    }
    for (const r of this.#results.unfinished()) {
      const data = r.error ? { ...r, error: { code: r.error.code, message: this.#recordable(r.error.message) } } : { ...r };
      await this.#record('result', data).catch((err) => this.#log.error({ err }, 'could not record a result'));
    }
  }

  // ------------------------------------------------------------------ startup

  async #readStartup(): Promise<
    { kind: 'startup'; message: StartupMessage; leftover: Buffer } | { kind: 'cancel'; key: CancelKey } | undefined
  > {
    const reader = new StreamReader(this.#client);
    const timer = setTimeout(() => {
      this.#client.destroy(new Error('startup timeout'));
    }, this.#ctx.startupTimeoutMs ?? 30_000);
    try {
      for (;;) {
        const length = (await reader.read(4)).readInt32BE(0);
        if (length < 8 || length > MAX_STARTUP_PACKET) throw protocolViolation(`invalid startup packet length ${length}`);
        const body = await reader.read(length - 4);
        const code = body.readInt32BE(0);
        if (code === StartupCode.SSLRequest || code === StartupCode.GSSENCRequest) {
          if (length !== 8) throw protocolViolation('invalid length of encryption request');
          // The tunnel is already secure; the client continues in plain protocol over it.
          await this.#toClient(Buffer.from('N'));
          continue;
        }
        if (code === StartupCode.CancelRequest) {
          if (length !== 16) throw protocolViolation('invalid length of cancel request');
          reader.release();
          return { kind: 'cancel', key: parseCancelRequest(body) };
        }
        const major = code >>> 16;
        const minor = code & 0xffff;
        if (major !== 3) throw protocolViolation(`unsupported frontend protocol ${major}.${minor}: the broker supports 3.0`);
        const message = parseStartupMessage(body);
        return { kind: 'startup', message, leftover: reader.release() };
      }
    } catch (e) {
      reader.release();
      if (e instanceof PgWireError) {
        await this.#fail(e, 'client');
      } else if (e instanceof StreamEndedError && e.buffered === 0) {
        this.#log.debug('client closed before startup');
      } else {
        await this.#fail(protocolViolation(e instanceof StreamEndedError ? 'incomplete startup packet' : errorText(e)), 'client');
      }
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A cancel that came as a session of its own (a client older than the tunnel's `kind=cancel`): judged and recorded
   * in the session it cancels as any cancel (CancelRegistry.cancel), and in this one, whose only event it is.
   */
  async #forwardCancel(key: CancelKey): Promise<void> {
    this.#outcome = 'cancel-request';
    const { outcome, reason } = await this.#ctx.cancels.cancel(key, {
      via: 'session', connection: this.#ctx.connection.name, ...(this.#ctx.cancelOwner ? { identity: this.#ctx.cancelOwner } : {}),
    });
    this.#cancelOutcome = outcome;
    this.#log.info({ outcome }, 'cancel request');
    await this.#ctx.recorder.record('cancel-request', { outcome, ...(reason ? { reason } : {}) }).catch((err) => this.#log.error({ err }, 'could not record cancel request'));
    if (outcome !== 'forwarded' && outcome !== 'intercepted') {
      this.#error = outcome === 'unknown-key' ? 'cancel request with an unknown key' : outcome === 'refused' ? `cancel request refused: ${reason}` : 'cancel request could not be forwarded';
    }
    // The protocol has no answer to a cancel request: the server just closes the connection.
    await this.#closeClient();
  }

  async #connect(startup: StartupMessage): Promise<BackendSession | undefined> {
    const conn = this.#ctx.connection;
    const replication = startup.parameters.replication;
    if (replication !== undefined && !['false', 'off', 'no', '0'].includes(replication.toLowerCase())) {
      await this.#fail(new PgWireError('FATAL', SqlState.FeatureNotSupported, 'replication connections are not supported through the broker'), 'client');
      return undefined;
    }
    // What the client asked for is recorded before anything is decided, so a refusal shows what was refused.
    const route = routeStartupDatabase(conn, startup.parameters);
    try {
      await this.#record('client-startup', {
        ...(startup.parameters.user !== undefined ? { user: this.#recordable(startup.parameters.user) } : {}),
        ...(startup.parameters.database !== undefined ? { database: this.#recordable(startup.parameters.database) } : {}),
        ...(route.served ? { routedTo: route.database } : { refused: this.#recordable(route.message) }),
      });
    } catch {
      await this.#fail(new PgWireError('FATAL', SqlState.SystemError, 'broker could not record the session start'), 'broker');
      return undefined;
    }
    if (!route.served) {
      await this.#fail(new PgWireError('FATAL', SqlState.InvalidCatalogName, `hoopctl: ${route.message}`), 'broker');
      this.#outcome = 'refused';
      return undefined;
    }
    const params: Record<string, string> = {};
    const lower = new Map(Object.entries(startup.parameters).map(([k, v]) => [k.toLowerCase(), v]));
    for (const name of FORWARDED_PARAMETERS) {
      const v = lower.get(name.toLowerCase());
      if (v !== undefined) params[name] = v;
    }
    let backend: BackendSession;
    try {
      backend = await (this.#ctx.connectBackend ?? defaultConnectBackend)(conn, params, { database: route.database });
    } catch (e) {
      const err = e instanceof BackendConnectError ? e : new BackendConnectError(errorText(e), { code: 'BACKEND_UNREACHABLE' });
      const authProblem = err.code === 'BACKEND_AUTH_FAILED' || err.code === 'BACKEND_AUTH_UNSUPPORTED' || err.sqlState.startsWith('28');
      const message = `broker could not ${authProblem ? 'authenticate to' : 'reach'} the target "${conn.name}": ${err.message}`;
      await this.#record('backend-error', { phase: 'connect', code: err.sqlState, message }).catch(() => undefined);
      await this.#fail(new PgWireError('FATAL', err.sqlState, message), 'backend');
      return undefined;
    }
    this.#backend = backend;
    this.#transactionStatus = backend.transactionStatus;
    backend.socket.on('error', (err) => this.#log.debug({ err }, 'backend stream error'));
    try {
      await this.#record('backend-connected', {
        user: backend.user ?? conn.credentials.user,
        database: route.database,
        tls: backend.tls,
        serverVersion: backend.parameters.find((p) => p.name === 'server_version')?.value,
        applicationName: params.application_name,
        ...(backend.lease ? { pooled: { backend: backend.lease.id, reused: backend.lease.reused } } : {}),
      });
    } catch {
      await this.#fail(new PgWireError('FATAL', SqlState.SystemError, 'broker could not record the session start'), 'broker');
      return undefined;
    }
    const out: Buffer[] = [];
    const unrecognized = Object.keys(startup.parameters).filter((k) => k.startsWith('_pq_.'));
    if (startup.minor > 0 || unrecognized.length > 0) out.push(createNegotiateProtocolVersion(0, unrecognized));
    out.push(createAuthenticationOk());
    for (const p of backend.parameters) out.push(createParameterStatus(p.name, p.value));
    if (backend.key) {
      this.#cancelRegistration = this.#ctx.cancels.register({
        host: conn.target.host,
        port: conn.target.port,
        key: backend.key,
        connection: conn.name,
        ...(this.#ctx.cancelOwner ? { owner: this.#ctx.cancelOwner } : {}),
        ...(this.#ctx.cancelKeyAlone ? { keyAlone: true } : {}),
        record: (type, data) => this.#record(type, data),
        track: (cancel) => {
          this.#cancelSeen = true;
          this.#cancelsInFlight.add(cancel);
          void cancel.finally(() => this.#cancelsInFlight.delete(cancel));
        },
        intercept: () => {
          if (!this.#holding) return false;
          this.#holding.abort('canceled by the client');
          return true;
        },
      });
      out.push(createBackendKeyData(this.#cancelRegistration.key));
    }
    out.push(createReadyForQuery(backend.transactionStatus));
    try {
      await this.#toClient(Buffer.concat(out));
    } catch {
      await this.#closeBackend();
      return undefined;
    }
    return backend;
  }

  // ------------------------------------------------------------------ client → backend

  async #relayClient(leftover: Buffer): Promise<void> {
    try {
      if (leftover.length > 0) await this.#fromClient(leftover);
      if (!this.#stopping && !this.#clientTerminated) {
        await pumpChunks(this.#client, (chunk) => this.#fromClient(chunk), () => this.#stopping || this.#clientTerminated);
      }
    } catch (e) {
      if (e instanceof PgWireError) await this.#fail(e, e.sqlState === SqlState.ProtocolViolation ? 'client' : 'broker');
      else if (!(e instanceof SessionStopped) && !this.#stopping) this.#log.debug({ err: e }, 'client stream ended with an error');
    }
    const clientVanished = !this.#stopping && !this.#clientTerminated;
    this.#stopping = true;
    if (clientVanished) await this.#cancelOrphanedStatement();
    await this.#closeBackend();
  }

  /**
   * The client went away (killed, network lost) while the server still runs its statement. PostgreSQL notices a gone
   * client only when it next writes to it, so a long statement (or a write) would run to its end for nobody: the
   * broker cancels it, as psql's Ctrl-C would, and records that it did.
   */
  async #cancelOrphanedStatement(): Promise<void> {
    const registration = this.#cancelRegistration;
    if (!registration || !this.#results.awaitingAnswer) return;
    const outcome = await this.#ctx.cancels.forward(registration.key);
    await this.#record('cancel-sent', { reason: 'the client went away while its statement ran', outcome }).catch(() => undefined);
  }

  /**
   * One chunk from the client: synchronous while none of its frames has to wait (a statement waits for its record to
   * be durable), so a chunk of frames that need no record costs no promise; a promise otherwise.
   */
  #fromClient(chunk: Buffer): void | Promise<void> {
    let pieces;
    try {
      pieces = this.#clientFrames.split(chunk);
    } catch (e) {
      if (e instanceof FrameError) throw protocolViolation(e.message);
      throw e;
    }
    // Pieces of one chunk go out in one write: many small writes would meet Nagle and delayed ACKs.
    return this.#forwardClientPieces(pieces, 0, []);
  }

  /** Handles `pieces` from `i` on and sends them, with `out` (what is ready to go before them). */
  #forwardClientPieces(pieces: StreamPiece[], i: number, out: Buffer[]): void | Promise<void> {
    for (; i < pieces.length; i++) {
      if (this.#stopping || this.#clientTerminated) break;
      const piece = pieces[i]!;
      if (piece.kind !== 'frame') {
        out.push(piece.bytes);
        continue;
      }
      const substitute = this.#onClientFrame(piece, out);
      if (substitute instanceof Promise) return this.#forwardClientPiecesAfter(substitute, pieces, i, out);
      // NOTHING (a pooled backend's Terminate) is no write at all.
      if (substitute !== NOTHING) out.push(substitute ?? piece.bytes);
      if (piece.code === FrontendCode.Terminate) break;
    }
    if (out.length > 0 && !this.#stopping) return writeOrWait(this.#backendSocket(), out);
  }

  /** Goes on with the pieces once the frame at `i` may be forwarded. */
  async #forwardClientPiecesAfter(substitute: Promise<Buffer | undefined>, pieces: StreamPiece[], i: number, out: Buffer[]): Promise<void> {
    const frame = pieces[i]!;
    const bytes = await substitute;
    if (bytes !== NOTHING) out.push(bytes ?? frame.bytes);
    if (frame.kind === 'frame' && frame.code === FrontendCode.Terminate) {
      if (!this.#stopping) await writeOrWait(this.#backendSocket(), out);
      return;
    }
    await this.#forwardClientPieces(pieces, i + 1, out);
  }

  /**
   * Decodes what recording and policy need from one client frame. Returns (or resolves, when it has to wait) once it
   * may be forwarded, with the bytes to forward instead when the policy refused it. `out` holds what goes to the
   * backend before it (the row guard sends it first, as it talks to the backend itself).
   */
  #onClientFrame(frame: ScannedFrame, out: Buffer[]): Buffer | undefined | Promise<Buffer | undefined> {
    // Sync and Flush have no body. PostgreSQL answers one with a body by an error in extended-query mode and then
    // discards everything up to the next Sync, a simple Query too, which the broker would not know: it would pair the
    // answers that follow with the wrong statements (and mask them by the wrong plan). Found by `npm run fuzz`.
    if ((frame.code === FrontendCode.Sync || frame.code === FrontendCode.Flush) && frame.body.length > 0) {
      throw protocolViolation(`${frame.code === FrontendCode.Sync ? 'Sync' : 'Flush'} message with a body of ${frame.body.length} bytes (it has none)`);
    }
    // While the server takes COPY data, any other message fails the COPY and (in the extended protocol) makes the
    // server skip to a Sync it ignored or not depending on when the failure came: answers could not be paired.
    if (this.#results.inCopyIn && STATEMENT_FRAMES.has(frame.code)) {
      throw protocolViolation(`${codeName(frame.code)} message during COPY data (send CopyDone or CopyFail first)`);
    }
    if (EXTENDED_FRAMES.has(frame.code)) this.#extendedOpen = true;
    else if (this.#extendedOpen && (frame.code === FrontendCode.Query || frame.code === FrontendCode.FunctionCall)) {
      throw protocolViolation(`${frame.code === FrontendCode.Query ? 'simple Query' : 'FunctionCall'} inside an unfinished extended-protocol exchange (send Sync first)`);
    }
    switch (frame.code) {
      case FrontendCode.Query: {
        const sql = parseQuery(frame.body);
        const statementSeq = ++this.#statementCount;
        const judgement = this.#judge?.judge(sql);
        const recorded = this.#recordJudged({ statementSeq, protocol: 'simple', sql: this.#recordable(sql) }, judgement);
        if (judgement && (judgement.held || judgement.refused || judgement.verdict.guard)) return this.#judgedQuery(recorded, statementSeq, sql, judgement, out);
        return recorded.then(() => this.#queryForwarded(statementSeq, sql));
      }
      case FrontendCode.Parse: {
        const parse = parseParse(frame.body);
        if (this.#skipUntilSync) return undefined;
        let judgement = this.#judge?.judge(parse.sql, parse.name);
        if (judgement?.verdict.guard) judgement = this.#unguardedInExtendedProtocol(judgement, parse.name);
        if (judgement?.held || judgement?.refused) return this.#judgedParse(parse, judgement);
        this.#parsed(parse, judgement);
        return undefined;
      }
      case FrontendCode.Bind: {
        const bind = parseBind(frame.body);
        if (this.#skipUntilSync) return undefined;
        const sql = this.#statements.get(bind.statement) ?? null;
        const params = bind.params.map((p, i) => {
          const described = describeParam(p, bind.paramFormats[i]);
          return described === null ? null : this.#recordable(described);
        });
        const binaryRefusal = this.#masker?.bindRefusal(bind.statement, bind.resultFormats);
        if (binaryRefusal !== undefined && this.#judge) {
          const judgement = this.#judge.binaryResultRefused(binaryRefusal);
          const statementSeq = ++this.#statementCount;
          const recorded = this.#recordJudged(
            { statementSeq, protocol: 'extended', sql: sql === null ? null : this.#recordable(sql), statement: bind.statement, portal: bind.portal, params },
            judgement,
          );
          return recorded.then(() => this.#refuseUntilSync(statementSeq, judgement, createBind({ portal: bind.portal, statement: this.#refusedStatementName })));
        }
        this.#portals.set(bind.portal, { statement: bind.statement, sql, params, boundary: this.#results.boundariesSent, after: this.#statementCount });
        this.#masker?.bind(bind.portal, bind.statement, bind.resultFormats);
        return undefined;
      }
      case FrontendCode.Describe: {
        if (this.#skipUntilSync) return undefined;
        const { kind, name } = parseDescribe(frame.body);
        this.#masker?.describe(kind, name);
        return undefined;
      }
      case FrontendCode.Execute: {
        const { portal } = parseExecute(frame.body);
        if (this.#skipUntilSync) return undefined;
        const bound = this.#portals.get(portal);
        const statementSeq = ++this.#statementCount;
        if (portal === '' && !bound) {
          const judgement = noUnnamedPortal();
          const recorded = this.#recordJudged({ statementSeq, protocol: 'extended', sql: null, portal, params: [] }, judgement);
          // The server gets a Bind that fails instead, and skips to the Sync with the client: it never sees the Execute.
          return recorded.then(() => this.#refuseUntilSync(statementSeq, judgement, createBind({ portal: '', statement: this.#refusedStatementName })));
        }
        const verdict = bound ? this.#statementVerdicts.get(bound.statement) : undefined;
        const recorded = this.#recordJudged(
          {
            statementSeq,
            protocol: 'extended',
            sql: bound?.sql == null ? null : this.#recordable(bound.sql),
            statement: bound?.statement,
            portal,
            params: bound?.params ?? [],
          },
          verdict && { verdict, refused: false },
        );
        return recorded.then(() => this.#executeForwarded(statementSeq, portal, frame));
      }
      case FrontendCode.Close: {
        if (this.#skipUntilSync) return undefined;
        const { kind, name } = parseClose(frame.body);
        if (kind === 'statement') {
          this.#statements.delete(name);
          this.#statementVerdicts.delete(name);
          this.#judge?.closeStatement(name);
        } else this.#portals.delete(name);
        this.#masker?.close(kind, name);
        return undefined;
      }
      case FrontendCode.Sync:
        this.#skipUntilSync = false;
        this.#extendedOpen = false;
        // Ignored by the server during COPY data (libpq sends one there): no ReadyForQuery will answer it.
        if (!this.#results.inCopyIn) this.#masker?.sync();
        this.#results.sync();
        return undefined;
      case FrontendCode.CopyDone:
      case FrontendCode.CopyFail:
        this.#results.copyEnd();
        return undefined;
      case FrontendCode.FunctionCall: {
        const call = parseFunctionCall(frame.body);
        const statementSeq = ++this.#statementCount;
        const judgement = this.#judge?.judgeFunctionCall(call.functionOid);
        const recorded = this.#recordJudged(
          {
            statementSeq,
            protocol: 'function-call',
            sql: null,
            functionOid: call.functionOid,
            params: call.args.map((a, i) => {
              const described = describeParam(a, call.argFormats[i]);
              return described === null ? null : this.#recordable(described);
            }),
          },
          judgement,
        );
        return recorded.then(() => {
          if (judgement) {
            // Answered like a simple Query: an error, then ReadyForQuery.
            this.#results.round(statementSeq, this.#denial(judgement));
            this.#masker?.query(null);
            return createQuery(REFUSED_SQL);
          }
          this.#results.round(statementSeq);
          return undefined;
        });
      }
      case FrontendCode.Terminate:
        this.#clientTerminated = true;
        // A pooled backend stays logged in: the session's end decides whether it is given back or terminated.
        if (this.#backend?.lease) return NOTHING;
        this.#terminateSent = true;
        return undefined;
      default:
        return undefined;
    }
  }

  /** A simple Query whose record is durable and that goes to the server as sent. */
  #queryForwarded(statementSeq: number, sql: string): undefined {
    this.#results.round(statementSeq);
    this.#masker?.query(sql);
    // A simple Query runs in the unnamed portal and drops it (and any the extended protocol had left open).
    this.#portals.delete('');
    return undefined;
  }

  /** A simple Query the policy holds, refuses or guards. */
  async #judgedQuery(recorded: Promise<void>, statementSeq: number, sql: string, judgement: Judgement, out: Buffer[]): Promise<Buffer | undefined> {
    await recorded;
    if (judgement.held) judgement = await this.#hold(statementSeq, judgement, sql);
    if (judgement.refused) {
      this.#results.round(statementSeq, this.#denial(judgement));
      this.#masker?.query(null);
      return createQuery(REFUSED_SQL);
    }
    if (judgement.verdict.guard && this.#judge) {
      if (out.length > 0) await this.#toBackend(out.splice(0));
      if (await this.#runGuarded(statementSeq, sql, judgement.verdict.guard, judgement)) return Buffer.alloc(0);
    }
    return this.#queryForwarded(statementSeq, sql);
  }

  /** A Parse the policy holds or refuses (recorded as a statement; an allowed one is recorded at its Execute). */
  async #judgedParse(parse: { name: string; sql: string }, judgement: Judgement): Promise<Buffer | undefined> {
    const statementSeq = ++this.#statementCount;
    await this.#recordJudged({ statementSeq, protocol: 'extended', sql: this.#recordable(parse.sql), statement: parse.name }, judgement);
    if (judgement.held) {
      // Held at Parse: the approver sees the statement text (parameters come later, with Bind).
      judgement = await this.#hold(statementSeq, judgement, parse.sql);
    }
    if (judgement.refused) return this.#refuseUntilSync(statementSeq, judgement, createParse({ name: parse.name, sql: REFUSED_SQL }));
    this.#parsed(parse, judgement);
    return undefined;
  }

  /** A Parse that goes to the server as sent. */
  #parsed(parse: { name: string; sql: string }, judgement: Judgement | undefined): void {
    this.#statements.set(parse.name, parse.sql);
    if (judgement) this.#statementVerdicts.set(parse.name, judgement.verdict);
    this.#masker?.parse(parse.name, parse.sql);
  }

  /** An Execute whose record is durable: what goes to the server for it. */
  #executeForwarded(statementSeq: number, portal: string, frame: ScannedFrame): Buffer | undefined {
    this.#results.execute(statementSeq);
    if (this.#masker?.describeBeforeExecute(portal)) {
      // Binary rows of types nobody described: a Describe first, answered to the masker only, so it knows them.
      this.#masker.describeHidden(portal);
      this.#masker.execute(portal);
      return Buffer.concat([createDescribe('P', portal), frame.bytes]);
    }
    this.#masker?.execute(portal);
    return undefined;
  }

  /**
   * The row guard: runs a write in a savepoint (in the client's transaction) or in a transaction of its own (in
   * autocommit), reads the rows its command tag reports, and keeps it only within the limit. Above it the write is
   * rolled back before the client sees anything, then refused or held for review; a surrounding transaction goes
   * on. Returns false when the statement is to be forwarded as usual (approved after review, or a failed
   * transaction, where the server refuses anything anyway).
   */
  async #runGuarded(statementSeq: number, sql: string, guard: RowGuard, judgement: Judgement): Promise<boolean> {
    await this.#quiet();
    const status = this.#transactionStatus;
    if (status === 'E') return false;
    const autocommit = status === 'I';
    const opened = await this.#guardExchange(autocommit ? 'BEGIN' : `SAVEPOINT ${GUARD_SAVEPOINT}`);
    if (opened.error) return this.#guardAnswer(statementSeq, sql, opened.bytes);
    const run = await this.#guardExchange(sql);
    if (run.overflow) {
      // Too large to hold while deciding, and never sent half: undone and refused whatever the count.
      await this.#guardExchange(autocommit ? 'ROLLBACK' : `ROLLBACK TO SAVEPOINT ${GUARD_SAVEPOINT}; RELEASE SAVEPOINT ${GUARD_SAVEPOINT}`);
      const message = `the row guard of rule "${guard.rule}" could not hold this write's result (over ${GUARD_MAX_HELD_BYTES / 1024 / 1024} MiB of RETURNING rows) while counting, so it was rolled back; return fewer columns or rows`;
      const refused: Judgement = { ...judgement, verdict: { action: 'deny', rule: guard.rule, message }, refused: true, held: false, clientMessage: `hoopctl: statement denied by rule "${guard.rule}": ${message}` };
      await this.#recordVerdict(statementSeq, refused);
      return this.#guardRefuse(statementSeq, refused);
    }
    if (run.error) {
      // The write failed on its own: the client gets that error. In its own transaction it stays failed, as it would.
      const after = autocommit ? (await this.#guardExchange('ROLLBACK')).status : run.status;
      return this.#guardAnswer(statementSeq, sql, withStatus(run.bytes, after));
    }
    const tag = run.tag ?? '';
    const rows = rowsFromTag(tag);
    if (rows <= guard.maxAffectedRows) {
      const closed = await this.#guardExchange(autocommit ? 'COMMIT' : `RELEASE SAVEPOINT ${GUARD_SAVEPOINT}`);
      return this.#guardAnswer(statementSeq, sql, closed.error ? closed.bytes : withStatus(run.bytes, closed.status));
    }
    const undone = await this.#guardExchange(autocommit ? 'ROLLBACK' : `ROLLBACK TO SAVEPOINT ${GUARD_SAVEPOINT}; RELEASE SAVEPOINT ${GUARD_SAVEPOINT}`);
    const message = rowGuardMessage(guard, tag, rows);
    this.#log.info({ rule: guard.rule, rows, limit: guard.maxAffectedRows }, 'write over the row guard rolled back');
    let verdict: Judgement = {
      ...judgement,
      verdict: { action: guard.action, rule: guard.rule, message },
      refused: guard.action === 'deny' || !this.#ctx.reviews,
      held: guard.action === 'review' && this.#ctx.reviews !== undefined,
    };
    verdict.clientMessage = guard.action === 'deny'
      ? `hoopctl: statement denied by rule "${guard.rule}": ${message}`
      : `hoopctl: statement held for review by rule "${guard.rule}": ${message}; approval is required and approvals are not available, so it was refused`;
    await this.#recordVerdict(statementSeq, verdict);
    if (verdict.held) {
      verdict = await this.#hold(statementSeq, verdict, sql, message);
      // Approved: the write runs once, as sent, without the guard.
      if (!verdict.refused) return false;
    }
    return this.#guardRefuse(statementSeq, verdict, undone.status);
  }

  /** The guard undid the write: the client gets the refusal and the transaction status it really is in. */
  async #guardRefuse(statementSeq: number, judgement: Judgement, status: TransactionStatus = this.#transactionStatus): Promise<boolean> {
    const fields = this.#denial(judgement);
    this.#errorCount++;
    await this.#record('result', { statementSeq, tags: [], rows: 0, durationMs: 0, error: { code: fields.code, message: fields.message } });
    await this.#toClient([createErrorResponse(fields), createReadyForQuery(status)]);
    return true;
  }

  /**
   * The row guard reads one statement's tag between its own savepoint commands, which cannot be slipped into a
   * Parse/Bind/Execute/Sync group: there the guard rule's own action applies (held for review, or denied), as for any
   * write whose rows cannot be counted.
   */
  #unguardedInExtendedProtocol(judgement: Judgement, name: string): Judgement {
    const guard = judgement.verdict.guard!;
    const message = `the row guard of rule "${guard.rule}" (maxAffectedRows) counts rows of simple-protocol statements only, so this extended-protocol write is ${guard.action === 'deny' ? 'refused' : 'held for review'}; send it as a plain query to run it under the guard`;
    const verdict: Verdict = { action: guard.action, rule: guard.rule, message };
    const held = guard.action === 'review' && this.#ctx.reviews !== undefined;
    // Registered by the judge as allowed: only an approval may make it known to the session.
    this.#judge?.closeStatement(name);
    if (held) return { ...judgement, verdict, refused: false, held: true, preparedName: name };
    const clientMessage = guard.action === 'deny'
      ? `hoopctl: statement denied by rule "${guard.rule}": ${message}`
      : `hoopctl: statement held for review by rule "${guard.rule}": ${message}, and approvals are not available`;
    return { ...judgement, verdict, refused: true, held: false, clientMessage };
  }

  /** The guard's answer for the client goes the usual way: recorded, masked, then sent. */
  async #guardAnswer(statementSeq: number, sql: string, bytes: Buffer): Promise<boolean> {
    this.#results.round(statementSeq);
    this.#masker?.query(sql);
    await this.#fromBackend(bytes);
    return true;
  }

  /** Resolves once the backend owes no answer to anything sent before. */
  #quiet(): Promise<void> {
    if (this.#results.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.#quietWaiters.push(resolve));
  }

  /** Sends one Query of the guard's and collects the backend's whole answer, up to ReadyForQuery. */
  #guardExchange(sql: string): Promise<GuardAnswer> {
    return new Promise<GuardAnswer>((resolve, reject) => {
      this.#guardCollector = {
        scanner: new FrameScanner({ wanted: GUARD_FRAMES, maxLength: MAX_BACKEND_FRAME }),
        parts: [],
        held: 0,
        answer: {},
        done: (a) => {
          this.#guardCollector = undefined;
          resolve(a);
        },
        fail: () => {
          this.#guardCollector = undefined;
          reject(new SessionStopped());
        },
      };
      this.#toBackend([createQuery(sql)]).catch(reject);
    });
  }

  #collectGuard(chunk: Buffer): void {
    const c = this.#guardCollector!;
    for (const piece of c.scanner.split(chunk)) {
      c.held += piece.bytes.length;
      if (c.held > GUARD_MAX_HELD_BYTES) c.answer.overflow = true;
      if (!c.answer.overflow) c.parts.push(piece.bytes);
      if (piece.kind !== 'frame') continue;
      if (piece.code === BackendCode.CommandComplete) c.answer.tag = parseCommandComplete(piece.body);
      else if (piece.code === BackendCode.ErrorResponse) c.answer.error ??= parseErrorResponse(piece.body);
      else if (piece.code === BackendCode.ReadyForQuery) {
        this.#transactionStatus = parseReadyForQuery(piece.body);
        c.done({ bytes: Buffer.concat(c.parts), ...c.answer, status: this.#transactionStatus });
        return;
      }
    }
  }

  /**
   * Holds a statement a `review` rule caught until it is decided. Only this session waits: its client frames
   * are processed in order, so nothing after the held statement moves either. A cancel (psql Ctrl-C) or the
   * client going away withdraws the review.
   */
  async #hold(statementSeq: number, judgement: Judgement, sql: string, detail?: string): Promise<Judgement> {
    const reviews = this.#ctx.reviews!;
    const waiting = new AbortController();
    const onGone = () => waiting.abort('the client went away');
    this.#client.once('close', onGone);
    this.#holding = waiting;
    let outcome: HoldOutcome;
    try {
      outcome = await reviews.hold(
        { statement: this.#recordable(sql), rule: judgement.verdict.rule ?? 'review', message: judgement.verdict.message, ...(detail ? { detail: this.#recordable(detail) } : {}) },
        {
          signal: waiting.signal,
          notice: async (message) => {
            // Only between frames: earlier results may still be on their way to the client.
            if (this.#clientAtBoundary) await this.#toClient(createNoticeResponse({ severity: 'NOTICE', code: '00000', message }));
          },
        },
      );
    } catch (e) {
      this.#log.error({ err: e }, 'review failed');
      outcome = { approved: false, message: 'hoopctl: the statement needs approval and the review could not be filed' };
    } finally {
      this.#client.off('close', onGone);
      this.#holding = undefined;
    }
    await this.#record('review-outcome', { statementSeq, ...(outcome.reviewId ? { review: outcome.reviewId } : {}), approved: outcome.approved, message: outcome.message });
    if (outcome.approved) {
      this.#judge?.admit(judgement);
      return { ...judgement, held: false, refused: false };
    }
    const sqlState = outcome.ending === 'detached' ? SqlState.HeldForReview : outcome.ending === 'withdrawn' ? SqlState.QueryCanceled : undefined;
    return { ...judgement, held: false, refused: true, clientMessage: outcome.message, sqlState };
  }

  /** A refused Parse or Bind: its substitute fails on the server, which then skips the rest up to Sync. */
  #refuseUntilSync(statementSeq: number, judgement: Judgement, substitute: Buffer): Buffer {
    this.#results.execute(statementSeq, this.#denial(judgement));
    this.#skipUntilSync = true;
    return substitute;
  }

  /** The ErrorResponse fields a refused statement's client receives. */
  #denial(judgement: Judgement): ErrorFields {
    this.#log.info({ rule: judgement.verdict.rule, action: judgement.verdict.action }, 'statement refused by policy');
    return {
      severity: 'ERROR',
      code: judgement.sqlState ?? SqlState.InsufficientPrivilege,
      message: this.#recordable(judgement.clientMessage ?? judgement.verdict.message),
      ...(judgement.position !== undefined ? { position: String(judgement.position) } : {}),
    };
  }

  async #recordVerdict(statementSeq: number, judgement: Pick<Judgement, 'verdict' | 'refused'>): Promise<void> {
    const { verdict } = judgement;
    const message = this.#recordable(verdict.message);
    // Two literals rather than a spread of the optional rule and a spread copy (0.1–0.3 µs per statement measured);
    // the keys keep their order, so the recorded JSON is the same.
    const event: VerdictEvent =
      verdict.rule !== undefined
        ? { statementSeq, action: verdict.action, rule: verdict.rule, message, refused: judgement.refused }
        : { statementSeq, action: verdict.action, message, refused: judgement.refused };
    try {
      // The event object is fresh and not kept: recorded as it is.
      await this.#record('verdict', event as unknown as Record<string, unknown>);
    } catch (e) {
      this.#log.error({ err: e }, 'could not record verdict');
      throw new PgWireError('FATAL', SqlState.SystemError, 'broker could not record the verdict, so the statement was not forwarded');
    }
  }

  /** Text as it may be recorded: with a mask plan, every detector has run over it. */
  #recordable(text: string): string {
    return this.#masker ? this.#masker.maskRecorded(text) : text;
  }

  /**
   * A statement and, when it was judged, its verdict: both handed to the recorder before either is awaited, so they
   * share one commit. Resolves once both are durable; nothing of the statement is forwarded before.
   */
  #recordJudged(event: StatementEvent, judgement: Pick<Judgement, 'verdict' | 'refused'> | undefined): Promise<void> {
    const statement = this.#recordStatement(event);
    if (!judgement) return statement;
    const verdict = this.#recordVerdict(event.statementSeq, judgement);
    verdict.catch(noop);
    return statement.then(() => verdict);
  }

  #recordStatement(event: StatementEvent): Promise<void> {
    // The event object is the proxy's own and not kept: recorded as it is.
    return this.#record('statement', event as unknown as Record<string, unknown>).catch((e: unknown) => {
      this.#log.error({ err: e }, 'could not record statement');
      // Fail closed: a statement that cannot be recorded is never forwarded.
      throw new PgWireError('FATAL', SqlState.SystemError, 'broker could not record the statement, so it was not forwarded');
    });
  }

  // ------------------------------------------------------------------ backend → client

  async #relayBackend(backend: BackendSession): Promise<void> {
    try {
      if (backend.leftover.length > 0) await this.#fromBackend(backend.leftover);
      // A pooled backend handed back stops the pump and stays open.
      if (!this.#stopping) await pumpChunks(backend.socket, (chunk) => this.#fromBackend(chunk), () => this.#stopping, backend.lease?.handedBack);
      if (!this.#stopping && !this.#clientTerminated) await this.#backendGone('the target closed the connection');
    } catch (e) {
      if (e instanceof PgWireError) await this.#fail(e, 'broker');
      else if (!(e instanceof SessionStopped) && !this.#stopping && !this.#clientTerminated) await this.#backendGone(`connection to the target failed: ${errorText(e)}`);
    }
    // A write waiting on the row guard's answer never gets one now: the session ends.
    this.#guardCollector?.fail();
    for (const wake of this.#quietWaiters.splice(0)) wake();
    this.#stopping = true;
    // A failure under way (the client's first chunk can fail before this relay even starts) tells the client first.
    await this.#failing;
    await this.#closeClient();
  }

  /**
   * One chunk from the backend: synchronous when nothing of it is recorded (rows, a chunk that ends inside a result),
   * a promise otherwise, settled once what it recorded is durable.
   */
  #fromBackend(chunk: Buffer): void | Promise<void> {
    if (this.#stopping) throw new SessionStopped();
    if (this.#guardCollector) return this.#collectGuard(chunk);
    let pieces: StreamPiece[];
    try {
      pieces = this.#backendFrames.split(chunk);
    } catch (e) {
      if (e instanceof FrameError) return this.#backendBroke(e);
      throw e;
    }
    const recorded: Promise<void>[] = [];
    const out: Buffer[] = [];
    for (const piece of pieces) {
      if (piece.kind === 'raw') {
        out.push(piece.bytes);
        continue;
      }
      if (piece.code === BackendCode.CopyInResponse) {
        const dropped = this.#results.copyIn();
        if (dropped === undefined || (this.#masker && !this.#masker.dropSyncs(dropped))) {
          return this.#endAfter(out, recorded, protocolViolation('statements sent after a COPY FROM STDIN before the end of its data (send CopyDone or CopyFail first)'));
        }
      }
      let masked: Buffer | undefined;
      try {
        masked = piece.kind === 'run' ? this.#masker?.dataRows(piece.bytes) : this.#masker?.backendFrame(piece);
      } catch (e) {
        // Values that cannot be masked: what came before goes out, then the session ends with the error.
        return this.#endAfter(out, recorded, e);
      }
      if (piece.kind === 'run') {
        // DataRows (split out as runs under a mask plan only): nothing to record for them.
        out.push(masked ?? piece.bytes);
        continue;
      }
      const { events, replacement } = this.#onBackendFrame(piece);
      // As the answer goes out, not before it: nothing waits on these, so they may join the next statement's commit.
      if (events) for (const [type, data] of events) recorded.push(this.#record(type, data, NOT_URGENT));
      out.push(replacement ?? masked ?? piece.bytes);
    }
    this.#clientAtBoundary = this.#backendFrames.atBoundary || this.#backendFrames.holding;
    // Recording starts before the chunk goes out, so a result is in the stream before the client can
    // send its next statement; the chunk is not held back while it becomes durable.
    const sent = out.length > 0 ? writeOrWait(this.#client, out) : undefined;
    if (recorded.length === 0) return sent;
    // Marked handled now: while the recording is awaited, a client that went away rejects `sent`, and an unhandled
    // rejection would end the whole broker process (found by `npm run fuzz`). It is still awaited, and thrown, below.
    sent?.catch(noop);
    return this.#resultsDurable(recorded.length === 1 ? recorded[0]! : Promise.all(recorded), sent);
  }

  /** Settles once the results a backend chunk recorded are durable and the chunk is out; ends the session when one could not be. */
  async #resultsDurable(recorded: Promise<unknown>, sent: Promise<void> | undefined): Promise<void> {
    try {
      await recorded;
    } catch (e) {
      this.#log.error({ err: e }, 'could not record a result');
      await sent?.catch(() => undefined);
      throw new PgWireError('FATAL', SqlState.SystemError, 'broker could not record the session, so it was ended');
    }
    await sent;
  }

  /** The backend broke the framing: recorded, and the session ends. */
  async #backendBroke(e: FrameError): Promise<never> {
    await this.#record('protocol-error', { source: 'backend', message: e.message }).catch(() => undefined);
    this.#outcome = 'failed';
    this.#error = `target broke the protocol: ${e.message}`;
    throw new SessionStopped();
  }

  /** What came before in the chunk goes out, then the session ends with `err`. */
  async #endAfter(out: Buffer[], recorded: Promise<void>[], err: unknown): Promise<never> {
    if (out.length > 0) await this.#toClient(out).catch(() => undefined);
    this.#clientAtBoundary = true;
    await Promise.allSettled(recorded);
    throw err;
  }

  /** Events to record for one watched backend frame, and what replaces it (a refused statement's denial). */
  #onBackendFrame(frame: ScannedFrame): { events: Array<[string, Record<string, unknown>]> | undefined; replacement?: Buffer } {
    switch (frame.code) {
      case BackendCode.CommandComplete: {
        const rs = this.#results.commandComplete(parseCommandComplete(frame.body));
        if (this.#portals.size > 0) this.#portalsEndedBy(rs);
        return { events: this.#resultEvents(rs) };
      }
      case BackendCode.EmptyQueryResponse:
        return { events: this.#resultEvents(this.#results.emptyQuery()) };
      case BackendCode.PortalSuspended:
        return { events: this.#resultEvents(this.#results.portalSuspended()) };
      case BackendCode.ErrorResponse: {
        this.#errorCount++;
        const fields = parseErrorResponse(frame.body);
        const { results: rs, unattributed, replacement } = this.#results.error(fields);
        const events = this.#resultEvents(rs) ?? [];
        if (unattributed || fields.severity === 'FATAL' || fields.severity === 'PANIC') {
          events.push(['backend-error', { phase: 'session', code: fields.code, message: this.#recordable(fields.message), severity: fields.severity }]);
        }
        return { events, ...(replacement ? { replacement: createErrorResponse(replacement) } : {}) };
      }
      case BackendCode.ReadyForQuery: {
        this.#transactionStatus = parseReadyForQuery(frame.body);
        const rs = this.#results.readyForQuery();
        const events = this.#resultEvents(rs);
        if (this.#portals.size > 0) this.#portalsEndedBy(rs);
        if (this.#transactionStatus === 'I' && this.#portals.size > 0) this.#portalsEnded(this.#results.answered);
        if (this.#quietWaiters.length > 0 && this.#results.pending === 0) for (const wake of this.#quietWaiters.splice(0)) wake();
        return { events };
      }
      default:
        return NO_EVENTS;
    }
  }

  /** 'result' events of finished statements (undefined: none). */
  #resultEvents(rs: StatementResult[]): Array<[string, Record<string, unknown>]> | undefined {
    if (rs.length === 0) return undefined;
    return rs.map((r): [string, Record<string, unknown>] => [
      'result',
      // The tracker's result objects are fresh and not kept: recorded as they are.
      r.error ? { ...r, error: { code: r.error.code, message: this.#recordable(r.error.message) } } : (r as unknown as Record<string, unknown>),
    ]);
  }

  /**
   * No transaction is open after the message numbered `answered`: the server dropped every portal bound before it
   * (a portal lasts until the end of its transaction — an implicit one ends at Sync, committed or, after an error,
   * rolled back; an explicit one at COMMIT or ROLLBACK). Portals bound after it, in messages the client pipelined
   * behind, belong to a later transaction and stay.
   * @see https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-EXT-QUERY
   */
  #portalsEnded(answered: number): void {
    for (const [name, portal] of this.#portals) if (portal.boundary < answered) this.#portals.delete(name);
  }

  /**
   * A COMMIT, ROLLBACK or PREPARE TRANSACTION among these finished statements ended its transaction, possibly inside
   * a Sync group whose ReadyForQuery then says `T` (a BEGIN behind it): the server dropped every portal bound before
   * that statement, the one it ran in included, and kept those bound after it.
   */
  #portalsEndedBy(rs: StatementResult[]): void {
    for (const r of rs) {
      if (!r.tags.some((tag) => TRANSACTION_ENDS.has(tag))) continue;
      for (const [name, portal] of this.#portals) if (portal.after < r.statementSeq) this.#portals.delete(name);
    }
  }

  async #backendGone(message: string): Promise<void> {
    this.#error ??= message;
    await this.#record('backend-error', { phase: 'session', message }).catch(() => undefined);
  }

  // ------------------------------------------------------------------ writing and closing

  #record(type: string, data: Record<string, unknown>, options?: { urgent?: boolean }): Promise<void> {
    return this.#ctx.recorder.record(type, data, options);
  }

  /**
   * Writes to the client, as a promise (the relay's own path, #fromBackend, uses writeOrWait). Resolves once the
   * stream can take more, or at once with `wait: false` (a last message before closing must not wait on a client
   * that does not read).
   */
  #toClient(bytes: Buffer | Buffer[], options: { wait: boolean } = { wait: true }): Promise<void> {
    const written = writeWithBackpressure(this.#client, Array.isArray(bytes) ? bytes : [bytes]);
    if (options.wait) return written;
    written.catch(noop);
    return Promise.resolve();
  }

  /** Writes to the backend, as a promise. */
  #toBackend(buffers: Buffer[]): Promise<void> {
    const socket = this.#backend?.socket;
    if (!socket) return Promise.reject(new SessionStopped());
    return writeWithBackpressure(socket, buffers);
  }

  #backendSocket(): Writable {
    const socket = this.#backend?.socket;
    if (!socket) throw new SessionStopped();
    return socket;
  }

  /**
   * Ends the session because of `err`: tells the client (when the stream to it is between frames, so
   * the error cannot land inside a half-forwarded backend message), records it and closes both sides.
   */
  #fail(err: PgWireError, source: 'client' | 'backend' | 'broker'): Promise<void> {
    const failing = this.#failNow(err, source);
    this.#failing ??= failing;
    return failing;
  }

  async #failNow(err: PgWireError, source: 'client' | 'backend' | 'broker'): Promise<void> {
    if (this.#outcome === 'failed') return;
    this.#outcome = 'failed';
    this.#error = err.message;
    this.#stopping = true;
    this.#log.info({ source, sqlState: err.sqlState }, err.message);
    if (source === 'client') {
      await this.#record('protocol-error', { source, code: err.sqlState, message: err.message }).catch((e) =>
        this.#log.error({ err: e }, 'could not record protocol error'),
      );
    }
    if (this.#clientAtBoundary && isWritable(this.#client)) {
      this.#errorCount++;
      await this.#toClient(err.toWire(), { wait: false });
    }
    await Promise.all([this.#closeClient(), this.#closeBackend()]);
  }

  /**
   * Whether the backend may serve another session: the client said goodbye (Terminate) after every answer it was owed,
   * outside any transaction, COPY or unfinished extended-protocol exchange, with no error, no row guard running and
   * no cancel ever sent for it. The pool still resets it (DISCARD ALL) and closes it if that fails.
   */
  #idleForReuse(): boolean {
    return (
      this.#clientTerminated && this.#outcome === 'closed' && this.#error === undefined && !this.#cancelSeen && this.#cancelsInFlight.size === 0 &&
      this.#transactionStatus === 'I' && this.#results.pending === 0 && !this.#results.awaitingAnswer && !this.#results.inCopyIn &&
      !this.#extendedOpen && !this.#skipUntilSync && !this.#guardCollector && this.#holding === undefined && this.#backendFrames.atBoundary
    );
  }

  async #closeClient(): Promise<void> {
    await endGracefully(this.#client);
  }

  async #closeBackend(): Promise<void> {
    const backend = this.#backend;
    if (!backend) return;
    if (backend.lease && this.#idleForReuse()) {
      // The session's cancel key goes first: from now on it reaches nothing, whoever holds it.
      this.#cancelRegistration?.release();
      if (backend.lease.giveBack()) {
        this.#backend = undefined;
        return;
      }
    }
    const socket = backend.socket;
    if (!this.#terminateSent && isWritable(socket)) {
      this.#terminateSent = true;
      socket.write(createTerminate());
    }
    await endGracefully(socket);
  }
}

/** A backend answer with the status of its final ReadyForQuery (its last byte) replaced. */
function withStatus(bytes: Buffer, status: TransactionStatus): Buffer {
  const copy = Buffer.from(bytes);
  copy[copy.length - 1] = status.charCodeAt(0);
  return copy;
}

function isWritable(stream: Writable): boolean {
  return !stream.destroyed && !stream.writableEnded;
}

/** writeOrWait as a promise, rejected (not thrown) when the stream is closed. */
function writeWithBackpressure(stream: Writable, buffers: Buffer[]): Promise<void> {
  try {
    return writeOrWait(stream, buffers) ?? Promise.resolve();
  } catch (e) {
    return Promise.reject(e);
  }
}

/**
 * Writes the buffers as one write (one WebSocket frame on a tunnel: several small frames per reply meet delayed ACKs,
 * 40 ms stalls per round trip; one write to a socket). Returns nothing when the stream can take more, and a promise of
 * 'drain' (or the stream's close) when its buffer is full. Throws SessionStopped when the stream is closed.
 */
function writeOrWait(stream: Writable, buffers: Buffer[]): Promise<void> | undefined {
  if (!isWritable(stream)) throw new SessionStopped();
  if (stream.write(buffers.length === 1 ? buffers[0]! : joinBuffers(buffers))) return undefined;
  return new Promise<void>((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

/** Ends a stream, lets it flush for a moment, then destroys it. */
function endGracefully(stream: Writable): Promise<void> {
  if (stream.destroyed) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      stream.destroy();
      resolve();
    }, CLOSE_GRACE_MS);
    const done = () => {
      clearTimeout(timer);
      stream.destroy();
      resolve();
    };
    if (stream.writableFinished) return done();
    stream.once('finish', done);
    stream.once('close', done);
    if (!stream.writableEnded) stream.end();
  });
}

/**
 * The buffers as one: a view when they lie end to end in the same memory (the pieces of a chunk the scanner split and
 * nothing replaced, the usual case), a copy otherwise.
 */
function joinBuffers(buffers: Buffer[]): Buffer {
  const first = buffers[0]!;
  let end = first.byteOffset + first.length;
  let adjacent = true;
  for (let i = 1; i < buffers.length; i++) {
    const b = buffers[i]!;
    if (b.buffer !== first.buffer || b.byteOffset !== end) {
      adjacent = false;
      break;
    }
    end += b.length;
  }
  return adjacent ? Buffer.from(first.buffer, first.byteOffset, end - first.byteOffset) : Buffer.concat(buffers);
}

function noop(): void {}

/** What #onBackendFrame answers for the frames it does not watch (most of them): one object, not one per frame. */
const NO_EVENTS: { events: undefined } = Object.freeze({ events: undefined });

/** Results are recorded as the answer goes out: nothing waits on them, so they may join the next statement's commit. */
const NOT_URGENT = { urgent: false } as const;

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
