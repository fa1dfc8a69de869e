import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { SqliteStore, sqliteMigrations } from '../../../src/broker/store/sqlite-store.js';
import { PostgresStore } from '../../../src/broker/store/postgres-store.js';
import type { Store } from '../../../src/broker/store/store.js';
import { StreamRecorder } from '../../../src/broker/recording/stream-recorder.js';
import { GENESIS_HASH, hashEvent, verifyChain } from '../../../src/broker/recording/event-chain.js';
import { startPgCluster, type PgCluster } from '../../../src/dev/pg-cluster.js';

const identity = { issuer: 'https://i', subject: 'alice', kind: 'human' as const, name: 'alice', groups: ['dba'], expiresAt: 0 };

/**
 * One store contract, two implementations: every test here runs against the embedded SQLite file and against a
 * real PostgreSQL cluster (a fresh database per test), through the same `Store` methods.
 */
interface Place {
  /** Opens the store at this place (again after a close: a broker restart). */
  open(): Promise<Store>;
  /** Runs raw SQL on the store's tables, outside the broker (what an intruder with the database would try). */
  raw(sql: string): Promise<void>;
  /** The columns and values of a raw `INSERT INTO events` of (stream, seq) beside the broker's own writes. */
  eventRow(stream: string, seq: number): string;
  /**
   * SQLite: appends are acknowledged once in the store's journal, before SQLite sees them; events the journal holds
   * whose place another writer took are kept aside, and these are their (stream, seq, type).
   */
  displaced?(): Array<[string, number, string]>;
}

