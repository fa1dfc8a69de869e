import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteStore } from '../../../src/broker/store/sqlite-store.js';
import { StreamRecorder } from '../../../src/broker/recording/stream-recorder.js';
import { verifyChain } from '../../../src/broker/recording/event-chain.js';

const identity = { issuer: 'https://i', subject: 'alice', kind: 'human' as const, name: 'alice', groups: ['dba'], expiresAt: 0 };

describe('SQLite store and hash-chained recording', () => {
  it('keeps the chain across recorder instances (a broker restart) and verifies it', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'hoop-store-')), 'b.db');
    let store = new SqliteStore(path);
    let rec = await StreamRecorder.open(store, 'audit');
    await rec.record('token-rejected', { code: 'TOKEN_EXPIRED' });
    await rec.record('token-rejected', { code: 'TOKEN_WRONG_AUDIENCE' });
    await store.close();
    store = new SqliteStore(path);
    rec = await StreamRecorder.open(store, 'audit');
    await rec.record('token-rejected', { code: 'TOKEN_BAD_SIGNATURE' });
    const events = await store.listEvents('audit');
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(verifyChain(events)).toEqual({ ok: true });
    await store.close();
  });

  it('detects a changed, a dropped and a reordered event', async () => {
    const store = new SqliteStore(':memory:');
    const rec = StreamRecorder.fresh(store, 's1');
    for (const sql of ['select 1', 'select 2', 'select 3']) await rec.record('statement', { sql });
    const events = await store.listEvents('s1');
    const changed = events.map((e, i) => (i === 1 ? { ...e, data: { sql: 'select 20' } } : e));
    expect(verifyChain(changed)).toMatchObject({ ok: false, brokenAt: 2 });
    expect(verifyChain([events[0]!, events[2]!])).toMatchObject({ ok: false, brokenAt: 3 });
    expect(verifyChain([events[1]!, events[0]!, events[2]!])).toMatchObject({ ok: false });
  });

  it('refuses updates and deletes of recorded events at the database level', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'hoop-store-')), 'b.db');
    const store = new SqliteStore(path);
    await StreamRecorder.fresh(store, 's1').record('statement', { sql: 'select 1' });
    await store.close();
    const db = new Database(path);
    expect(() => db.prepare("UPDATE events SET data = '{}'").run()).toThrow(/append-only/);
    expect(() => db.prepare('DELETE FROM events').run()).toThrow(/append-only/);
    db.close();
  });

  it('marks sessions left open by a stopped broker as failed', async () => {
    const store = new SqliteStore(':memory:');
    await store.createSession({ id: 'ses_1', connection: 'pg', connectionType: 'postgres', identity, clientAddr: '1.2.3.4:5', status: 'open', startedAt: 1, statementCount: 0, errorCount: 0 });
    expect(await store.closeAbandonedSessions(99)).toBe(1);
    expect(await store.getSession('ses_1')).toMatchObject({ status: 'failed', endedAt: 99 });
  });
});

describe('identity locks in the store', () => {
  it('keep a lock in force until it expires or is lifted once, across a restart', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'hoop-locks-')), 'b.db');
    let store = new SqliteStore(path);
    const t0 = 1_000_000;
    await store.createLock({ id: 'lock_a', target: { subject: 'alice' }, reason: 'laptop stolen', createdBy: 'bob', createdAt: t0 });
    await store.createLock({ id: 'lock_b', target: { clientId: 'etl' }, reason: 'runaway', createdBy: 'bob', createdAt: t0, expiresAt: t0 + 60_000 });
    await store.close();
    store = new SqliteStore(path);
    expect((await store.activeLocks(t0 + 1)).map((l) => l.id)).toEqual(['lock_a', 'lock_b']);
    expect((await store.activeLocks(t0 + 60_000)).map((l) => l.id)).toEqual(['lock_a']);
    expect(await store.liftLock('lock_a', 'carol', t0 + 5)).toMatchObject({ id: 'lock_a', liftedBy: 'carol', liftedAt: t0 + 5 });
    expect(await store.liftLock('lock_a', 'dave', t0 + 6)).toBeUndefined();
    expect(await store.activeLocks(t0 + 7)).toEqual([expect.objectContaining({ id: 'lock_b' })]);
    await store.close();
  });
});
