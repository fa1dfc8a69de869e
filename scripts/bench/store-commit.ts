/**
 * The cost of "recorded before forwarded" in the embedded store: one event appended and awaited at a time (what a
 * single client's statement waits for), eight at once (what a group write makes of eight clients' statements), and
 * a statement as the PostgreSQL proxy records it (the previous result, the statement and its verdict: one write).
 * In process, against a fresh SQLite store in a temporary directory, through the broker's own SqliteStore: an
 * append is acknowledged once in its event journal, and the copying into SQLite in between is part of the time.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/broker/store/sqlite-store.js';

export async function measureStoreCommit(events = 4000): Promise<{ aloneUs: number; groupOf8Us: number; perStatementUs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-bench-store-'));
  const store = new SqliteStore(join(dir, 'broker.db'));
  const event = (stream: string, seq: number) => ({
    stream, seq, at: Date.now(), type: 'statement', prevHash: 'a'.repeat(64), hash: 'b'.repeat(64),
    data: { statementSeq: seq, protocol: 'simple', sql: 'SELECT abalance FROM pgbench_accounts WHERE aid = 4242;' },
  });
  try {
    let started = performance.now();
    for (let seq = 1; seq <= events; seq++) await store.appendEvent(event('alone', seq));
    const aloneUs = ((performance.now() - started) * 1000) / events;
    started = performance.now();
    for (let seq = 1; seq <= events; seq += 8) {
      await Promise.all(Array.from({ length: 8 }, (_, k) => store.appendEvent(event(`group-${k}`, seq))));
    }
    const groupOf8Us = ((performance.now() - started) * 1000) / events;
    // One client's statement as the PostgreSQL proxy records it: the previous statement's result (not urgent, so it
    // waits for company), then the statement and its verdict, handed over together and awaited: one commit.
    started = performance.now();
    let seq = 0;
    for (let n = 1; n <= events; n++) {
      const result = store.appendEvent({ ...event('client', ++seq), type: 'result' }, { urgent: false });
      const statement = store.appendEvent(event('client', ++seq));
      const verdict = store.appendEvent({ ...event('client', ++seq), type: 'verdict' });
      await Promise.all([result, statement, verdict]);
    }
    const perStatementUs = ((performance.now() - started) * 1000) / events;
    return { aloneUs, groupOf8Us, perStatementUs };
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
