import Database from 'better-sqlite3';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Identity } from '../../api/identity.js';
import { HoopError, UserError } from '../../lib/errors.js';
import { InProcessSignalBus, type SignalBus } from './signal-bus.js';
import { ChainGuard } from './chain-guard.js';
import { claimStore, EventJournal, journalPathFor, type JournalEntry } from './event-journal.js';
import { journalUnwritable } from './store-errors.js';
import type { AppendOptions, ExportLease, IdentityLock, LostSession, ReviewFilter, SessionFilter, SessionRow, Store, StoredEvent } from './store.js';
import type { Review, ReviewStatus } from '../../api/review.js';

/**
 * The embedded store. WAL with synchronous=NORMAL: a committed event survives a broker crash (the
 * recorder's promise resolves after the commit); a power loss may drop the last transactions, which
 * the hash chain then shows as a truncated stream. Migrations are numbered and run in one transaction each.
 */
export const sqliteMigrations: string[] = [
  `CREATE TABLE sessions (
     id TEXT PRIMARY KEY,
     connection TEXT NOT NULL,
     connection_type TEXT NOT NULL,
     subject TEXT NOT NULL,
     identity TEXT NOT NULL,
     client_addr TEXT NOT NULL,
     status TEXT NOT NULL,
     started_at INTEGER NOT NULL,
     ended_at INTEGER,
     statement_count INTEGER NOT NULL DEFAULT 0,
     error_count INTEGER NOT NULL DEFAULT 0
   );
   CREATE INDEX sessions_started ON sessions (started_at DESC);
   CREATE INDEX sessions_subject ON sessions (subject, started_at DESC);
   CREATE TABLE events (
     stream TEXT NOT NULL,
     seq INTEGER NOT NULL,
     at INTEGER NOT NULL,
     type TEXT NOT NULL,
     data TEXT NOT NULL,
     prev_hash TEXT NOT NULL,
     hash TEXT NOT NULL,
     PRIMARY KEY (stream, seq)
   ) WITHOUT ROWID;
   CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
   CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;`,
  `CREATE TABLE reviews (
     id TEXT PRIMARY KEY,
     kind TEXT NOT NULL,
     connection TEXT NOT NULL,
     requester TEXT NOT NULL,
     status TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     body TEXT NOT NULL
   );
   CREATE INDEX reviews_status ON reviews (status, created_at);
   CREATE INDEX reviews_requester ON reviews (requester, connection, status);`,
  // One order over every stream, in commit order, for exports to follow with a cursor that survives restarts.
  `CREATE TABLE event_order (pos INTEGER PRIMARY KEY, stream TEXT NOT NULL, seq INTEGER NOT NULL);
   INSERT INTO event_order (stream, seq) SELECT stream, seq FROM events ORDER BY at, stream, seq;
   CREATE TRIGGER events_in_order AFTER INSERT ON events BEGIN INSERT INTO event_order (stream, seq) VALUES (NEW.stream, NEW.seq); END;
   CREATE TRIGGER event_order_append_only BEFORE UPDATE ON event_order BEGIN SELECT RAISE(ABORT, 'event order is append-only'); END;
   CREATE TABLE export_cursors (name TEXT PRIMARY KEY, pos INTEGER NOT NULL, updated_at INTEGER NOT NULL);`,
  `CREATE TABLE identity_locks (
     id TEXT PRIMARY KEY,
     created_at INTEGER NOT NULL,
     expires_at INTEGER,
     lifted_at INTEGER,
     body TEXT NOT NULL
   );
   CREATE INDEX identity_locks_active ON identity_locks (lifted_at, expires_at);`,
  // The commit order moves into the events table itself: `pos` is its rowid, filled by the insert (max + 1; rows are
  // never deleted), so an append is one sequential write plus the (stream, seq) index instead of a random-order
  // insert into a clustered table and a trigger's second insert. Positions are kept, so export cursors stay valid.
  `CREATE TABLE events_by_pos (
     pos INTEGER PRIMARY KEY,
     stream TEXT NOT NULL,
     seq INTEGER NOT NULL,
     at INTEGER NOT NULL,
     type TEXT NOT NULL,
     data TEXT NOT NULL,
     prev_hash TEXT NOT NULL,
     hash TEXT NOT NULL,
     UNIQUE (stream, seq)
   );
   INSERT INTO events_by_pos (pos, stream, seq, at, type, data, prev_hash, hash)
     SELECT o.pos, e.stream, e.seq, e.at, e.type, e.data, e.prev_hash, e.hash
     FROM events e JOIN event_order o ON o.stream = e.stream AND o.seq = e.seq ORDER BY o.pos;
   INSERT INTO events_by_pos (stream, seq, at, type, data, prev_hash, hash)
     SELECT e.stream, e.seq, e.at, e.type, e.data, e.prev_hash, e.hash
     FROM events e WHERE NOT EXISTS (SELECT 1 FROM event_order o WHERE o.stream = e.stream AND o.seq = e.seq) ORDER BY e.at, e.stream, e.seq;
   DROP TRIGGER events_in_order;
   DROP TRIGGER event_order_append_only;
   DROP TRIGGER events_append_only_update;
   DROP TRIGGER events_append_only_delete;
   DROP TABLE event_order;
   DROP TABLE events;
   ALTER TABLE events_by_pos RENAME TO events;
   CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
   CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;`,
  // Events the journal acknowledged whose (stream, seq) another writer of the file had already taken: never dropped,
  // kept here beside the foreign row (which breaks the stream's chain, so `audit verify` names the place).
  `CREATE TABLE events_displaced (
     stream TEXT NOT NULL,
     seq INTEGER NOT NULL,
     at INTEGER NOT NULL,
     type TEXT NOT NULL,
     data TEXT NOT NULL,
     prev_hash TEXT NOT NULL,
     hash TEXT NOT NULL,
     found_at INTEGER NOT NULL,
     PRIMARY KEY (stream, seq, hash)
   );
   CREATE TRIGGER events_displaced_append_only_update BEFORE UPDATE ON events_displaced BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
   CREATE TRIGGER events_displaced_append_only_delete BEFORE DELETE ON events_displaced BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;`,
];

