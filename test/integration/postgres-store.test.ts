import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { PostgresStore, POSTGRES_SCHEMA_VERSION } from '../../src/broker/store/postgres-store.js';
import type { StoredEvent } from '../../src/broker/store/store.js';
import { startPgCluster, type PgCluster } from '../../src/dev/pg-cluster.js';
import { startDevIssuer, type DevIssuer } from '../../src/dev/oidc-issuer.js';
import { freePort } from '../../src/lib/net.js';
import { runCli, spawnBroker } from '../support/stack.js';
import { SessionService, AUDIT_STREAM } from '../../src/broker/session-service.js';
import { loadCheckpointSigner, verifyCheckpoints } from '../../src/broker/recording/checkpoints.js';
import { verifyChain } from '../../src/broker/recording/event-chain.js';
import { createSink, EventExporter } from '../../src/broker/export/event-export.js';

/**
 * The PostgreSQL store as several replicas see it: against a real cluster, with real concurrent writers, and the
 * CLI (`broker start`, `broker check`) as a process for what an operator gets wrong (an unreachable store, a
 * wrong password, a schema another version migrated too far).
 */
let cluster: PgCluster;
let issuer: DevIssuer;
let dir: string;
let dbCount = 0;
const STORE_PASSWORD = `store-pw-${Math.random().toString(36).slice(2)}-never-print`;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hoop-pgstore-'));
  [cluster, issuer] = await Promise.all([startPgCluster({ auth: 'scram-sha-256' }), startDevIssuer({ audience: 'urn:hoopctl:pgstore' })]);
  await sql(cluster.url(), `CREATE ROLE hoop LOGIN PASSWORD '${STORE_PASSWORD}'`);
});

afterAll(async () => {
  await issuer?.stop();
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function sql(url: string, text: string, values: unknown[] = []): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await c.query(text, values);
  } finally {
    await c.end();
  }
}

/** A fresh database owned by the store's own (non-superuser) role; its URL as that role. */
async function freshDatabase(): Promise<string> {
  const name = `hoop_${++dbCount}`;
  await sql(cluster.url(), `CREATE DATABASE ${name} OWNER hoop`);
  return `postgresql://hoop:${encodeURIComponent(STORE_PASSWORD)}@${cluster.host}:${cluster.port}/${name}`;
}

const event = (stream: string, seq: number): StoredEvent => ({ stream, seq, at: Date.now(), type: 'statement', data: { sql: `${stream}-${seq}` }, prevHash: '0', hash: `${stream}-${seq}` });