let cluster: PgCluster;
let dbCount = 0;
const dirs: string[] = [];
beforeAll(async () => {
  cluster = await startPgCluster({ auth: 'scram-sha-256' });
});
afterAll(async () => {
  await cluster?.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const backends: Array<{ name: string; place(): Promise<Place> }> = [
  {
    name: 'SQLite',
    async place() {
      const dir = mkdtempSync(join(tmpdir(), 'hoop-store-'));
      dirs.push(dir);
      const path = join(dir, 'b.db');
      return {
        open: async () => new SqliteStore(path),
        raw: async (sql) => {
          const db = new Database(path);
          try {
            db.prepare(sql).run();
          } finally {
            db.close();
          }
        },
        eventRow: (stream, seq) => `(stream, seq, at, type, data, prev_hash, hash) VALUES ('${stream}', ${seq}, 0, 'squatter', '{}', 'x', 'x')`,
        displaced: () => {
          const db = new Database(path, { readonly: true });
          try {
            return (db.prepare('SELECT stream, seq, type FROM events_displaced ORDER BY stream, seq').raw().all() as Array<[string, number, string]>);
          } finally {
            db.close();
          }
        },
      };
    },
  },
  {
    name: 'PostgreSQL',
    async place() {
      const database = `store_${++dbCount}`;
      const admin = new pg.Client({ connectionString: cluster.url() });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${database}`);
      await admin.end();
      const url = cluster.url(database);
      return {
        open: () => PostgresStore.open(url),
        raw: async (sql) => {
          const c = new pg.Client({ connectionString: url, options: '-c search_path=hoopctl' });
          await c.connect();
          try {
            await c.query(sql);
          } finally {
            await c.end();
          }
        },
        eventRow: (stream, seq) => `(stream, seq, at, type, data, prev_hash, hash, pos) VALUES ('${stream}', ${seq}, 0, 'squatter', '{}', 'x', 'x', 1000000)`,
      };
    },
  },
];

describe.each(backends)('$name store and hash-chained recording', (backend) => {
  it('keeps the chain across recorder instances (a broker restart) and verifies it', async () => {
    const place = await backend.place();
    let store = await place.open();
    let rec = await StreamRecorder.open(store, 'audit');
    await rec.record('token-rejected', { code: 'TOKEN_EXPIRED' });
    await rec.record('token-rejected', { code: 'TOKEN_WRONG_AUDIENCE' });
    await store.close();
    store = await place.open();
    rec = await StreamRecorder.open(store, 'audit');
    await rec.record('token-rejected', { code: 'TOKEN_BAD_SIGNATURE' });
    const events = await store.listEvents('audit');
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(verifyChain(events)).toEqual({ ok: true });
    await store.close();
  });

  it('commits events handed over together in order, and loses none when another writer takes the place of one', async () => {
    const place = await backend.place();
    const store = await place.open();
    const rec = StreamRecorder.fresh(store, 's1');
    await rec.record('open', {});
    // Another writer took seq 3, where the verdict goes; the result is chained on the verdict.
    await place.raw(`INSERT INTO events ${place.eventRow('s1', 3)}`);
    const statement = rec.record('statement', { sql: 'select 1' });
    const verdict = rec.record('verdict', { statementSeq: 1, action: 'allow', refused: false });
    const result = rec.record('result', { statementSeq: 1 }, { urgent: false });
    await expect(statement).resolves.toBeUndefined();
    if (place.displaced) {
      // The journal took all three before SQLite saw them: the verdict is kept aside, and the foreign row breaks
      // the chain where it stands, so an audit finds the place.
      await expect(verdict).resolves.toBeUndefined();
      await expect(result).resolves.toBeUndefined();
      const events = await store.listEvents('s1');
      expect(events.map((e) => [e.seq, e.type])).toEqual([[1, 'open'], [2, 'statement'], [3, 'squatter'], [4, 'result']]);
      expect(verifyChain(events)).toMatchObject({ ok: false, brokenAt: 3 });
      expect(place.displaced()).toEqual([['s1', 3, 'verdict']]);
    } else {
      // The store refuses the verdict, and the result chained on it.
      await expect(verdict).rejects.toThrow();
      await expect(result).rejects.toThrow('was not written');
      const events = await store.listEvents('s1');
      expect(events.map((e) => [e.seq, e.type])).toEqual([[1, 'open'], [2, 'statement'], [3, 'squatter']]);
    }
    await store.close();
  });

  it('commits an event nothing waits on even when no other event follows it', async () => {
    const store = await (await backend.place()).open();
    const rec = StreamRecorder.fresh(store, 's1');
    await rec.record('statement', { sql: 'select 1' });
    await rec.record('result', { statementSeq: 1, rows: 1 }, { urgent: false });
    expect((await store.listEvents('s1')).map((e) => e.type)).toEqual(['statement', 'result']);
    expect(verifyChain(await store.listEvents('s1'))).toEqual({ ok: true });
    await store.close();
  });

  it('detects a changed, a dropped and a reordered event', async () => {
    const store = await (await backend.place()).open();
    const rec = StreamRecorder.fresh(store, 's1');
    for (const sql of ['select 1', 'select 2', 'select 3']) await rec.record('statement', { sql });
    const events = await store.listEvents('s1');
    const changed = events.map((e, i) => (i === 1 ? { ...e, data: { sql: 'select 20' } } : e));
    expect(verifyChain(changed)).toMatchObject({ ok: false, brokenAt: 2 });
    expect(verifyChain([events[0]!, events[2]!])).toMatchObject({ ok: false, brokenAt: 3 });
    expect(verifyChain([events[1]!, events[0]!, events[2]!])).toMatchObject({ ok: false });
    await store.close();
  });

  it('refuses updates and deletes of recorded events at the database level', async () => {
    const place = await backend.place();
    const store = await place.open();
    await StreamRecorder.fresh(store, 's1').record('statement', { sql: 'select 1' });
    await store.close();
    await expect(place.raw("UPDATE events SET data = '{}'")).rejects.toThrow(/append-only/);
    await expect(place.raw('DELETE FROM events')).rejects.toThrow(/append-only/);
    const again = await place.open();
    expect(await again.listEvents('s1')).toEqual([expect.objectContaining({ seq: 1, data: { sql: 'select 1' } })]);
    await again.close();
  });

  it('marks sessions left open by a stopped broker as failed', async () => {
    const store = await (await backend.place()).open();
    await store.createSession({ id: 'ses_1', connection: 'pg', connectionType: 'postgres', identity, clientAddr: '1.2.3.4:5', status: 'open', startedAt: 1, statementCount: 0, errorCount: 0 });
    expect(await store.closeAbandonedSessions(99)).toBe(1);
    expect(await store.getSession('ses_1')).toMatchObject({ status: 'failed', endedAt: 99 });
    await store.close();
  });
});

describe.each(backends)('sessions, reviews and export positions in the $name store', (backend) => {
  const session = (id: string, startedAt: number, claims?: Record<string, string>) => ({
    id, connection: 'pg', connectionType: 'postgres', identity: { ...identity, ...(claims ? { claims } : {}) },
    clientAddr: '1.2.3.4:5', status: 'open' as const, startedAt, statementCount: 0, errorCount: 0,
  });

  it('lists sessions newest first, filtered by status and by a CI claim, and refuses a claim name that is not one', async () => {
    const store = await (await backend.place()).open();
    await store.createSession(session('ses_a', 10, { run_id: '4242' }));
    await store.createSession(session('ses_b', 20, { run_id: '7' }));
    await store.createSession(session('ses_c', 30));
    await store.updateSession('ses_c', { status: 'closed', endedAt: 35, statementCount: 3 });
    expect((await store.listSessions()).map((r) => r.id)).toEqual(['ses_c', 'ses_b', 'ses_a']);
    expect((await store.listSessions({ status: 'open' })).map((r) => r.id)).toEqual(['ses_b', 'ses_a']);
    expect((await store.listSessions({ claims: { run_id: '4242' } })).map((r) => r.id)).toEqual(['ses_a']);
    expect(await store.getSession('ses_c')).toMatchObject({ status: 'closed', endedAt: 35, statementCount: 3, identity: { subject: 'alice' } });
    await expect(store.listSessions({ claims: { "x') or 1=1 --": 'y' } })).rejects.toThrow(/not a claim name/);
    await store.close();
  });

  it('settles racing decisions on one outcome and lets an approved statement run once', async () => {
    const store = await (await backend.place()).open();
    const review = {
      id: 'rev_1', kind: 'statement' as const, connection: 'pg', requester: identity, statement: 'delete from t', status: 'pending' as const,
      approverGroups: ['leads'], minApprovals: 1, decisions: [], createdAt: 1, expiresAt: 1000,
    };
    await store.createReview(review);
    const approve = store.replaceReview({ ...review, status: 'approved', decidedAt: 5 }, 'pending');
    const reject = store.replaceReview({ ...review, status: 'rejected', decidedAt: 5 }, 'pending');
    const outcomes = await Promise.all([approve, reject]);
    expect(outcomes.filter(Boolean)).toHaveLength(1);
    const settled = (await store.getReview('rev_1'))!;
    expect(settled.status).toBe(outcomes[0] ? 'approved' : 'rejected');
    expect((await store.listReviews({ status: ['pending'] })).length).toBe(0);
    if (settled.status === 'approved') {
      expect(await store.consumeReview('rev_1', 9)).toMatchObject({ id: 'rev_1', consumedAt: 9 });
      expect(await store.consumeReview('rev_1', 10)).toBeUndefined();
    } else {
      expect(await store.consumeReview('rev_1', 9)).toBeUndefined();
    }
    await store.close();
  });

  it('numbers events of every stream in one order an export cursor follows, and keeps the cursor across a restart', async () => {
    const place = await backend.place();
    let store = await place.open();
    const a = StreamRecorder.fresh(store, 'ses_a');
    const b = StreamRecorder.fresh(store, 'ses_b');
    await Promise.all([a.record('statement', { sql: 'a1' }), b.record('statement', { sql: 'b1' }), a.record('statement', { sql: 'a2' })]);
    const all = await store.eventsSince(0, 10);
    expect(all.map((e) => e.pos)).toEqual([1, 2, 3]);
    expect(all.filter((e) => e.stream === 'ses_a').map((e) => e.data.sql)).toEqual(['a1', 'a2']);
    expect(await store.lastEventPos()).toBe(3);
    expect((await store.eventsSince(2, 10)).map((e) => e.pos)).toEqual([3]);
    await store.saveExportCursor('siem', 2);
    await store.close();
    store = await place.open();
    expect(await store.exportCursor('siem')).toBe(2);
    expect(await store.exportCursor('other')).toBe(0);
    await store.close();
  });
});

describe.each(backends)('identity locks in the $name store', (backend) => {
  it('keep a lock in force until it expires or is lifted once, across a restart', async () => {
    const place = await backend.place();
    let store = await place.open();
    const t0 = 1_000_000;
    await store.createLock({ id: 'lock_a', target: { subject: 'alice' }, reason: 'laptop stolen', createdBy: 'bob', createdAt: t0 });
    await store.createLock({ id: 'lock_b', target: { clientId: 'etl' }, reason: 'runaway', createdBy: 'bob', createdAt: t0, expiresAt: t0 + 60_000 });
    await store.close();
    store = await place.open();
    expect((await store.activeLocks(t0 + 1)).map((l) => l.id)).toEqual(['lock_a', 'lock_b']);
    expect((await store.activeLocks(t0 + 60_000)).map((l) => l.id)).toEqual(['lock_a']);
    expect(await store.liftLock('lock_a', 'carol', t0 + 5)).toMatchObject({ id: 'lock_a', liftedBy: 'carol', liftedAt: t0 + 5 });
    expect(await store.liftLock('lock_a', 'dave', t0 + 6)).toBeUndefined();
    expect(await store.activeLocks(t0 + 7)).toEqual([expect.objectContaining({ id: 'lock_b' })]);
    await store.close();
  });
});

describe('replica liveness in the PostgreSQL store (two replicas, one database)', () => {
  const open = (id: string) => ({
    id, connection: 'pg', connectionType: 'postgres', identity, clientAddr: '1.2.3.4:5', status: 'open' as const, startedAt: 1, statementCount: 0, errorCount: 0,
  });

  it('a starting replica ends only the sessions of a replica that stopped beating, once', async () => {
    const place = await backends[1]!.place();
    const a = await place.open();
    const b = await place.open();
    await a.registerReplica('rep_a', 1_000);
    await b.registerReplica('rep_b', 1_000);
    await a.createSession(open('ses_a'));
    await b.createSession(open('ses_b'));
    // A restarting broker's start-up: nothing unclaimed, so the live replicas' sessions stay open.
    const c = await place.open();
    expect(await c.closeAbandonedSessions(2_000)).toBe(0);
    expect(await c.sweepLostReplicas('rep_c', 500, 2_000)).toEqual([]);
    // rep_a beats, rep_b does not: only rep_b is lost, and a second sweeper finds nothing left to do.
    expect(await a.heartbeat('rep_a', 5_000)).toBe(true);
    expect(await c.sweepLostReplicas('rep_c', 4_000, 6_000)).toEqual([{ session: 'ses_b', replica: 'rep_b' }]);
    expect(await a.sweepLostReplicas('rep_a', 4_000, 6_000)).toEqual([]);
    expect(await c.getSession('ses_a')).toMatchObject({ status: 'open' });
    expect(await c.getSession('ses_b')).toMatchObject({ status: 'failed', endedAt: 6_000 });
    // A replica declared lost learns it on its next beat (and must end what it still runs).
    expect(await b.heartbeat('rep_b', 7_000)).toBe(false);
    for (const s of [a, b, c]) await s.close();
  });
});

describe('SQLite store schema 4 → 5 (the commit order moves into the events table)', () => {
  it('keeps every event, its chain and its export position, and goes on numbering after them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hoop-store-'));
    dirs.push(dir);
    const path = join(dir, 'b.db');
    // A store as a broker of schema 4 left it: events ordered by the trigger-filled event_order table.
    const old = new Database(path);
    old.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    for (let v = 1; v <= 4; v++) {
      old.exec(sqliteMigrations[v - 1]!);
      old.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)').run(v);
    }
    const insert = old.prepare('INSERT INTO events (stream, seq, at, type, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)');
    const heads = new Map<string, string>();
    // Committed in an order that is neither by stream nor by time: the positions must keep it.
    for (const [stream, seq, at] of [['ses_b', 1, 30], ['ses_a', 1, 10], ['ses_b', 2, 20], ['ses_a', 2, 40]] as const) {
      const event = { stream, seq, at, type: 'statement', data: { sql: `${stream}-${seq}` }, prevHash: heads.get(stream) ?? GENESIS_HASH };
      const hash = hashEvent(event);
      heads.set(stream, hash);
      insert.run(stream, seq, at, 'statement', JSON.stringify(event.data), event.prevHash, hash);
    }
    old.prepare("INSERT INTO export_cursors (name, pos, updated_at) VALUES ('siem', 2, 0)").run();
    old.close();

    const store = new SqliteStore(path);
    expect((await store.eventsSince(0, 10)).map((e) => [e.pos, e.stream, e.seq])).toEqual([[1, 'ses_b', 1], [2, 'ses_a', 1], [3, 'ses_b', 2], [4, 'ses_a', 2]]);
    expect(await store.exportCursor('siem')).toBe(2);
    expect(verifyChain(await store.listEvents('ses_a'))).toEqual({ ok: true });
    await (await StreamRecorder.open(store, 'ses_a')).record('result', { statementSeq: 2 });
    expect((await store.eventsSince(4, 10)).map((e) => [e.pos, e.stream, e.seq, e.type])).toEqual([[5, 'ses_a', 3, 'result']]);
    expect(verifyChain(await store.listEvents('ses_a'))).toEqual({ ok: true });
    await store.close();
    const raw = new Database(path);
    try {
      expect(() => raw.prepare("UPDATE events SET data = '{}'").run()).toThrow(/append-only/);
      expect(() => raw.prepare('DELETE FROM events').run()).toThrow(/append-only/);
      expect(raw.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'event_order'").get()).toEqual({ n: 0 });
    } finally {
      raw.close();
    }
  });
});