interface SessionRecord {
  id: string;
  connection: string;
  connection_type: string;
  identity: string;
  client_addr: string;
  status: SessionRow['status'];
  started_at: number;
  ended_at: number | null;
  statement_count: number;
  error_count: number;
}

/** How long a non-urgent event may wait for an urgent one to share its write. */
const HOLD_MS = 5;
/** How long journaled events may wait to be copied into SQLite, and how many may wait before they are at once. */
const INGEST_MS = 20;
const INGEST_MAX = 4096;

interface Pending extends JournalEntry {
  /** `data`: the data as JSON, taken when it was appended (the caller's object may change afterwards). */
  resolve(): void;
  reject(e: unknown): void;
}

interface EventRecord {
  stream: string;
  seq: number;
  at: number;
  type: string;
  data: string;
  prev_hash: string;
  hash: string;
}

export class SqliteStore implements Store {
  readonly #db: Database.Database;
  readonly #insertEvent: Database.Statement;
  readonly #lastEvent: Database.Statement;
  readonly #insertBatch: (batch: readonly JournalEntry[]) => void;
  /** Undefined for an in-memory store: its appends are committed to SQLite directly. */
  readonly #journal: EventJournal | undefined;
  readonly #release: () => void;
  /** Events in the journal (acknowledged) not yet copied into SQLite, in journal order. */
  #backlog: JournalEntry[] = [];
  #ingestTimer: NodeJS.Timeout | undefined;
  /** Why the last copy into SQLite failed; appends are refused until a copy succeeds (the journal stays bounded). */
  #ingestError: unknown;
  #pending: Pending[] = [];
  #flushScheduled = false;
  #holdTimer: NodeJS.Timeout | undefined;
  readonly #guard = new ChainGuard();
  readonly #leases = new Set<string>();
  /** Statements every session runs, prepared once (preparing costs more than running them). */
  readonly #prepared = new Map<string, Database.Statement>();

