/**
 * `npm run bench:store`: what recording costs in each store, and what serialising writers across replicas costs,
 * in one run on this machine. A throwaway PostgreSQL cluster; 8 writers, each a session stream appending one event
 * at a time and awaiting it (as a proxy does before forwarding), for `BENCH_SECONDS` (default 5) per row:
 * SQLite; PostgreSQL through one store (one replica); through two stores (two replicas sharing the head-row lock);
 * and the broker-wide audit stream (one hash chain, its head read under the lock) from one and from two replicas.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPgCluster } from '../src/dev/pg-cluster.js';
import { PostgresStore } from '../src/broker/store/postgres-store.js';
import { SqliteStore } from '../src/broker/store/sqlite-store.js';
import type { Store } from '../src/broker/store/store.js';
import { StreamRecorder } from '../src/broker/recording/stream-recorder.js';
import { SharedStreamRecorder } from '../src/broker/recording/shared-stream-recorder.js';
import type { SessionRecorder } from '../src/broker/recording/recorder.js';

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const writers = Number(process.env.BENCH_WRITERS ?? 8);

/** Events per second when `recorders` each append in a loop, awaiting every append, for `seconds`. */
async function rate(recorders: SessionRecorder[]): Promise<number> {
  const until = Date.now() + seconds * 1000;
  let n = 0;
  await Promise.all(
    recorders.map(async (r) => {
      while (Date.now() < until) {
        await r.record('statement', { sql: `select ${n}`, verdict: 'allow' });
        n++;
      }
    }),
  );
  return n / seconds;
}

const sessions = (stores: Store[], tag: string) => Array.from({ length: writers }, (_, i) => StreamRecorder.fresh(stores[i % stores.length]!, `${tag}_${i}`));
const audit = (stores: Store[]) => Array.from({ length: writers }, (_, i) => new SharedStreamRecorder(stores[i % stores.length]!, 'audit'));

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-store-bench-'));
  const cluster = await startPgCluster({ auth: 'scram-sha-256', settings: { synchronous_commit: 'on' } });
  const rows: Array<[string, number]> = [];
  try {
    const sqlite = new SqliteStore(join(dir, 'bench.db'));
    rows.push(['SQLite, session streams', await rate(sessions([sqlite], 'sq'))]);
    rows.push(['SQLite, audit stream', await rate(audit([sqlite]))]);
    await sqlite.close();
    const a = await PostgresStore.open(cluster.url());
    const b = await PostgresStore.open(cluster.url());
    rows.push(['PostgreSQL, one replica, session streams', await rate(sessions([a], 'one'))]);
    rows.push(['PostgreSQL, two replicas, session streams', await rate(sessions([a, b], 'two'))]);
    rows.push(['PostgreSQL, one replica, audit stream (one chain)', await rate(audit([a]))]);
    rows.push(['PostgreSQL, two replicas, audit stream (one chain)', await rate(audit([a, b]))]);
    await Promise.all([a.close(), b.close()]);
  } finally {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const base = rows[0]![1];
  process.stdout.write(`${cpus().length} cores, ${writers} writers, ${seconds} s per row\n\n| store, writers | events/s | ÷ SQLite sessions |\n|---|---|---|\n`);
  for (const [what, r] of rows) process.stdout.write(`| ${what} | ${Math.round(r)} | ${(r / base).toFixed(2)} |\n`);
}

await main();
