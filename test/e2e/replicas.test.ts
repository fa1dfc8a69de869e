import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import pg from 'pg';
import { parse, stringify } from 'yaml';
import { PostgresStore } from '../../src/broker/store/postgres-store.js';
import { verifyChain } from '../../src/broker/recording/event-chain.js';
import { verifyCheckpoints } from '../../src/broker/recording/checkpoints.js';
import { freePort } from '../../src/lib/net.js';
import { HOLD_RULES } from '../../scripts/crash/ledger-workload.js';
import { startConnectTunnel, type RunningTunnel } from '../../scripts/support/tunnel-client.js';
import { APP_PASSWORD, loginAs, runCli, spawnBroker, startStack, type Stack } from '../support/stack.js';

/**
 * Two broker processes on one PostgreSQL store (the stack's broker is A; B runs the same config on another port).
 * B gets SIGKILL while it serves a psql session and holds a statement for review: A's own session keeps working,
 * B's session becomes failed with "broker lost" in its (still verifying, signed) chain, and the held review is
 * orphaned — all found by waiting on the store, with the heartbeat and the lost threshold set small.
 */
const keyDir = mkdtempSync(join(tmpdir(), 'hoop-replicas-'));
const keyPath = join(keyDir, 'audit-key.pem');
const keys = generateKeyPairSync('ed25519');
writeFileSync(keyPath, keys.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
const publicKeyPem = keys.publicKey.export({ type: 'spki', format: 'pem' }).toString();

let stack: Stack;
let storeUrl: string;
let brokerB: ChildProcess;
let urlB: string;
const tunnels: RunningTunnel[] = [];
const clients: pg.Client[] = [];

/** The store as a third party reads it (the test's own window on what both brokers wrote). */
let store: PostgresStore;

async function until<T>(_what: string, probe: () => Promise<T | undefined>): Promise<T> {
  // Waits on a condition in the store (each probe is one query); the test's own timeout bounds it.
  for (;;) {
    const found = await probe();
    if (found !== undefined) return found;
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  stack = await startStack({
    appPg: HOLD_RULES,
    beforeBroker: async (cluster) => {
      const admin = new pg.Client({ connectionString: cluster.url() });
      await admin.connect();
      await admin.query('CREATE DATABASE hoopstore');
      await admin.end();
      storeUrl = cluster.url('hoopstore');
      // Both broker processes inherit it (the URL carries the password: never in the config file).
      process.env.HOOP_REPLICA_STORE_URL = storeUrl;
      const app = new pg.Client({ host: cluster.host, port: cluster.port, user: 'app_rw', password: APP_PASSWORD, database: 'app' });
      await app.connect();
      await app.query('CREATE TABLE scratch (id int)');
      await app.query('INSERT INTO scratch VALUES (1), (2)');
      await app.end();
    },
    extraConfig: {
      store: { type: 'postgres', url: { env: 'HOOP_REPLICA_STORE_URL' } },
      replicas: { heartbeat: '100ms', lostAfter: '1s' },
      audit: { groups: ['auditors'], signingKey: { file: keyPath } },
    },
  });
  const config = parse(readFileSync(stack.configPath, 'utf8')) as { server: { listen: string } };
  const port = await freePort();
  urlB = `http://127.0.0.1:${port}`;
  const configB = join(stack.dir, 'broker-b.yaml');
  writeFileSync(configB, stringify({ ...config, server: { ...config.server, listen: `127.0.0.1:${port}` } }));
  brokerB = await spawnBroker(configB, join(stack.dir, 'broker-b.log'));
  store = await PostgresStore.open(storeUrl);
}, 120_000);

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  for (const t of tunnels) await t.stop();
  if (brokerB && brokerB.exitCode === null && brokerB.signalCode === null) {
    brokerB.kill('SIGTERM');
    await once(brokerB, 'exit');
  }
  await store?.close();
  await stack?.stop();
  delete process.env.HOOP_REPLICA_STORE_URL;
  rmSync(keyDir, { recursive: true, force: true });
});