  constructor(path: string) {
    let release = (): void => undefined;
    if (path !== ':memory:') {
      mkdirSync(dirname(path), { recursive: true });
      // Sessions and reviews are for the broker's eyes only: a new store is created 0600, and SQLite gives its
      // -wal and -shm files the mode of the database file. An existing store keeps the mode its operator chose.
      closeSync(openSync(path, 'a', 0o600));
      release = claimStore(path);
    }
    try {
      try {
        this.#db = new Database(path);
        this.#db.pragma('journal_mode = WAL');
      } catch (e) {
        // Not a SQLite file, or one SQLite cannot open: the operator's to fix, not a bug.
        throw new UserError(`cannot open the store ${path}: ${(e as Error).message}`, { code: 'STORE_UNREADABLE', hint: 'check store.path in the broker config: it must be a hoopctl SQLite store, or a new file', cause: e });
      }
      this.#db.pragma('synchronous = NORMAL');
      this.#db.pragma('busy_timeout = 5000');
      this.#db.pragma('wal_autocheckpoint = 10000');
      this.#migrate(path);
      this.#insertEvent = this.#db.prepare(
        'INSERT INTO events (stream, seq, at, type, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)',
      );
      this.#lastEvent = this.#db.prepare('SELECT * FROM events WHERE stream = ? ORDER BY seq DESC LIMIT 1');
      const sameEvent = this.#db.prepare('SELECT hash FROM events WHERE stream = ? AND seq = ?').pluck();
      const displace = this.#db.prepare(
        'INSERT OR IGNORE INTO events_displaced (stream, seq, at, type, data, prev_hash, hash, found_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      );
      this.#insertBatch = this.#db.transaction((batch: readonly JournalEntry[]) => {
        for (const { event: e, data } of batch) {
          try {
            this.#insertOne(e, data);
          } catch (err) {
            if (!String((err as { code?: unknown }).code).startsWith('SQLITE_CONSTRAINT')) throw err;
            // Copied already (a broker stopped between the copy and emptying the journal): nothing to do. Another
            // writer of the file took the place: the acknowledged event is kept beside it, never dropped.
            if (sameEvent.get(e.stream, e.seq) !== e.hash) displace.run(e.stream, e.seq, e.at, e.type, data, e.prevHash, e.hash, Date.now());
          }
        }
      });
      this.#journal = path === ':memory:' ? undefined : this.#openJournal(journalPathFor(path));
    } catch (e) {
      release();
      throw e;
    }
    this.#release = release;
  }

  /**
   * Copies what a stopped broker left in the journal into SQLite (whole records only: a torn last record was never
   * acknowledged), then opens it for appends. A journal with a torn tail is kept beside the store for an operator.
   */
  #openJournal(path: string): EventJournal {
    const left = EventJournal.read(path);
    try {
      if (left.entries.length > 0) this.#insertBatch(left.entries);
    } catch (e) {
      throw new UserError(`cannot copy the event journal ${path} into the store: ${(e as Error).message}`, {
        code: 'STORE_UNREADABLE', hint: 'the journal holds acknowledged events: make the store writable (disk space, permissions) and start the broker again', cause: e,
      });
    }
    if (left.tornBytes > 0) EventJournal.keepDamaged(path, Date.now());
    const journal = new EventJournal(path);
    if (journal.size > 0) journal.clear();
    return journal;
  }

  #migrate(path: string): void {
    this.#db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    const row = this.#db.prepare('SELECT max(version) AS v FROM schema_migrations').get() as { v: number | null };
    const current = row.v ?? 0;
    if (current > sqliteMigrations.length) {
      throw new UserError(`the store ${path} has schema version ${current}, newer than this broker understands (${sqliteMigrations.length})`, {
        code: 'STORE_TOO_NEW',
        hint: 'a newer hoopctl wrote it: run that version, or upgrade this one',
      });
    }
    for (let v = current + 1; v <= sqliteMigrations.length; v++) {
      this.#db.transaction(() => {
        this.#db.exec(sqliteMigrations[v - 1]!);
        this.#db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(v, Date.now());
      })();
    }
  }

  #statement(sql: string): Database.Statement {
    let st = this.#prepared.get(sql);
    if (!st) this.#prepared.set(sql, (st = this.#db.prepare(sql)));
    return st;
  }

  async createSession(row: SessionRow): Promise<void> {
    this.#statement(
      `INSERT INTO sessions (id, connection, connection_type, subject, identity, client_addr, status, started_at, ended_at, statement_count, error_count)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    )
      .run(row.id, row.connection, row.connectionType, row.identity.subject, JSON.stringify(row.identity), row.clientAddr, row.status,
        row.startedAt, row.endedAt ?? null, row.statementCount, row.errorCount);
  }

  async updateSession(id: string, patch: Partial<Pick<SessionRow, 'status' | 'endedAt' | 'statementCount' | 'errorCount'>>): Promise<void> {
    const columns: Record<string, string> = { status: 'status', endedAt: 'ended_at', statementCount: 'statement_count', errorCount: 'error_count' };
    const sets: string[] = [];
    const values: unknown[] = [];
    for (const [key, value] of Object.entries(patch)) {
      if (value === undefined) continue;
      sets.push(`${columns[key]} = ?`);
      values.push(value);
    }
    if (sets.length === 0) return;
    // A handful of column sets occur (close: all four): each is prepared once.
    this.#statement(`UPDATE sessions SET ${sets.join(', ')} WHERE id = ?`).run(...values, id);
  }

  async getSession(id: string): Promise<SessionRow | undefined> {
    const r = this.#db.prepare('SELECT * FROM sessions WHERE id = ?').get(id) as SessionRecord | undefined;
    return r && toSession(r);
  }

  async listSessions(filter: SessionFilter = {}): Promise<SessionRow[]> {
    const where: string[] = [];
    const values: unknown[] = [];
    if (filter.subject) {
      where.push('subject = ?');
      values.push(filter.subject);
    }
    if (filter.connection) {
      where.push('connection = ?');
      values.push(filter.connection);
    }
    if (filter.status) {
      where.push('status = ?');
      values.push(filter.status);
    }
    if (filter.via) {
      where.push(`json_extract(identity, '$.via') = ?`);
      values.push(filter.via);
    }
    for (const [name, value] of Object.entries(filter.claims ?? {})) {
      if (!/^[A-Za-z0-9_]+$/.test(name)) throw new HoopError(`not a claim name: ${name}`, { code: 'BAD_REQUEST', status: 400 });
      where.push(`json_extract(identity, '$.claims.${name}') = ?`);
      values.push(value);
    }
    const sql = `SELECT * FROM sessions ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY started_at DESC, rowid DESC LIMIT ?`;
    return (this.#db.prepare(sql).all(...values, filter.limit ?? 100) as SessionRecord[]).map(toSession);
  }

  /**
   * Group write: events appended during one turn of the event loop (from all sessions) are written to the journal
   * in one `write()` just after it, and every caller's promise resolves once that write returned (see
   * event-journal.ts): a statement is durable before it is forwarded, for the cost of one system call per batch.
   * The journal is copied into SQLite INGEST_MS later, many batches per transaction; readers of events copy it first,
   * so they see every acknowledged event. A non-urgent event (a result) waits up to HOLD_MS for an urgent one to
   * share its write. An in-memory store commits each batch to SQLite instead.
   */
  appendEvent(e: StoredEvent, options?: AppendOptions): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ event: e, data: options?.dataJson ?? JSON.stringify(e.data), resolve, reject });
      // The timer is not cleared when an urgent append flushes the event first (one client's next statement, every
      // few hundred µs): it fires once and finds nothing, cheaper than a timer made and cleared per statement.
      if (options?.urgent === false) this.#holdTimer ??= setTimeout(this.#holdOver, HOLD_MS);
      else this.#scheduleFlush();
    });
  }

  readonly #holdOver = (): void => {
    this.#holdTimer = undefined;
    if (this.#pending.length > 0) this.#scheduleFlush();
  };

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => this.#flush());
  }

  #flush(): void {
    this.#flushScheduled = false;
    const batch: Pending[] = [];
    for (const p of this.#pending) {
      const refusal = this.#guard.refusal(p.event);
      if (refusal) p.reject(refusal);
      else batch.push(p);
    }
    this.#pending = [];
    if (batch.length === 0) return;
    if (this.#journal) return this.#journalBatch(this.#journal, batch);
    try {
      this.#insertBatch(batch);
      for (const p of batch) p.resolve();
    } catch {
      // One bad row must not sink the others' streams: retry one by one so each caller learns its own outcome,
      // and the rows chained on a failed one are refused with it.
      for (const p of batch) {
        const refusal = this.#guard.refusal(p.event);
        if (refusal) {
          p.reject(refusal);
          continue;
        }
        try {
          this.#insertOne(p.event, p.data);
          p.resolve();
        } catch (e) {
          this.#guard.failed(p.event);
          p.reject(e);
        }
      }
    }
  }

  #journalBatch(journal: EventJournal, batch: Pending[]): void {
    try {
      if (this.#ingestError !== undefined) this.#ingest();
      journal.appendEntries(batch);
    } catch (e) {
      const refusal = journalUnwritable(e);
      for (const p of batch) {
        this.#guard.failed(p.event);
        p.reject(refusal);
      }
      return;
    }
    for (const p of batch) {
      this.#backlog.push(p);
      p.resolve();
    }
    if (this.#backlog.length >= INGEST_MAX) setImmediate(() => this.#ingestQuietly());
    else this.#ingestTimer ??= setTimeout(() => this.#ingestQuietly(), INGEST_MS);
  }

  /** Copies the journal's backlog into SQLite in one transaction and empties the journal; throws when SQLite refuses. */
  #ingest(): void {
    if (this.#ingestTimer) {
      clearTimeout(this.#ingestTimer);
      this.#ingestTimer = undefined;
    }
    if (this.#backlog.length === 0) return;
    try {
      this.#insertBatch(this.#backlog);
    } catch (e) {
      this.#ingestError = e;
      throw e;
    }
    this.#ingestError = undefined;
    this.#backlog = [];
    try {
      this.#journal!.clear();
    } catch {
      // The copied records stay in the journal; copying them again on start finds them in place.
    }
  }

  #ingestQuietly(): void {
    try {
      this.#ingest();
    } catch {
      // Kept in #ingestError: the next batch of appends is refused with it, and retries first.
    }
  }

  #insertOne(e: StoredEvent, data: string): void {
    this.#insertEvent.run(e.stream, e.seq, e.at, e.type, data, e.prevHash, e.hash);
  }

  /** One process writes a SQLite store: the read of the head and the insert run in one synchronous transaction. */
  async appendToSharedStream(stream: string, next: (last: StoredEvent | undefined) => StoredEvent | undefined): Promise<StoredEvent | undefined> {
    this.#ingest();
    return this.#db.transaction(() => {
      const last = this.#lastEvent.get(stream) as EventRecord | undefined;
      const event = next(last && toEvent(last));
      if (event) this.#insertOne(event, JSON.stringify(event.data));
      return event;
    })();
  }

  async lastEvent(stream: string): Promise<StoredEvent | undefined> {
    this.#ingest();
    const r = this.#lastEvent.get(stream) as EventRecord | undefined;
    return r && toEvent(r);
  }

  async listEvents(stream: string, options: { afterSeq?: number; limit?: number } = {}): Promise<StoredEvent[]> {
    this.#ingest();
    const rows = this.#db
      .prepare('SELECT * FROM events WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?')
      .all(stream, options.afterSeq ?? 0, options.limit ?? 100_000) as EventRecord[];
    return rows.map(toEvent);
  }

  async createReview(r: Review): Promise<void> {
    this.#db
      .prepare('INSERT INTO reviews (id, kind, connection, requester, status, created_at, body) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(r.id, r.kind, r.connection, r.requester.subject, r.status, r.createdAt, JSON.stringify(r));
  }

  async getReview(id: string): Promise<Review | undefined> {
    const row = this.#db.prepare('SELECT body FROM reviews WHERE id = ?').get(id) as { body: string } | undefined;
    return row && (JSON.parse(row.body) as Review);
  }

  async listReviews(filter: ReviewFilter = {}): Promise<Review[]> {
    const where: string[] = [];
    const values: unknown[] = [];
    if (filter.status?.length) {
      where.push(`status IN (${filter.status.map(() => '?').join(', ')})`);
      values.push(...filter.status);
    }
    for (const [column, value] of [['kind', filter.kind], ['connection', filter.connection], ['requester', filter.requester]] as const) {
      if (value !== undefined) {
        where.push(`${column} = ?`);
        values.push(value);
      }
    }
    const sql = `SELECT body FROM reviews ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC LIMIT ?`;
    return (this.#db.prepare(sql).all(...values, filter.limit ?? 500) as Array<{ body: string }>).map((r) => JSON.parse(r.body) as Review);
  }

  async replaceReview(r: Review, expected: ReviewStatus): Promise<boolean> {
    const result = this.#db
      .prepare('UPDATE reviews SET status = ?, body = ? WHERE id = ? AND status = ?')
      .run(r.status, JSON.stringify(r), r.id, expected);
    return result.changes === 1;
  }

  async consumeReview(id: string, at: number): Promise<Review | undefined> {
    const changed = this.#db
      .prepare(`UPDATE reviews SET body = json_set(body, '$.consumedAt', ?) WHERE id = ? AND status = 'approved' AND json_extract(body, '$.consumedAt') IS NULL`)
      .run(at, id).changes;
    return changed === 1 ? this.getReview(id) : undefined;
  }

  async eventsSince(pos: number, limit: number): Promise<Array<StoredEvent & { pos: number }>> {
    this.#ingest();
    const rows = this.#db
      .prepare('SELECT * FROM events WHERE pos > ? ORDER BY pos LIMIT ?')
      .all(pos, limit) as Array<EventRecord & { pos: number }>;
    return rows.map((r) => ({ ...toEvent(r), pos: r.pos }));
  }

  async lastEventPos(): Promise<number> {
    this.#ingest();
    return (this.#db.prepare('SELECT coalesce(max(pos), 0) AS pos FROM events').get() as { pos: number }).pos;
  }

  /** One broker process owns a SQLite store: a lease is refused only to a second exporter of the same name in it. */
  async acquireExportLease(name: string): Promise<ExportLease | undefined> {
    if (this.#leases.has(name)) return undefined;
    this.#leases.add(name);
    const leases = this.#leases;
    return {
      get held() {
        return leases.has(name);
      },
      release: async () => void leases.delete(name),
    };
  }

  async exportCursor(name: string): Promise<number> {
    const row = this.#db.prepare('SELECT pos FROM export_cursors WHERE name = ?').get(name) as { pos: number } | undefined;
    return row?.pos ?? 0;
  }

  async saveExportCursor(name: string, pos: number): Promise<void> {
    this.#db
      .prepare('INSERT INTO export_cursors (name, pos, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET pos = excluded.pos, updated_at = excluded.updated_at')
      .run(name, pos, Date.now());
  }

  async createLock(lock: IdentityLock): Promise<void> {
    this.#db
      .prepare('INSERT INTO identity_locks (id, created_at, expires_at, lifted_at, body) VALUES (?, ?, ?, NULL, ?)')
      .run(lock.id, lock.createdAt, lock.expiresAt ?? null, JSON.stringify(lock));
  }

  async activeLocks(at: number): Promise<IdentityLock[]> {
    const rows = this.#statement('SELECT body FROM identity_locks WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at')
      .all(at) as Array<{ body: string }>;
    return rows.map((r) => JSON.parse(r.body) as IdentityLock);
  }

  async liftLock(id: string, by: string, at: number): Promise<IdentityLock | undefined> {
    const changed = this.#db
      .prepare(`UPDATE identity_locks SET lifted_at = ?, body = json_set(body, '$.liftedAt', ?, '$.liftedBy', ?) WHERE id = ? AND lifted_at IS NULL`)
      .run(at, at, by, id).changes;
    if (changed !== 1) return undefined;
    const row = this.#db.prepare('SELECT body FROM identity_locks WHERE id = ?').get(id) as { body: string };
    return JSON.parse(row.body) as IdentityLock;
  }

  async closeAbandonedSessions(at: number): Promise<number> {
    return this.#db.prepare(`UPDATE sessions SET status = 'failed', ended_at = ? WHERE status = 'open'`).run(at).changes;
  }

  async registerReplica(): Promise<void> {}

  async heartbeat(): Promise<boolean> {
    return true;
  }

  async sweepLostReplicas(): Promise<LostSession[]> {
    return [];
  }

  signalBus(): SignalBus {
    return new InProcessSignalBus();
  }

  async close(): Promise<void> {
    clearTimeout(this.#holdTimer);
    if (this.#pending.length > 0) this.#flush();
    // What cannot be copied now stays in the journal, and is copied on the next start.
    this.#ingestQuietly();
    this.#journal?.close();
    this.#db.close();
    this.#release();
  }
}

function toSession(r: SessionRecord): SessionRow {
  return {
    id: r.id,
    connection: r.connection,
    connectionType: r.connection_type,
    identity: JSON.parse(r.identity) as Identity,
    clientAddr: r.client_addr,
    status: r.status,
    startedAt: r.started_at,
    endedAt: r.ended_at ?? undefined,
    statementCount: r.statement_count,
    errorCount: r.error_count,
  };
}

function toEvent(r: EventRecord): StoredEvent {
  return { stream: r.stream, seq: r.seq, at: r.at, type: r.type, data: JSON.parse(r.data), prevHash: r.prev_hash, hash: r.hash };
}