/** Waits until a backend of the database is blocked on a lock while running a statement that starts with `prefix`. */
async function blockedOn(url: string, prefix: string): Promise<void> {
  const db = new URL(url).pathname.slice(1);
  for (;;) {
    const { rows } = await sql(cluster.url(), "SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND query LIKE $2", [db, `${prefix}%`]);
    if (rows.length > 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('PostgreSQL store shared by replicas', () => {
  it('migrates once when three replicas start together, and each then works', async () => {
    const url = await freshDatabase();
    const stores = await Promise.all([PostgresStore.open(url), PostgresStore.open(url), PostgresStore.open(url)]);
    const { rows } = await sql(url, 'SELECT version FROM hoopctl.schema_migrations ORDER BY version');
    expect(rows.map((r) => r.version)).toEqual(Array.from({ length: POSTGRES_SCHEMA_VERSION }, (_, i) => i + 1));
    await Promise.all(stores.map((s, i) => s.appendEvent(event(`ses_${i}`, 1))));
    expect((await stores[0]!.eventsSince(0, 10)).map((e) => e.pos)).toEqual([1, 2, 3]);
    await Promise.all(stores.map((s) => s.close()));
  });

  it('exports in commit order: an event that took its place first but commits late is not skipped by a cursor', async () => {
    const url = await freshDatabase();
    const [a, b] = await Promise.all([PostgresStore.open(url), PostgresStore.open(url)]);

    // The race with a plain sequence: a lower id committed later lands behind a cursor that already moved past it.
    await sql(url, 'CREATE TABLE naive (id bigserial PRIMARY KEY, what text)');
    const slow = new pg.Client({ connectionString: url });
    await slow.connect();
    await slow.query('BEGIN');
    await slow.query("INSERT INTO naive (what) VALUES ('first, committed last')");
    await sql(url, "INSERT INTO naive (what) VALUES ('second, committed first')");
    const cursor = Number((await sql(url, 'SELECT max(id) AS m FROM naive')).rows[0].m);
    await slow.query('COMMIT');
    expect((await sql(url, 'SELECT what FROM naive WHERE id > $1', [cursor])).rows).toEqual([]); // lost to the export

    // The store: replica A's write is held up after taking its position (a conflicting row another transaction has
    // not committed yet); replica B's write must wait behind it, and a reader sees neither until A commits.
    const blocker = new pg.Client({ connectionString: url, options: '-c search_path=hoopctl' });
    await blocker.connect();
    await blocker.query('BEGIN');
    await blocker.query("INSERT INTO events (stream, seq, at, type, data, prev_hash, hash, pos) VALUES ('ses_a', 1, 0, 'x', '{}', '0', 'x', -1)");
    const fromA = a.appendEvent(event('ses_a', 1));
    await blockedOn(url, 'INSERT INTO events');
    const fromB = b.appendEvent(event('ses_b', 1));
    await blockedOn(url, 'UPDATE event_head');
    expect(await b.eventsSince(0, 10)).toEqual([]);
    await blocker.query('ROLLBACK');
    await Promise.all([fromA, fromB]);
    const exported = await b.eventsSince(0, 10);
    expect(exported.map((e) => [e.pos, e.stream])).toEqual([[1, 'ses_a'], [2, 'ses_b']]);
    await Promise.all([slow.end(), blocker.end(), a.close(), b.close()]);
  });

  it('keeps one audit chain when two replicas record and sign it at once, and it verifies with the one key', async () => {
    const url = await freshDatabase();
    const [a, b] = await Promise.all([PostgresStore.open(url), PostgresStore.open(url)]);
    const signer = loadCheckpointSigner(undefined, join(dir, `audit-key-${++dbCount}.pem`));
    const [onA, onB] = await Promise.all([SessionService.create(a, signer), SessionService.create(b, signer)]);
    const writes: Array<Promise<void>> = [];
    for (let i = 0; i < 40; i++) {
      writes.push(onA.audit('token-rejected', { code: 'A', i }), onB.audit('token-rejected', { code: 'B', i }));
      if (i % 10 === 9) writes.push(onA.checkpointAll(), onB.checkpointAll());
    }
    await Promise.all(writes);
    await Promise.all([onA.checkpointAll(), onB.checkpointAll()]);
    const events = await a.listEvents(AUDIT_STREAM);
    const recorded = events.filter((e) => e.type === 'token-rejected');
    expect(recorded).toHaveLength(80);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(verifyChain(events)).toEqual({ ok: true });
    expect(verifyCheckpoints(events, signer.publicKeyPem)).toMatchObject({ ok: true, unsignedTail: 0 });
    // Both signed at the end, but an already-signed head is not signed twice.
    expect(events.at(-2)!.type).not.toBe('checkpoint');
    await Promise.all([a.close(), b.close()]);
  });

  it('exports from one replica at a time; when it is killed (-9) a survivor continues from its cursor, nothing lost or repeated', async () => {
    const url = await freshDatabase();
    const out = join(dir, `siem-${++dbCount}.jsonl`);
    const store = await PostgresStore.open(url);
    for (let i = 1; i <= 3; i++) await store.appendEvent(event('ses_a', i));
    // Replica A: a broker process's exporter (the built code), following the store every 20 ms.
    const dist = resolve(import.meta.dirname, '../../dist/src/broker');
    const replicaA = spawn(process.execPath, ['--input-type=module', '-e', `
      const { PostgresStore } = await import(${JSON.stringify(`${dist}/store/postgres-store.js`)});
      const { EventExporter, createSink } = await import(${JSON.stringify(`${dist}/export/event-export.js`)});
      const store = await PostgresStore.open(process.env.STORE_URL);
      new EventExporter(store, createSink({ name: 'siem', type: 'file', path: process.env.OUT }), { name: 'siem', batchSize: 100, intervalMs: 20 }).start();
      setInterval(() => {}, 1000);
    `], { env: { ...process.env, STORE_URL: url, OUT: out }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    replicaA.stderr!.on('data', (d) => (stderr += d));
    let dead = false;
    const exited = new Promise((r) => replicaA.once('exit', () => r((dead = true))));
    const lines = () => (existsSync(out) ? readFileSync(out, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { stream: string; seq: number }) : []);
    try {
      while ((await store.exportCursor('siem')) < 3) {
        expect(dead, `replica A exited: ${stderr}`).toBe(false);
        await new Promise((r) => setTimeout(r, 20));
      }
      // Replica B stands by while A holds the export.
      expect(await store.acquireExportLease('siem')).toBeUndefined();
      const b = new EventExporter(store, createSink({ name: 'siem', type: 'file', path: out }), { name: 'siem', batchSize: 100 });
      expect(await b.drainOnce()).toBe(0);
      replicaA.kill('SIGKILL');
      await exited;
      for (let i = 4; i <= 6; i++) await store.appendEvent(event('ses_b', i - 3));
      // A's store connection closes with it; B takes the export over on one of its next tries.
      let delivered = 0;
      while (delivered === 0) {
        delivered = await b.drainOnce();
              }
      await b.stop();
    } finally {
      replicaA.kill('SIGKILL');
    }
    const got = lines();
    expect(got.map((e) => `${e.stream}/${e.seq}`)).toEqual(['ses_a/1', 'ses_a/2', 'ses_a/3', 'ses_b/1', 'ses_b/2', 'ses_b/3']);
    await store.close();
  });

  it('counts maxConcurrent slots across replicas: ten opens racing on two replicas get exactly the limit; a lost replica gives its slots back', async () => {
    const url = await freshDatabase();
    const [a, b] = await Promise.all([PostgresStore.open(url), PostgresStore.open(url)]);
    await a.registerReplica('rep_a', Date.now());
    await b.registerReplica('rep_b', Date.now());
    const key = JSON.stringify(['app-pg', 'https://issuer', 'alice']);
    // Make the race certain: the test blocks writes to the slots table, so all ten takes are in flight at once (each
    // waiting on a lock) before any of them can insert; then it lets them go.
    const gate = new pg.Client({ connectionString: url });
    await gate.connect();
    await gate.query('BEGIN');
    await gate.query('LOCK TABLE hoopctl.session_slots IN EXCLUSIVE MODE');
    const racing = Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).takeSessionSlot(key, 3, Date.now())));
    const db = new URL(url).pathname.slice(1);
    while ((await sql(cluster.url(), "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", [db])).rows[0].n < 10) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await gate.query('COMMIT');
    await gate.end();
    const taken = await racing;
    const slots = taken.flatMap((t) => (t.slot ? [t.slot] : []));
    expect(slots).toHaveLength(3);
    expect(taken.filter((t) => !t.slot).every((t) => t.open === 3)).toBe(true);
    // Another identity (or connection) has its own count.
    expect((await a.takeSessionSlot(JSON.stringify(['app-pg', 'https://issuer', 'bob']), 3, Date.now())).slot).toBeDefined();
    // A slot given back on one replica frees a place for the other.
    const onA = taken.find((t, i) => t.slot && i % 2 === 1)?.slot ?? slots[0]!;
    a.releaseSessionSlot(onA);
    let again: { open: number; slot?: string } = { open: 3 };
    while (!again.slot) again = await b.takeSessionSlot(key, 3, Date.now());
    expect(again.open).toBe(2);
    // rep_b stops beating: once swept, its slots are free again.
    const held = (await sql(url, "SELECT count(*)::int AS n FROM hoopctl.session_slots WHERE replica = 'rep_b' AND key = $1", [key])).rows[0].n as number;
    expect(held).toBeGreaterThan(0);
    await a.heartbeat('rep_a', Date.now() + 10_000);
    await a.sweepLostReplicas('rep_a', Date.now() + 5_000, Date.now());
    expect((await a.takeSessionSlot(key, 3, Date.now())).open).toBe(3 - held);
    await Promise.all([a.close(), b.close()]);
  });

  it('refuses a store another version migrated further, a wrong password and an unreachable server: one line, no secret', async () => {
    const url = await freshDatabase();
    await (await PostgresStore.open(url)).close();
    await sql(url, 'INSERT INTO hoopctl.schema_migrations (version, applied_at) VALUES ($1, 0)', [POSTGRES_SCHEMA_VERSION + 5]);
    await expect(PostgresStore.open(url)).rejects.toMatchObject({ code: 'STORE_TOO_NEW' });

    const wrong = url.replace(encodeURIComponent(STORE_PASSWORD), 'not-the-password');
    const closed = `postgresql://hoop:${encodeURIComponent(STORE_PASSWORD)}@127.0.0.1:${await freePort()}/hoop_1`;
    // `check` probes (reads the version, changes nothing), `start` migrates: both paths, each CLI run ~2 s.
    const cases: Array<[string, RegExp, string[]]> = [
      [url, /^error: the PostgreSQL store has schema version \d+, newer than this broker understands \(\d+\)$/m, ['start', 'check']],
      [wrong, /^error: cannot log in to the PostgreSQL store: password authentication failed for user "hoop"$/m, ['check']],
      [closed, /^error: cannot reach the PostgreSQL store: connect ECONNREFUSED 127\.0\.0\.1:\d+$/m, ['start']],
    ];
    for (const [storeUrl, line, commands] of cases) {
      const configPath = join(dir, `bad-${++dbCount}.yaml`);
      writeFileSync(configPath, stringify({
        server: { listen: `127.0.0.1:${await freePort()}` },
        store: { type: 'postgres', url: { env: 'HOOP_STORE_URL' } },
        auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:hoopctl:pgstore' }] },
      }));
      const env = { PATH: process.env.PATH, HOME: dir, HOOP_STORE_URL: storeUrl };
      for (const command of commands) {
        const r = await runCli(['broker', command, '--config', configPath], env);
        expect(r.code, `${command}: ${r.stderr}`).toBe(1);
        expect(r.stderr).toMatch(line);
        expect(r.stderr).not.toContain(STORE_PASSWORD);
        expect(r.stderr).not.toMatch(/\n\s+at /);
      }
    }
  });

  it('starts a broker on it, and `broker check` says the store is reachable', async () => {
    const url = await freshDatabase();
    const configPath = join(dir, 'good.yaml');
    const port = await freePort();
    writeFileSync(configPath, stringify({
      server: { listen: `127.0.0.1:${port}` },
      store: { type: 'postgres', url: { env: 'HOOP_STORE_URL' } },
      auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:hoopctl:pgstore' }] },
    }));
    const env = { PATH: process.env.PATH, HOME: dir, HOOP_STORE_URL: url };
    const before = await runCli(['broker', 'check', '--config', configPath], env);
    expect(before.code, before.stderr).toBe(0);
    expect(before.stdout).toContain(`PostgreSQL store reachable (schema version 0; start migrates it to ${POSTGRES_SCHEMA_VERSION})`);
    process.env.HOOP_STORE_URL = url;
    const broker = await spawnBroker(configPath, join(dir, 'good.log')).finally(() => delete process.env.HOOP_STORE_URL);
    try {
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(health.status).toBe(200);
      const after = await runCli(['broker', 'check', '--config', configPath], env);
      expect(after.stdout).toContain(`PostgreSQL store reachable (schema version ${POSTGRES_SCHEMA_VERSION})`);
    } finally {
      const exited = new Promise((r) => broker.once('exit', r));
      broker.kill('SIGTERM');
      await exited;
    }
  });
});
