import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Identity } from '../../api/identity.js';
import type { Review, ReviewStatus } from '../../api/review.js';
import type { Logger } from 'pino';
import { HoopError, UserError } from '../../lib/errors.js';
import { PostgresSignalBus } from './postgres-signal-bus.js';
import { storeUnreachable } from './store-errors.js';
import type { SignalBus } from './signal-bus.js';
import { ChainGuard } from './chain-guard.js';
import type { AppendOptions, ExportLease, IdentityLock, LostSession, ReviewFilter, SessionEndRequest, SessionFilter, SessionRow, Store, StoredEvent } from './store.js';

/**
 * The store several broker replicas share: PostgreSQL, through a `pg` pool, in a schema of its own (`hoopctl`).
 * Coordination is PostgreSQL's own: migrations run under an advisory lock (replicas starting together migrate
 * once), reviews and locks change by compare-and-set `UPDATE … WHERE status = …`, and every event gets its export
 * position under the row lock of one head row, held until commit — so positions are dense and follow commit order
 * across replicas (a plain sequence does not: a lower id committed later would be skipped by an export cursor).
 */
const SCHEMA = 'hoopctl';

/** Each entry one schema version, applied in one transaction. Never edit a released entry: append. */
const migrations: string[] = [
  `CREATE TABLE sessions (
     id text PRIMARY KEY,
     connection text NOT NULL,
     connection_type text NOT NULL,
     subject text NOT NULL,
     identity jsonb NOT NULL,
     client_addr text NOT NULL,
     status text NOT NULL,
     started_at bigint NOT NULL,
     ended_at bigint,
     statement_count integer NOT NULL DEFAULT 0,
     error_count integer NOT NULL DEFAULT 0,
     n bigserial NOT NULL
   );
   CREATE INDEX sessions_started ON sessions (started_at DESC, n DESC);
   CREATE INDEX sessions_subject ON sessions (subject, started_at DESC);
   CREATE INDEX sessions_open ON sessions (status) WHERE status = 'open';
   CREATE TABLE events (
     stream text NOT NULL,
     seq integer NOT NULL,
     at bigint NOT NULL,
     type text NOT NULL,
     data text NOT NULL,
     prev_hash text NOT NULL,
     hash text NOT NULL,
     pos bigint NOT NULL UNIQUE,
     PRIMARY KEY (stream, seq)
   );
   CREATE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS
     $$ BEGIN RAISE EXCEPTION '% are append-only', TG_TABLE_NAME; END $$;
   CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events FOR EACH ROW EXECUTE FUNCTION append_only();
   CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events FOR EACH STATEMENT EXECUTE FUNCTION append_only();
   CREATE TABLE event_head (one boolean PRIMARY KEY DEFAULT true CHECK (one), pos bigint NOT NULL);
   INSERT INTO event_head (one, pos) VALUES (true, 0);
   CREATE TABLE export_cursors (name text PRIMARY KEY, pos bigint NOT NULL, updated_at bigint NOT NULL);
   CREATE TABLE reviews (
     id text PRIMARY KEY,
     kind text NOT NULL,
     connection text NOT NULL,
     requester text NOT NULL,
     status text NOT NULL,
     created_at bigint NOT NULL,
     body jsonb NOT NULL
   );
   CREATE INDEX reviews_status ON reviews (status, created_at);
   CREATE INDEX reviews_requester ON reviews (requester, connection, status);
   CREATE TABLE identity_locks (
     id text PRIMARY KEY,
     created_at bigint NOT NULL,
     expires_at bigint,
     lifted_at bigint,
     body jsonb NOT NULL
   );
   CREATE INDEX identity_locks_active ON identity_locks (lifted_at, expires_at);`,
  // Replica liveness: each broker process heartbeats; the sessions it opens name it, so survivors end only the
  // sessions of a replica that stopped beating.
  `CREATE TABLE replicas (id text PRIMARY KEY, started_at bigint NOT NULL, last_seen bigint NOT NULL, lost_at bigint);
   ALTER TABLE sessions ADD COLUMN replica text;
   CREATE INDEX sessions_replica_open ON sessions (replica) WHERE status = 'open';`,
  // maxConcurrent across replicas: one row per session slot taken, named by the replica that holds it (a lost
  // replica's slots go with its sessions). And `sessions end` kept with the session, for a replica that missed its signal.
  `CREATE TABLE session_slots (id text PRIMARY KEY, key text NOT NULL, replica text NOT NULL, taken_at bigint NOT NULL);
   CREATE INDEX session_slots_key ON session_slots (key);
   CREATE INDEX session_slots_replica ON session_slots (replica);
   ALTER TABLE sessions ADD COLUMN end_request jsonb;`,
];

