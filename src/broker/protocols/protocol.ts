/**
 * The contract between the broker and a connection type. A protocol module owns, in its own folder, its config
 * schema, how it describes itself to clients, and `serve()`: one tunnel stream in, a summary out. The broker's tunnel
 * endpoint authenticates, admits and opens the session, then hands the stream to the module the registry
 * (./registry.ts) names for the connection's type. Everything a module needs of the broker comes in through the
 * session context below; a module never imports the broker above it (checked by .dependency-cruiser.cjs).
 */
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { ZodType } from 'zod';
import type { Identity } from '../../api/identity.js';
import type { MaskKey } from '../../policy/masking.js';
import type { DryRunResult } from '../../policy/dry-run.js';
import type { PolicyIdentity } from '../../policy/rules.js';
import type { Secret } from '../../lib/secret.js';
import type { SessionRecorder } from '../recording/recorder.js';
import type { ConnectionBase, ResolveContext } from './connection-schema.js';

/** A statement, command or request a `review` rule holds, as the review machinery sees it. */
export interface HoldRequest {
  /** What is held, as recorded (masked): SQL, a command line, `METHOD /path`. */
  statement: string;
  rule: string;
  message: string;
  /** Shown to the approver with the statement: the row guard's count of the rows it would change. */
  detail?: string;
}

export type HoldOutcome =
  | { approved: true; reviewId: string; message: string }
  | {
      approved: false;
      reviewId?: string;
      message: string;
      /** Why it ended undecided: the client asked not to wait, or went away (cancelled); absent when decided. */
      ending?: 'detached' | 'withdrawn';
    };

/**
 * Just-in-time approval of what a session's rules hold, one contract for every protocol (the broker's
 * src/broker/reviews/statement-holds.ts implements it).
 */
export interface StatementReviews {
  /**
   * Files a review for a held statement (or finds one already approved for it), tells the client through
   * `io.notice`, and resolves with the decision. `io.signal` aborts when the client cancels or goes away.
   */
  hold(request: HoldRequest, io: { notice(message: string): Promise<void>; signal: AbortSignal }): Promise<HoldOutcome>;
}

/** What a module gets to serve one session. */
export interface SessionContext<C extends ConnectionBase = ConnectionBase> {
  connection: C;
  /** The session's event stream: every statement, verdict and result goes here before it is forwarded. */
  recorder: SessionRecorder;
  identity: Identity;
  logger: Logger;
  /** Key of the `hash` masking strategy: joinable across sessions (and replicas when configured). */
  maskKey: MaskKey;
  /** Aborted (with a reason) when the session must end: a lock, an admin, a grant or a limit ran out. */
  signal: AbortSignal;
  /** Absent when the connection names no approvers: what a review rule holds is then refused (fail closed). */
  reviews?: StatementReviews;
  /** The client asked not to wait for reviews (`hoopctl exec --no-wait`): a held statement ends at once. */
  detachedReviews: boolean;
  /** When the session ends at the latest (its maximum duration, or its token's expiry with endWithToken); absent: no limit. */
  endsAt?: number;
  /**
   * An OpenSSH public key the tunnel's owner requires of the clients it carries (`hoopctl connect` to an ssh
   * connection makes one per tunnel): the SSH hop then accepts that key only, so another local process cannot ride it.
   */
  clientKey?: string;
  /**
   * The client came through a listener whose cancel requests carry no token (the PostgreSQL front door): a cancel
   * presenting the session's key alone may stop its statement, as with PostgreSQL. Otherwise only the session's own
   * identity may cancel it.
   */
  cancelKeyAlone?: boolean;
}

/**
 * A connection a client opened only to cancel what one of its sessions runs (PostgreSQL's CancelRequest travels on a
 * connection of its own): it is no session; the module finds the session it names and records it there.
 */
export interface CancelContext<C extends ConnectionBase = ConnectionBase> {
  /** The tunnel's verified identity; absent on a listener whose cancels carry no token (the PostgreSQL front door). */
  identity?: Identity;
  /** The connection the tunnel was opened for; absent on the front door (the cancel's key names the session). */
  connection?: C;
  clientAddr: string;
  /** Where it came in: `tunnel` or `pg-front-door`. */
  via: string;
  logger: Logger;
}

