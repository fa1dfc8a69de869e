import type { Logger } from 'pino';
import type { SignalBus } from './signal-bus.js';
import type { Identity } from '../../api/identity.js';
import type { Review, ReviewKind, ReviewStatus } from '../../api/review.js';
import type { IdentityLock, SessionRow, StoredEvent } from '../../api/session.js';

export type { IdentityLock, SessionRow, StoredEvent };

/**
 * Persistence for sessions and their hash-chained event streams. SQLite is the embedded default;
 * a PostgreSQL implementation shares this interface so several broker replicas can share the load.
 * Writes resolve only once the row is durable in the store (the recorder awaits them before an action
 * is forwarded).
 */
export interface SessionFilter {
  subject?: string;
  connection?: string;
  status?: SessionRow['status'];
  /** Token claims the identity must carry (a CI run: `{ run_id: '4242' }`). */
  claims?: Record<string, string>;
  /** The front door the identity came through (`mcp`: an AI agent's tool calls). */
  via?: string;
  limit?: number;
}

export interface ReviewFilter {
  status?: ReviewStatus[];
  kind?: ReviewKind;
  connection?: string;
  requester?: string;
  limit?: number;
}

export interface ExportLease {
  /** False once the lease is gone (the store connection that held it dropped): stop exporting, ask again. */
  readonly held: boolean;
  release(): Promise<void>;
}

/** A session whose broker replica stopped heartbeating: marked failed by a survivor. */
export interface LostSession {
  session: string;
  replica: string;
}

export interface SessionEndRequest {
  by: string;
  reason: string;
  at: number;
}

export interface AppendOptions {
  /**
   * False: nothing waits on this event before acting (a result, recorded as the answer goes out), so the store may
   * hold it for a few milliseconds to join the next urgent append's commit instead of paying a commit of its own.
   * Default true: committed as soon as the current turn of the event loop is over.
   */
  urgent?: boolean;
  /** `JSON.stringify(event.data)`, when the caller already made it (for the hash), so the store need not again. */
  dataJson?: string;
}

export interface Store {
  createSession(row: SessionRow): Promise<void>;
  updateSession(id: string, patch: Partial<Pick<SessionRow, 'status' | 'endedAt' | 'statementCount' | 'errorCount'>>): Promise<void>;
  getSession(id: string): Promise<SessionRow | undefined>;
  listSessions(filter?: SessionFilter): Promise<SessionRow[]>;
  /**
   * Resolves once the event is committed. Appends are committed in the order they are made, so a recorder hands a
   * stream's next event over without waiting for the one before it to be durable; when one fails, the later events
   * of its stream that were handed over fail too (a stream never has a hole), until its writer appends again from
   * the failed seq or an earlier one (see ChainGuard).
   */
  appendEvent(event: StoredEvent, options?: AppendOptions): Promise<void>;
  /**
   * Appends to a stream several writers share (the broker-wide audit stream, written by every replica): `next`
   * builds the event from the stream's head as the store holds it, under the store's lock, so concurrent writers
   * extend one hash chain and never fork it. Returns the event written; `undefined` from `next` writes nothing.
   */
  appendToSharedStream(stream: string, next: (last: StoredEvent | undefined) => StoredEvent | undefined): Promise<StoredEvent | undefined>;
  /** The last event of a stream, to continue its chain after a restart. */
  lastEvent(stream: string): Promise<StoredEvent | undefined>;
  listEvents(stream: string, options?: { afterSeq?: number; limit?: number }): Promise<StoredEvent[]>;
  /** Events of every stream in commit order after position `pos` (0: from the start), each with its position. */
  eventsSince(pos: number, limit: number): Promise<Array<StoredEvent & { pos: number }>>;
  /** The position of the newest event (0: none yet). */
  lastEventPos(): Promise<number>;
  /** Where the export `name` got to (0: nowhere yet), and saving it once a batch was delivered. */
  exportCursor(name: string): Promise<number>;
  saveExportCursor(name: string, pos: number): Promise<void>;
  /**
   * The right to run the export `name`: exactly one replica holds it at a time. Undefined when another holds it;
   * a holder that dies (or loses the store) loses it, and the next replica to ask takes over from the saved cursor.
   */
  acquireExportLease(name: string): Promise<ExportLease | undefined>;
  createReview(review: Review): Promise<void>;
  getReview(id: string): Promise<Review | undefined>;
  listReviews(filter?: ReviewFilter): Promise<Review[]>;
  /**
   * Replaces a review only if its status is still `expected` (compare-and-set), so two approvers, an expiry and
   * a withdrawal racing each other settle on one outcome. Returns whether it was written.
   */
  replaceReview(review: Review, expected: ReviewStatus): Promise<boolean>;
  /** Marks an approved statement review as used, once: returns it, or undefined when it was already consumed. */
  consumeReview(id: string, at: number): Promise<Review | undefined>;
  createLock(lock: IdentityLock): Promise<void>;
  /** Locks not lifted and not expired at `at`. */
  activeLocks(at: number): Promise<IdentityLock[]>;
  /** Lifts a lock once; returns it, or undefined when it does not exist or was already lifted. */
  liftLock(id: string, by: string, at: number): Promise<IdentityLock | undefined>;
  /**
   * Sessions left "open" by a broker that stopped; marks them failed. Returns how many. SQLite (one broker owns the
   * file): every open session. PostgreSQL: only sessions no replica claims (opened before replicas were recorded);
   * those of replicas that stopped heartbeating go through `sweepLostReplicas`.
   */
  closeAbandonedSessions(at: number): Promise<number>;
  /**
   * Replica liveness. `registerReplica` announces this broker process (a random id per process); sessions created
   * from then on carry it. `heartbeat` says it is still alive; false when survivors already declared it lost.
   * SQLite keeps none of this (one broker owns the file): registering and beating do nothing, sweeping finds none.
   */
  registerReplica(replica: string, at: number): Promise<void>;
  heartbeat(replica: string, at: number): Promise<boolean>;
  /**
   * Declares lost every other replica whose last heartbeat is older than `staleBefore` (once: concurrent sweepers
   * settle on one), marks their open sessions failed and returns them, so the caller records why and orphans their
   * held reviews.
   */
  sweepLostReplicas(self: string, staleBefore: number, at: number): Promise<LostSession[]>;
  /**
   * `maxConcurrent` counted across replicas (PostgreSQL): takes a slot of `key` unless `max` are taken already, in one
   * step no other replica can interleave with. Returns how many were open before, and the slot when one was taken.
   * Absent (SQLite: one broker owns the store), the broker counts slots in its own memory.
   */
  takeSessionSlot?(key: string, max: number, at: number): Promise<{ open: number; slot?: string }>;
  /** Gives a slot back; never throws (an unreachable store gets it again later). */
  releaseSessionSlot?(slot: string): void;
  /**
   * `hoopctl sessions end` for a session another replica serves, kept in the store beside the signal: a replica that
   * was not listening when the signal went finds it when it resyncs. False when the session is not open (PostgreSQL;
   * SQLite has no other replica to tell).
   */
  requestSessionEnd?(id: string, request: SessionEndRequest): Promise<boolean>;
  /** The end requests kept for those of `ids` still open. */
  sessionEndRequests?(ids: string[]): Promise<Array<SessionEndRequest & { session: string }>>;
  /** Live signals to the other replicas on this store (PostgreSQL: LISTEN/NOTIFY; SQLite: nobody else to tell). */
  signalBus(origin: string, logger?: Logger): SignalBus;
  close(): Promise<void>;
}