/** The schema version this code writes (tests use it to fake a store migrated by a newer broker). */
export const POSTGRES_SCHEMA_VERSION = migrations.length;

/** bigint columns (times in ms, positions) come back as numbers, not strings: all stay far below 2^53. */
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === pg.types.builtins.INT8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

export interface PostgresStoreOptions {
  poolSize?: number;
}

interface SessionRecord {
  id: string;
  connection: string;
  connection_type: string;
  identity: Identity;
  client_addr: string;
  status: SessionRow['status'];
  started_at: number;
  ended_at: number | null;
  statement_count: number;
  error_count: number;
}

interface EventRecord {
  stream: string;
  seq: number;
  at: number;
  type: string;
  data: string;
  prev_hash: string;
  hash: string;
  pos: number;
}

interface Pending {
  event: StoredEvent;
  resolve(): void;
  reject(e: unknown): void;
}

export class PostgresStore implements Store {
  readonly #pool: pg.Pool;
  #pending: Pending[] = [];
  readonly #chainGuard = new ChainGuard();
  /** The flush in progress: one at a time, so a stream's events commit in seq order. */
  #flushing: Promise<void> | undefined;

  /** The replica this process registered as: stamped on the sessions it creates. */
  #replica: string | undefined;
  #closed = false;

  /** What the pool connects with, for the few connections of their own (export leases). */
  readonly #clientConfig: pg.ClientConfig;

  private constructor(pool: pg.Pool, clientConfig: pg.ClientConfig) {
    this.#pool = pool;
    this.#clientConfig = clientConfig;
  }