/** How a session ended, in the broker's words. */
export interface SessionSummary {
  /** 'refused': the client asked for something the connection does not serve; nothing reached the target. */
  outcome: 'closed' | 'failed' | 'refused';
  /** Statements, commands or requests the client sent. */
  statementCount: number;
  /** Of them, refused or failed. */
  errorCount: number;
  error?: string;
}

/** What a running module may ask of the broker that runs it, beyond one session. */
export interface ProtocolHost {
  logger: Logger;
  /** Where the broker keeps its own files (the store's directory): keys a module generates live there. */
  dataDir: string;
  /** Keys configured at the top of the broker config (`ssh.hostKey`: the broker's own SSH host key). */
  keys: { ssh?: Secret };
  /** Whether the store holds session `id` as open (on any broker sharing it): what a sweep of leftovers must keep. */
  sessionOpen?(id: string): Promise<boolean>;
  /** Appends a broker-wide audit event (outside any session). */
  audit?(type: string, data: Record<string, unknown>): Promise<void>;
}

/**
 * A connection type. What it knows of its config is static (the config loader and `policy check` use it with no
 * broker running); `start` makes what serves sessions for one running broker (it may hold state: cancel keys, a key).
 */
export interface ProtocolModule<C extends ConnectionBase = ConnectionBase> {
  /** The connection `type` this module serves. */
  readonly type: C['type'];
  /** zod schema of a connection entry of this type (its `type` a literal), built on ./connection-schema.ts. */
  readonly schema: ZodType;
  /** Turns a parsed entry into what `serve` gets: secrets resolved, files read (errors name the field). */
  resolve(raw: unknown, ctx: ResolveContext): C;
  /** Where the backend is, without any credential: recorded with each session, shown in `hoopctl sessions`. */
  target(connection: C): Record<string, unknown>;
  /**
   * What `hoopctl broker check` (and start, before it creates anything) must find usable beyond the entry's secrets:
   * files it names, keys that must parse. Each problem is `field: what is wrong`, `field` under `at` (`connections[2]`).
   */
  check?(connection: C, at: string): string[];
  /**
   * What its rules decide for `input` from `identity`, judged by the same functions its proxy uses: the dry run of
   * `hoopctl policy check`. Absent: the type has no rules of its own, and access alone decides.
   */
  judge?(connection: C, identity: PolicyIdentity, input: { text?: string; shell: boolean }): Promise<DryRunResult>;
  /**
   * Rotation of the connection's static credential (`hoopctl broker rotate`, `credentials.rotateEvery`); absent: the
   * type has none.
   */
  readonly rotation?: {
    /** How often the schedule rotates, and the secret file whose mtime says when it last was; absent: not scheduled. */
    schedule(connection: C): { every: number; file: string } | undefined;
    /** Sets a new credential on the backend and in its file; resolves with what the audit event records (never the secret). */
    rotate(connection: C): Promise<Record<string, unknown>>;
  };
  /** What its `review` rules hold, as review messages name it. */
  readonly holds?: 'statement' | 'command' | 'request';
  start(host: ProtocolHost): ProtocolRuntime<C>;
}

export interface ProtocolRuntime<C extends ConnectionBase = ConnectionBase> {
  /** What clients are told about the connection beyond its name and type (`GET /api/v1/connections/NAME`). */
  describe(connection: C): Record<string, unknown>;
  /** Called with this type's connections at start and on every reload: load what they need, warn of risky settings. */
  prepare?(connections: readonly C[]): void;
  /** Serves one tunnel stream until it closes. Never throws: the summary says how it ended. */
  serve(stream: Duplex, session: SessionContext<C>): Promise<SessionSummary>;
  /**
   * Reads a cancel from `stream` and acts on it in the session it names (recorded there), with no session of its own;
   * one that matches no session, or that its sender may not send, is an audit event (ProtocolHost.audit). Never
   * throws. Absent: the type has no cancels that come apart from their session.
   */
  cancel?(stream: Duplex, request: CancelContext<C>): Promise<void>;
  /** The broker drains or stops: let go of what is kept for later sessions (pooled backends). */
  close?(): void;
}