describe('two brokers on one PostgreSQL store', () => {
  it('an approval, a `sessions end` and a lock sent to A act on the session B serves', async () => {
    const bob = await loginAs(stack, 'bob'); // an approver and admin, talking to A only
    const onB = await startConnectTunnel('app-pg', stack.cliEnv({ HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'ci-report-secret', HOOPCTL_BROKER: urlB }));
    tunnels.push(onB);
    const connectB = async () => {
      const c = new pg.Client(onB.pgClientConfig('app'));
      clients.push(c);
      const ended = new Promise<string>((resolve) => {
        c.on('error', (e) => resolve(e.message));
        c.on('end', () => resolve('ended'));
      });
      await c.connect();
      return { c, ended };
    };

    // A statement held on B is released by `hoopctl approve` sent to A.
    const first = await connectB();
    const held = first.c.query('delete from scratch');
    const review = await until('the held review', async () => (await store.listReviews({ status: ['pending'], kind: 'statement' }))[0]);
    // Cut both brokers' signal listeners just before the approval: a notification sent while B is not listening is
    // lost, and B's resync on listening again must still release the statement.
    const listeners = async () => {
      const admin = new pg.Client({ connectionString: storeUrl });
      await admin.connect();
      try {
        return (await admin.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'hoopctl-broker-signals'")).rows[0]!.n;
      } finally {
        await admin.end();
      }
    };
    expect(await listeners()).toBe(2);
    const admin = new pg.Client({ connectionString: storeUrl });
    await admin.connect();
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'hoopctl-broker-signals'");
    await admin.end();
    const approved = await runCli(['approve', review.id, '--reason', 'ok'], bob);
    expect(approved.code, approved.stderr).toBe(0);
    expect((await held).rowCount).toBe(2);
    await until('both listeners back', async () => ((await listeners()) === 2 ? true : undefined));
    await first.c.query('insert into scratch values (1), (2)');

    // `hoopctl sessions end` sent to A ends it on B, and B records who ended it in the session's own chain.
    const ended = await runCli(['sessions', 'end', review.sessionId!, '--reason', 'runaway query'], bob);
    expect(ended.code, ended.stderr).toBe(0);
    expect(await first.ended).toBeTruthy();
    const stream = await until('the ended event', async () => {
      const ev = await store.listEvents(review.sessionId!, { limit: 10_000 });
      return ev.some((e) => e.type === 'close') ? ev : undefined;
    });
    expect(stream.find((e) => e.type === 'ended')?.data).toMatchObject({ by: 'bob', reason: 'runaway query' });
    // The approval given through A is in the chain of the session B served, as if given on B.
    expect(stream.find((e) => e.type === 'review-approved')?.data).toMatchObject({ review: review.id, by: 'bob', viaReplica: true });
    expect(verifyChain(stream)).toEqual({ ok: true });

    // A lock taken through A ends the locked identity's session on B.
    const second = await connectB();
    expect((await second.c.query('select count(*)::int as n from scratch')).rows).toEqual([{ n: 2 }]);
    const open = (await store.listSessions({ status: 'open' }))[0]!;
    const lock = await runCli(['lock', '--client-id', 'ci-report', '--reason', 'token leaked', '-o', 'json'], bob);
    expect(lock.code, lock.stderr).toBe(0);
    const made = (JSON.parse(lock.stdout) as { lock: { id: string } }).lock;
    expect(await second.ended).toBeTruthy();
    const locked = await until('the lock in B\'s session', async () => {
      const ev = await store.listEvents(open.id, { limit: 10_000 });
      return ev.find((e) => e.type === 'ended');
    });
    expect(locked.data).toMatchObject({ lock: made.id, by: 'bob' });
    expect((await runCli(['unlock', made.id], bob)).code).toBe(0);
    await onB.stop();
  }, 120_000);

  it('kill -9 of one: the other keeps its psql session; the dead one\'s session ends "broker lost" and verifies; its held review is orphaned', async () => {
    const ci = (broker: string) => stack.cliEnv({ HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'ci-report-secret', HOOPCTL_BROKER: broker });
    const onA = await startConnectTunnel('app-pg', ci(stack.brokerUrl));
    const onB = await startConnectTunnel('app-pg', ci(urlB));
    tunnels.push(onA, onB);
    const clientA = new pg.Client(onA.pgClientConfig('app'));
    const clientB = new pg.Client(onB.pgClientConfig('app'));
    clients.push(clientA, clientB);
    clientB.on('error', () => undefined); // its broker is about to die
    await clientA.connect();
    await clientB.connect();
    expect((await clientA.query('select count(*)::int as n from scratch')).rows).toEqual([{ n: 2 }]);
    expect((await clientB.query('select count(*)::int as n from scratch')).rows).toEqual([{ n: 2 }]);

    // B holds an unbounded DELETE for review; the review names B's session.
    const held = clientB.query('delete from scratch').then(() => 'ran', (e: Error) => e.message);
    const review = await until('the held review', async () => (await store.listReviews({ status: ['pending'], kind: 'statement' }))[0]);
    const open = await store.listSessions({ status: 'open' });
    expect(open).toHaveLength(2);
    const sessionB = review.sessionId!;
    const sessionA = open.find((s) => s.id !== sessionB)!.id;

    // Regression: a broker starting while others run (a restarted third replica) used to mark every open session
    // failed. Its start-up sweep runs before it listens: once it listens, A's and B's sessions must still be open.
    const configC = join(stack.dir, 'broker-c.yaml');
    writeFileSync(configC, readFileSync(join(stack.dir, 'broker-b.yaml'), 'utf8').replace(/127\.0\.0\.1:\d+/, `127.0.0.1:${await freePort()}`));
    const brokerC = await spawnBroker(configC, join(stack.dir, 'broker-c.log'));
    const stoppedC = once(brokerC, 'exit');
    brokerC.kill('SIGTERM');
    await stoppedC;
    expect((await store.getSession(sessionA))?.status).toBe('open');
    expect((await store.getSession(sessionB))?.status).toBe('open');
    expect((await store.getReview(review.id))?.status).toBe('pending');

    const exited = once(brokerB, 'exit');
    brokerB.kill('SIGKILL');
    await exited;

    const orphaned = await until('the orphaned review', async () => {
      const r = await store.getReview(review.id);
      return r?.status === 'orphaned' ? r : undefined;
    });
    expect(orphaned.status).toBe('orphaned');
    const lost = await until('B\'s session failed', async () => {
      const s = await store.getSession(sessionB);
      return s?.status === 'failed' ? s : undefined;
    });
    expect(lost.endedAt).toBeGreaterThan(0);
    // The client on B saw its connection end, not a result: the DELETE never ran.
    expect(await held).not.toBe('ran');

    // A's session was never touched, and still works after the sweep.
    expect((await store.getSession(sessionA))?.status).toBe('open');
    expect((await clientA.query('select count(*)::int as n from scratch')).rows).toEqual([{ n: 2 }]);

    // B's session chain ends with "broker lost", verifies, and its last checkpoint is signed by the shared key.
    const events = await until('B\'s session closed in its stream', async () => {
      const ev = await store.listEvents(sessionB, { limit: 10_000 });
      return ev.at(-1)?.type === 'checkpoint' && ev.some((e) => e.type === 'close') ? ev : undefined;
    });
    expect(events.find((e) => e.type === 'close')?.data).toMatchObject({ status: 'failed', error: 'broker lost' });
    expect(verifyChain(events)).toEqual({ ok: true });
    expect(verifyCheckpoints(events, publicKeyPem)).toMatchObject({ ok: true, unsignedTail: 0 });
    const audit = await store.listEvents('audit', { limit: 100_000 });
    expect(audit.filter((e) => e.type === 'session-lost').map((e) => e.data)).toEqual([expect.objectContaining({ session: sessionB, reason: 'broker lost' })]);
    expect(verifyChain(audit)).toEqual({ ok: true });
  }, 120_000);
});