  /**
   * Connects, checks the credentials and migrates. An unreachable server, a refused login or a schema newer than
   * this code is a UserError with one line saying which (never the URL: it carries the password).
   */
  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
    let pool: pg.Pool;
    const clientConfig: pg.ClientConfig = {
      connectionString: url,
      types,
      application_name: 'hoopctl-broker',
      options: `-c search_path=${SCHEMA}`,
      connectionTimeoutMillis: 10_000,
    };
    try {
      pool = new pg.Pool({ ...clientConfig, max: options.poolSize ?? 10 });
    } catch (e) {
      throw new UserError(`cannot use the store URL: ${(e as Error).message}`, { code: 'STORE_UNREACHABLE', hint: 'store.url must be a postgresql:// URL' });
    }
    // A server restart or a dropped idle connection surfaces on the next query (which fails closed), never as a crash.
    pool.on('error', () => undefined);
    const store = new PostgresStore(pool, clientConfig);
    try {
      await store.#migrate();
    } catch (e) {
      await pool.end().catch(() => undefined);
      throw storeError(e);
    }
    return store;
  }

  /**
   * What `broker check` does: log in and read the schema version, changing nothing. Returns a summary line; throws
   * the same one-line UserError start would.
   */
  static async probe(url: string): Promise<string> {
    const client = new pg.Client({ connectionString: url, types, application_name: 'hoopctl-broker-check', connectionTimeoutMillis: 10_000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const exists = await client.query<{ t: string | null }>(`SELECT to_regclass('${SCHEMA}.schema_migrations')::text AS t`);
      const current = exists.rows[0]?.t
        ? ((await client.query<{ v: number | null }>(`SELECT max(version) AS v FROM ${SCHEMA}.schema_migrations`)).rows[0]?.v ?? 0)
        : 0;
      if (current > migrations.length) throw tooNew(current);
      return current === migrations.length ? `PostgreSQL store reachable (schema version ${current})` : `PostgreSQL store reachable (schema version ${current}; start migrates it to ${migrations.length})`;
    } catch (e) {
      throw storeError(e);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /** One statement on a pooled connection; a store that cannot be reached is a STORE_UNAVAILABLE refusal (503). */
  async #query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      return await this.#pool.query<R>(sql, values);
    } catch (e) {
      throw lostConnection(e) ? storeUnreachable(e) : e;
    }
  }

  /** Runs `work` in one transaction on one pooled connection: committed when it returns, rolled back when it throws. */
  async #transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (e) {
      throw lostConnection(e) ? storeUnreachable(e) : e;
    }
    let broken: Error | undefined;
    // A checked-out client has no listener of the pool's: a store that goes away between two statements of this
    // transaction would emit an unhandled 'error' and crash the broker. The failing statement rejects on its own.
    const onError = (e: Error) => (broken = e);
    client.on('error', onError);
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      if (!lostConnection(e)) throw e;
      broken = e as Error;
      throw storeUnreachable(e);
    } finally {
      // A connection that failed under us is destroyed, not handed to the next caller.
      client.off('error', onError);
      client.release(broken);
    }
  }

  async #migrate(): Promise<void> {
    return this.#transaction(async (client) => {
      // Replicas starting together queue here; the first migrates, the others find the work done.
      await client.query("SELECT pg_advisory_xact_lock(hashtext('hoopctl store migrations'))");
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${SCHEMA}`);
      await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at bigint NOT NULL)');
      const { rows } = await client.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations');
      const current = rows[0]?.v ?? 0;
      if (current > migrations.length) throw tooNew(current);
      for (let v = current + 1; v <= migrations.length; v++) {
        await client.query(migrations[v - 1]!);
        await client.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', [v, Date.now()]);
      }
    });
  }

  async createSession(row: SessionRow): Promise<void> {
    await this.#query(
      `INSERT INTO sessions (id, connection, connection_type, subject, identity, client_addr, status, started_at, ended_at, statement_count, error_count, replica)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
      [row.id, row.connection, row.connectionType, row.identity.subject, JSON.stringify(row.identity), row.clientAddr, row.status,
        row.startedAt, row.endedAt ?? null, row.statementCount, row.errorCount, this.#replica ?? null],
    );
  }

  async updateSession(id: string, patch: Partial<Pick<SessionRow, 'status' | 'endedAt' | 'statementCount' | 'errorCount'>>): Promise<void> {
    const columns: Record<string, string> = { status: 'status', endedAt: 'ended_at', statementCount: 'statement_count', errorCount: 'error_count' };
    const sets: string[] = [];
    const values: unknown[] = [];
    for (const [key, value] of Object.entries(patch)) {
      if (value === undefined) continue;
      values.push(value);
      sets.push(`${columns[key]} = $${values.length}`);
    }
    if (sets.length === 0) return;
    values.push(id);
    await this.#query(`UPDATE sessions SET ${sets.join(', ')} WHERE id = $${values.length}`, values);
  }

  async getSession(id: string): Promise<SessionRow | undefined> {
    const { rows } = await this.#query<SessionRecord>('SELECT * FROM sessions WHERE id = $1', [id]);
    return rows[0] && toSession(rows[0]);
  }

  async listSessions(filter: SessionFilter = {}): Promise<SessionRow[]> {
    const where: string[] = [];
    const values: unknown[] = [];
    const add = (sql: (p: string) => string, value: unknown) => {
      values.push(value);
      where.push(sql(`$${values.length}`));
    };
    if (filter.subject) add((p) => `subject = ${p}`, filter.subject);
    if (filter.connection) add((p) => `connection = ${p}`, filter.connection);
    if (filter.status) add((p) => `status = ${p}`, filter.status);
    for (const [name, value] of Object.entries(filter.claims ?? {})) {
      if (!/^[A-Za-z0-9_]+$/.test(name)) throw new HoopError(`not a claim name: ${name}`, { code: 'BAD_REQUEST', status: 400 });
      values.push(name);
      const n = `$${values.length}`;
      add((p) => `identity->'claims'->>${n} = ${p}`, value);
    }
    values.push(filter.limit ?? 100);
    const sql = `SELECT * FROM sessions ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY started_at DESC, n DESC LIMIT $${values.length}`;
    return (await this.#query<SessionRecord>(sql, values)).rows.map(toSession);
  }

  /**
   * Group commit, as in the SQLite store: events appended while a flush runs go together in the next transaction,
   * and each caller's promise resolves once its transaction has committed. One flush at a time per replica keeps
   * a stream's events in seq order; across replicas the head row serialises the position assignment.
   */
  appendEvent(event: StoredEvent, _options?: AppendOptions): Promise<void> {
    // Every event is committed at once: the `urgent: false` hint (wait for company) is not taken here.
    return new Promise((resolve, reject) => {
      this.#pending.push({ event, resolve, reject });
      if (!this.#flushing) this.#flushing = this.#drain();
    });
  }

  async #drain(): Promise<void> {
    // Let the rest of this event-loop turn queue its events too.
    await new Promise((r) => setImmediate(r));
    while (this.#pending.length > 0) {
      const batch = this.#pending.filter((p) => !this.#refused(p));
      this.#pending = [];
      if (batch.length === 0) continue;
      try {
        await this.#insert(batch.map((p) => p.event));
        for (const p of batch) p.resolve();
      } catch {
        // One bad row must not sink the others: each caller learns its own outcome; rows chained on a failed one fail with it.
        for (const p of batch) {
          if (this.#refused(p)) continue;
          try {
            await this.#insert([p.event]);
            p.resolve();
          } catch (e) {
            this.#chainGuard.failed(p.event);
            p.reject(e);
          }
        }
      }
    }
    this.#flushing = undefined;
  }

  /** Rejects an append chained on one that failed (see ChainGuard); true when it did. */
  #refused(p: { event: StoredEvent; reject(e: unknown): void }): boolean {
    const refusal = this.#chainGuard.refusal(p.event);
    if (refusal) p.reject(refusal);
    return refusal !== undefined;
  }

  async #insert(events: StoredEvent[]): Promise<void> {
    return this.#transaction(async (client) => {
      // The head row stays locked until COMMIT: the next writer (any replica) takes its positions only after these
      // rows are visible, so an export cursor past them never skips an event that commits later.
      const { rows } = await client.query<{ pos: number }>('UPDATE event_head SET pos = pos + $1 RETURNING pos', [events.length]);
      const first = rows[0]!.pos - events.length + 1;
      const values: unknown[] = [];
      const tuples = events.map((e, i) => {
        values.push(e.stream, e.seq, e.at, e.type, JSON.stringify(e.data), e.prevHash, e.hash, first + i);
        const b = i * 8;
        return `($${b + 1}, $${b + 2}, $${b + 3}, $${b + 4}, $${b + 5}, $${b + 6}, $${b + 7}, $${b + 8})`;
      });
      await client.query(`INSERT INTO events (stream, seq, at, type, data, prev_hash, hash, pos) VALUES ${tuples.join(', ')}`, values);
    });
  }

  /**
   * The head row lock that orders every append also serialises the writers of a shared stream: the stream's last
   * event is read after taking it, so the next replica's append sees this one. What it costs is in BENCHMARKS.md.
   */
  async appendToSharedStream(stream: string, next: (last: StoredEvent | undefined) => StoredEvent | undefined): Promise<StoredEvent | undefined> {
    return this.#transaction(async (client) => {
      const { rows } = await client.query<{ pos: number }>('SELECT pos FROM event_head FOR UPDATE');
      const last = (await client.query<EventRecord>('SELECT * FROM events WHERE stream = $1 ORDER BY seq DESC LIMIT 1', [stream])).rows[0];
      const event = next(last && toEvent(last));
      if (event) {
        const pos = rows[0]!.pos + 1;
        await client.query('UPDATE event_head SET pos = $1', [pos]);
        await client.query('INSERT INTO events (stream, seq, at, type, data, prev_hash, hash, pos) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)', [
          event.stream, event.seq, event.at, event.type, JSON.stringify(event.data), event.prevHash, event.hash, pos,
        ]);
      }
      return event;
    });
  }

  async lastEvent(stream: string): Promise<StoredEvent | undefined> {
    const { rows } = await this.#query<EventRecord>('SELECT * FROM events WHERE stream = $1 ORDER BY seq DESC LIMIT 1', [stream]);
    return rows[0] && toEvent(rows[0]);
  }

  async listEvents(stream: string, options: { afterSeq?: number; limit?: number } = {}): Promise<StoredEvent[]> {
    const { rows } = await this.#query<EventRecord>('SELECT * FROM events WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3', [
      stream,
      options.afterSeq ?? 0,
      options.limit ?? 100_000,
    ]);
    return rows.map(toEvent);
  }

  async eventsSince(pos: number, limit: number): Promise<Array<StoredEvent & { pos: number }>> {
    const { rows } = await this.#query<EventRecord>('SELECT * FROM events WHERE pos > $1 ORDER BY pos LIMIT $2', [pos, limit]);
    return rows.map((r) => ({ ...toEvent(r), pos: r.pos }));
  }

  async lastEventPos(): Promise<number> {
    const { rows } = await this.#query<{ pos: number }>('SELECT coalesce(max(pos), 0)::bigint AS pos FROM events');
    return rows[0]!.pos;
  }

  /**
   * A session-level advisory lock on a connection of its own: PostgreSQL releases it when that connection ends, so
   * a replica killed with -9 gives the export up as soon as its socket closes and a survivor takes it on its next try.
   */
  async acquireExportLease(name: string): Promise<ExportLease | undefined> {
    const client = new pg.Client({ ...this.#clientConfig, application_name: `hoopctl-export-${name}`.slice(0, 63) });
    let held = false;
    client.on('error', () => (held = false));
    client.on('end', () => (held = false));
    try {
      await client.connect();
      const { rows } = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock(hashtext('hoopctl export ' || $1)) AS ok", [name]);
      held = rows[0]?.ok === true;
    } catch (e) {
      await client.end().catch(() => undefined);
      throw e;
    }
    if (!held) {
      await client.end().catch(() => undefined);
      return undefined;
    }
    return {
      get held() {
        return held;
      },
      release: async () => {
        held = false;
        await client.end().catch(() => undefined);
      },
    };
  }

  async exportCursor(name: string): Promise<number> {
    const { rows } = await this.#query<{ pos: number }>('SELECT pos FROM export_cursors WHERE name = $1', [name]);
    return rows[0]?.pos ?? 0;
  }

  async saveExportCursor(name: string, pos: number): Promise<void> {
    await this.#query(
      'INSERT INTO export_cursors (name, pos, updated_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET pos = excluded.pos, updated_at = excluded.updated_at',
      [name, pos, Date.now()],
    );
  }

  async createReview(r: Review): Promise<void> {
    await this.#query('INSERT INTO reviews (id, kind, connection, requester, status, created_at, body) VALUES ($1, $2, $3, $4, $5, $6, $7)', [
      r.id, r.kind, r.connection, r.requester.subject, r.status, r.createdAt, JSON.stringify(r),
    ]);
  }

  async getReview(id: string): Promise<Review | undefined> {
    const { rows } = await this.#query<{ body: Review }>('SELECT body FROM reviews WHERE id = $1', [id]);
    return rows[0]?.body;
  }

  async listReviews(filter: ReviewFilter = {}): Promise<Review[]> {
    const where: string[] = [];
    const values: unknown[] = [];
    if (filter.status?.length) {
      values.push(filter.status);
      where.push(`status = ANY($${values.length})`);
    }
    for (const [column, value] of [['kind', filter.kind], ['connection', filter.connection], ['requester', filter.requester]] as const) {
      if (value === undefined) continue;
      values.push(value);
      where.push(`${column} = $${values.length}`);
    }
    values.push(filter.limit ?? 500);
    const sql = `SELECT body FROM reviews ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC LIMIT $${values.length}`;
    return (await this.#query<{ body: Review }>(sql, values)).rows.map((r) => r.body);
  }

  async replaceReview(r: Review, expected: ReviewStatus): Promise<boolean> {
    const { rowCount } = await this.#query('UPDATE reviews SET status = $1, body = $2 WHERE id = $3 AND status = $4', [
      r.status, JSON.stringify(r), r.id, expected,
    ]);
    return rowCount === 1;
  }

  async consumeReview(id: string, at: number): Promise<Review | undefined> {
    const { rows } = await this.#query<{ body: Review }>(
      `UPDATE reviews SET body = jsonb_set(body, '{consumedAt}', to_jsonb($1::bigint))
       WHERE id = $2 AND status = 'approved' AND NOT (body ? 'consumedAt') RETURNING body`,
      [at, id],
    );
    return rows[0]?.body;
  }

  async createLock(lock: IdentityLock): Promise<void> {
    await this.#query('INSERT INTO identity_locks (id, created_at, expires_at, lifted_at, body) VALUES ($1, $2, $3, NULL, $4)', [
      lock.id, lock.createdAt, lock.expiresAt ?? null, JSON.stringify(lock),
    ]);
  }

  async activeLocks(at: number): Promise<IdentityLock[]> {
    const { rows } = await this.#query<{ body: IdentityLock }>(
      'SELECT body FROM identity_locks WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > $1) ORDER BY created_at, id',
      [at],
    );
    return rows.map((r) => r.body);
  }

  async liftLock(id: string, by: string, at: number): Promise<IdentityLock | undefined> {
    const { rows } = await this.#query<{ body: IdentityLock }>(
      `UPDATE identity_locks SET lifted_at = $1, body = body || jsonb_build_object('liftedAt', $1::bigint, 'liftedBy', $2::text)
       WHERE id = $3 AND lifted_at IS NULL RETURNING body`,
      [at, by, id],
    );
    return rows[0]?.body;
  }

  /**
   * Marks failed the open sessions no replica claims (written by a broker from before replicas were recorded). The
   * sessions of replicas that stopped heartbeating are `sweepLostReplicas`'s: a starting broker must not end the
   * live sessions of another one.
   */
  async closeAbandonedSessions(at: number): Promise<number> {
    const { rowCount } = await this.#query(`UPDATE sessions SET status = 'failed', ended_at = $1 WHERE status = 'open' AND replica IS NULL`, [at]);
    return rowCount ?? 0;
  }

  async registerReplica(replica: string, at: number): Promise<void> {
    await this.#query('INSERT INTO replicas (id, started_at, last_seen) VALUES ($1, $2, $2) ON CONFLICT (id) DO UPDATE SET last_seen = $2, lost_at = NULL', [replica, at]);
    this.#replica = replica;
  }

  async heartbeat(replica: string, at: number): Promise<boolean> {
    const { rowCount } = await this.#query('UPDATE replicas SET last_seen = $2 WHERE id = $1 AND lost_at IS NULL', [replica, at]);
    return (rowCount ?? 0) > 0;
  }

  async sweepLostReplicas(self: string, staleBefore: number, at: number): Promise<LostSession[]> {
    return this.#transaction(async (client) => {
      // lost_at IS NULL in the WHERE: two survivors sweeping at once — the second finds the rows already taken.
      const lost = await client.query<{ id: string }>(
        'UPDATE replicas SET lost_at = $3 WHERE id <> $1 AND lost_at IS NULL AND last_seen < $2 RETURNING id',
        [self, staleBefore, at],
      );
      const ids = lost.rows.map((r) => r.id);
      if (ids.length === 0) return [];
      const sessions = await client.query<{ id: string; replica: string }>(
        `UPDATE sessions SET status = 'failed', ended_at = $2 WHERE status = 'open' AND replica = ANY($1::text[]) RETURNING id, replica`,
        [ids, at],
      );
      await client.query('DELETE FROM session_slots WHERE replica = ANY($1::text[])', [ids]);
      return sessions.rows.map((r) => ({ session: r.id, replica: r.replica }));
    });
  }

  /**
   * One count for every replica: the slots of `key` are counted and the new one inserted under a transaction-level
   * advisory lock on the key, so two replicas admitting the same identity at once queue here and the second sees the
   * first's slot. The slot names this replica, so a replica declared lost gives its slots back with its sessions.
   */
  async takeSessionSlot(key: string, max: number, at: number): Promise<{ open: number; slot?: string }> {
    const replica = this.#replica;
    if (!replica) throw new Error('session slots need a registered replica (registerReplica first)');
    return this.#transaction(async (client) => {
      await client.query("SELECT pg_advisory_xact_lock(hashtext('hoopctl slot ' || $1))", [key]);
      const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM session_slots WHERE key = $1', [key]);
      const open = rows[0]!.n;
      if (open >= max) return { open };
      const slot = `slot_${randomBytes(9).toString('hex')}`;
      await client.query('INSERT INTO session_slots (id, key, replica, taken_at) VALUES ($1, $2, $3, $4)', [slot, key, replica, at]);
      return { open, slot };
    });
  }

  /**
   * Gives a slot back. It never throws: a store that is down now gets the delete again each second until it takes
   * it (a slot left behind would refuse that identity for good), or until this store is closed.
   */
  releaseSessionSlot(slot: string): void {
    this.#query('DELETE FROM session_slots WHERE id = $1', [slot]).catch(() => {
      if (this.#closed) return;
      setTimeout(() => this.releaseSessionSlot(slot), SLOT_RELEASE_RETRY_MS).unref();
    });
  }

  async requestSessionEnd(id: string, request: SessionEndRequest): Promise<boolean> {
    const { rowCount } = await this.#query("UPDATE sessions SET end_request = $2 WHERE id = $1 AND status = 'open'", [id, JSON.stringify(request)]);
    return rowCount === 1;
  }

  async sessionEndRequests(ids: string[]): Promise<Array<SessionEndRequest & { session: string }>> {
    if (ids.length === 0) return [];
    const { rows } = await this.#query<{ id: string; end_request: SessionEndRequest }>(
      "SELECT id, end_request FROM sessions WHERE id = ANY($1::text[]) AND status = 'open' AND end_request IS NOT NULL",
      [ids],
    );
    return rows.map((r) => ({ session: r.id, ...r.end_request }));
  }

  signalBus(origin: string, logger?: Logger): SignalBus {
    return new PostgresSignalBus(this.#pool, this.#clientConfig, origin, logger);
  }

  async close(): Promise<void> {
    this.#closed = true;
    while (this.#flushing) await this.#flushing;
    await this.#pool.end();
  }
}

/** Between attempts to give back a session slot while the store is unreachable. */
const SLOT_RELEASE_RETRY_MS = 1000;

/** Socket-level errors (no SQLSTATE) and the server's own "shutting down" / connection-failure SQLSTATEs. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE',
  '57P01', '57P02', '57P03', '08006', '08003', '08001', '08004']);

/** Whether an error of a store call means its connection was lost or never made (not a bad statement). */
function lostConnection(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return NETWORK_CODES.has(code);
  const message = e instanceof Error ? e.message : '';
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|not queryable/i.test(message);
}

function tooNew(current: number): UserError {
  return new UserError(`the PostgreSQL store has schema version ${current}, newer than this broker understands (${migrations.length})`, {
    code: 'STORE_TOO_NEW',
    hint: 'a newer hoopctl migrated it: run that version, or upgrade this one',
  });
}

/**
 * One clear line for what the operator must fix; the URL (it may carry the password) is never part of it.
 * A UserError (a schema too new) passes through as it is.
 */
export function storeError(e: unknown): Error {
  if (e instanceof UserError) return e;
  // At start-up an unreachable server is said as it is, not as the refusal a running broker sends its clients.
  if (e instanceof HoopError && e.code === 'STORE_UNAVAILABLE' && e.cause !== undefined) return storeError(e.cause);
  const err = e as NodeJS.ErrnoException & { code?: string };
  const pgCode = typeof err.code === 'string' ? err.code : '';
  if (pgCode === '28P01' || pgCode === '28000') {
    return new UserError(`cannot log in to the PostgreSQL store: ${err.message}`, { code: 'STORE_AUTH_FAILED', hint: 'check the user and password in store.url', cause: e });
  }
  if (pgCode === '3D000') {
    return new UserError(`the PostgreSQL store's database does not exist: ${err.message}`, { code: 'STORE_UNREACHABLE', hint: 'create the database, or fix store.url', cause: e });
  }
  if (pgCode === '42501') {
    return new UserError(`the store's role may not create the hoopctl schema or its tables: ${err.message}`, { code: 'STORE_UNREACHABLE', hint: 'grant it CREATE on the database, or create the schema `hoopctl` owned by it', cause: e });
  }
  return new UserError(`cannot reach the PostgreSQL store: ${err.message || pgCode || String(e)}`, {
    code: 'STORE_UNREACHABLE',
    hint: 'check store.url (host, port, TLS) and that the server is running',
    cause: e,
  });
}

function toSession(r: SessionRecord): SessionRow {
  return {
    id: r.id,
    connection: r.connection,
    connectionType: r.connection_type,
    identity: r.identity,
    clientAddr: r.client_addr,
    status: r.status,
    startedAt: r.started_at,
    endedAt: r.ended_at ?? undefined,
    statementCount: r.statement_count,
    errorCount: r.error_count,
  };
}

function toEvent(r: EventRecord): StoredEvent {
  return { stream: r.stream, seq: r.seq, at: r.at, type: r.type, data: JSON.parse(r.data) as Record<string, unknown>, prevHash: r.prev_hash, hash: r.hash };
}
