import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { SqliteStore } from '../../../src/broker/store/sqlite-store.js';
import type { Store, StoredEvent } from '../../../src/broker/store/store.js';
import { StreamRecorder } from '../../../src/broker/recording/stream-recorder.js';
import { verifyChain } from '../../../src/broker/recording/event-chain.js';

/** A real SQLite store that refuses appends while `full` is set, as one on a full disk does (SQLITE_FULL). */
function storeThatFills(): { store: Store; setFull(full: boolean): void } {
  const inner = new SqliteStore(':memory:');
  let full = false;
  const store = Object.create(inner) as Store;
  store.appendEvent = (e: StoredEvent) =>
    full ? Promise.reject(Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' })) : inner.appendEvent(e);
  store.listEvents = (stream, o) => inner.listEvents(stream, o);
  return { store, setFull: (f) => (full = f) };
}

describe('StreamRecorder when the store refuses a write', () => {
  it('leaves no hole in the chain: events chained on a refused one are refused too, and the stream goes on from its last durable event', async () => {
    const { store, setFull } = storeThatFills();
    const rec = StreamRecorder.fresh(store, 'ses_1');
    await rec.record('open', {});
    await rec.record('statement', { sql: 'select 1' });
    setFull(true);
    const refused = rec.record('statement', { sql: 'select 2' });
    const chainedOnIt = rec.record('result', { statementSeq: 2 });
    await expect(refused).rejects.toThrow('database or disk is full');
    setFull(false);
    // The store takes writes again, but this event was hashed on top of the refused one: it must not be written.
    await expect(chainedOnIt).rejects.toThrow('was not written');
    await rec.record('close', { status: 'failed' });
    const events = await store.listEvents('ses_1');
    expect(events.map((e) => [e.seq, e.type])).toEqual([[1, 'open'], [2, 'statement'], [3, 'close']]);
    expect(verifyChain(events)).toEqual({ ok: true });
  });
});

describe('the hash of a recorded event', () => {
  it('is still SHA-256 over JSON.stringify([stream, seq, at, type, data, prevHash]), so stores written before verify', async () => {
    const store = new SqliteStore(':memory:');
    const rec = StreamRecorder.fresh(store, 'ses_"é"');
    await rec.record('statement', { sql: "select 'ü\\n\"' -- \u2028", params: [null, '1'], n: 1.5 });
    await rec.record('result', { statementSeq: 1, rows: 0 }, { urgent: false });
    // A recorder that continues the stream from the store's head, and a type that needs escaping.
    const again = await StreamRecorder.open(store, 'ses_"é"');
    await again.record('odd "type"\t', { at: Number.MAX_SAFE_INTEGER });
    const events = await store.listEvents('ses_"é"');
    for (const e of events) {
      const expected = createHash('sha256').update(JSON.stringify([e.stream, e.seq, e.at, e.type, e.data, e.prevHash])).digest('hex');
      expect(e.hash).toBe(expected);
    }
    expect(events).toHaveLength(3);
    expect(verifyChain(events)).toEqual({ ok: true });
    await store.close();
  });
});
