import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { Review } from '../../src/api/review.js';
import { clientCredentialsLogin } from '../../src/auth/oidc.js';
import { runCrashRound } from '../../scripts/crash/crash-round.js';
import { HOLD_RULES, LEDGER_TABLE } from '../../scripts/crash/ledger-workload.js';
import { publicKeyBeside } from '../../scripts/crash/store-audit.js';
import { startConnectTunnel, type RunningTunnel } from '../../scripts/support/tunnel-client.js';
import { APP_PASSWORD, loginAs, readText, runCli, startStack, type Stack } from '../support/stack.js';

/**
 * When the store fails, for real, on one stack (the broker's SQLite store on a tmpfs of its own, mounted as root, as
 * the suite runs): the broker killed mid-load, then the store's filesystem filled to the last byte.
 *
 * One round of `npm run crash`: tunnelled node-postgres clients insert marked rows and two hold a statement for
 * review while an access grant and a lock exist; the broker process gets SIGKILL mid-load and is started again.
 * What every client saw acknowledged must be in the recording, the chains must verify, the held reviews must be
 * orphaned (not left pending), the grant and the lock must hold, and the sessions the dead broker had open must read
 * failed. The same `hoopctl connect` process carries on through the restart.
 *
 * A store that stops taking writes: the test fills the tmpfs. A running session's next statement is not forwarded
 * (the database never sees it), new sessions are refused with the reason (psql through `hoopctl connect`, and
 * `hoopctl exec`), the broker logs it; once space is back, sessions open again and the recordings still verify.
 */
let stack: Stack;
let bob: NodeJS.ProcessEnv;
let ci: NodeJS.ProcessEnv;
let other: NodeJS.ProcessEnv;
let tunnel: RunningTunnel;
let grant: Review;
let mount: string;
const filler = () => join(mount, 'filler');
const direct = () => ({ host: stack.cluster.host, port: stack.cluster.port, user: 'app_rw', password: APP_PASSWORD, database: 'app' });

/** Writes until the filesystem has no byte left (ENOSPC), in shrinking chunks. */
function fillUp(path: string): void {
  const fd = openSync(path, 'w');
  try {
    for (const size of [1 << 20, 1 << 16, 1 << 12, 1 << 9, 1]) {
      const chunk = Buffer.alloc(size, 0x2a);
      for (;;) {
        try {
          if (writeSync(fd, chunk) < size) break;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw e;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
}

async function ledgerHas(marker: string): Promise<boolean> {
  const c = new pg.Client(direct());
  await c.connect();
  try {
    return (await c.query('select 1 from ledger where marker = $1', [marker])).rowCount === 1;
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  mount = mkdtempSync(join(tmpdir(), 'hoop-full-store-'));
  // 32 MB: room for the crash round's recordings, small enough to fill in a moment.
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=32m,mode=0700', 'tmpfs', mount]);
  stack = await startStack({
    extraConfig: { store: { path: join(mount, 'broker.db') } },
    appPg: { ...HOLD_RULES, access: { groups: ['dba'], clientIds: ['ci-report', 'ci-other'] } },
    extraConnections: [{ name: 'jit-pg', access: { clientIds: ['ci-report'], approval: { groups: ['leads'], maxDuration: '1h' } } }],
  });
  const admin = new pg.Client(direct());
  await admin.connect();
  await admin.query(LEDGER_TABLE);
  await admin.end();
  ci = stack.cliEnv({ HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'ci-report-secret' });
  other = stack.cliEnv({ HOOPCTL_CLIENT_ID: 'ci-other', HOOPCTL_CLIENT_SECRET: 'ci-other-secret' });
  bob = await loginAs(stack, 'bob');
  // An access grant (ci-report on jit-pg, approved by bob) and a lock (ci-other, by bob) that must survive the crash.
  const { accessToken } = await clientCredentialsLogin({ issuer: stack.issuer.issuer, clientId: 'ci-report', clientSecret: 'ci-report-secret' });
  const asked = await fetch(`${stack.brokerUrl}/api/v1/connections/jit-pg/access-requests`, {
    method: 'POST', headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'nightly', duration: '1h' }),
  });
  const requested = ((await asked.json()) as { review: Review }).review;
  const approved = await runCli(['approve', requested.id, '--reason', 'ok', '-o', 'json'], bob);
  expect(approved.code, approved.stderr).toBe(0);
  grant = requested;
  const locked = await runCli(['lock', '--client-id', 'ci-other', '--reason', 'suspected leak'], bob);
  expect(locked.code, locked.stderr).toBe(0);
  tunnel = await startConnectTunnel('app-pg', ci);
}, 120_000);

afterAll(async () => {
  await tunnel?.stop();
  await stack?.stop();
  if (mount) {
    execFileSync('umount', [mount]);
    rmSync(mount, { recursive: true, force: true });
  }
});

describe('kill -9 under load', () => {
  it('loses no acknowledged statement, keeps the chains, grants and locks, and orphans held reviews', async () => {
    const storePath = join(mount, 'broker.db');
    const report = await runCrashRound({
      tag: 'e2e', clients: 4, holders: 2, warmup: 40, killAfterMs: 0,
      connect: () => tunnel.pgClientConfig('app'),
      direct: direct(),
      storePath,
      publicKeyPem: publicKeyBeside(storePath),
      async kill() {
        const exited = once(stack.broker, 'exit');
        stack.broker.kill('SIGKILL');
        await exited;
      },
      restart: () => stack.restartBroker(),
    });
    expect(report.clientErrors).toEqual([]);
    expect(report.acknowledged).toBeGreaterThanOrEqual(40);
    expect(report.missing).toEqual([]);
    expect(report.recorded).toBe(report.acknowledged);
    expect(report.ranUnrecorded).toEqual([]);
    expect(report.broken).toEqual([]);
    expect(report.chainsVerified).toBe(report.streams);
    expect(report.sessionsOpenAtKill).toBe(6);
    expect(report.sessionsMarkedFailed).toBe(6);
    expect(report.reviewsPendingAtKill).toBe(2);
    expect(report.reviewsOrphaned).toBe(2);
    expect(report.reviewsStillPending).toBe(0);
    expect(report.grantsAfter).toEqual([grant.id]);
    expect(report.grantsAfter).toEqual(report.grantsBefore);
    expect(report.locksAfter).toHaveLength(1);
    expect(report.locksAfter).toEqual(report.locksBefore);

    // What a user sees after the restart: the crashed session verifies and reads failed; the orphaned reviews are
    // listed as such; the grant still opens jit-pg; the locked client is still refused; the tunnel carries on.
    const crashed = report.openAtKillIds[0]!;
    const verified = await runCli(['audit', 'verify', crashed], ci);
    expect(verified.code, verified.stderr).toBe(0);
    const sessions = JSON.parse((await runCli(['sessions', '-o', 'json'], ci)).stdout) as Array<{ id: string; status: string }>;
    expect(sessions.find((s) => s.id === crashed)?.status).toBe('failed');
    const orphaned = JSON.parse((await runCli(['reviews', '--status', 'orphaned', '-o', 'json'], bob)).stdout) as Review[];
    expect(orphaned.filter((r) => r.statement?.startsWith('delete from ledger'))).toHaveLength(2);
    const granted = await runCli(['exec', 'jit-pg', '-e', 'select 1 as granted', '-o', 'json'], ci);
    expect(granted.code, granted.stderr).toBe(0);
    const refused = await runCli(['exec', 'app-pg', '-e', 'select 1'], other);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain('suspected leak');
    const client = new pg.Client(tunnel.pgClientConfig('app'));
    await client.connect();
    const { rows } = await client.query<{ n: number }>('select count(*)::int as n from ledger');
    await client.end();
    expect(rows[0]!.n).toBeGreaterThanOrEqual(report.acknowledged);
  });
});

describe('a store that fills up', () => {
  it('forwards nothing it cannot record, refuses new sessions saying why, and recovers once space is back', async () => {
    const before = new Set((JSON.parse((await runCli(['sessions', '-o', 'json', '-n', '1000'], ci)).stdout) as Array<{ id: string }>).map((s) => s.id));
    const running = new pg.Client(tunnel.pgClientConfig('app'));
    running.on('error', () => undefined);
    await running.connect();
    await running.query("insert into ledger (marker) values ('m:before-full')");

    fillUp(filler());
    // A statement larger than a page: the store's journal may still have room in its last page (tmpfs allocates by the
    // page) for a small record, which would then be durable and rightly forwarded.
    await expect(running.query(`insert into ledger (marker) values ('m:while-full') -- ${'x'.repeat(16 * 1024)}`)).rejects.toThrow(
      'broker could not record the statement, so it was not forwarded',
    );
    expect(await ledgerHas('m:while-full')).toBe(false);

    const psqlLike = new pg.Client(tunnel.pgClientConfig('app'));
    psqlLike.on('error', () => undefined);
    await expect(psqlLike.connect()).rejects.toThrow(/the broker cannot record sessions now, so it opens none and forwards nothing: its store refused a write \(database or disk is full\)/);
    const exec = await runCli(['exec', 'app-pg', '-e', "insert into ledger (marker) values ('m:exec-while-full')"], ci);
    expect(exec.code).not.toBe(0);
    expect(exec.stderr).toContain('the broker cannot record sessions now');
    expect(await ledgerHas('m:exec-while-full')).toBe(false);
    expect(readText(stack.brokerLogPath)).toMatch(/"msg":"store refused a write: refusing the tunnel".*database or disk is full|database or disk is full.*"msg":"store refused a write: refusing the tunnel"/);

    rmSync(filler());
    const after = await runCli(['exec', 'app-pg', '-e', "insert into ledger (marker) values ('m:after-full')"], ci);
    expect(after.code, after.stderr).toBe(0);
    expect(await ledgerHas('m:after-full')).toBe(true);
    // The sessions of this case (the one cut by the full store, the one after): each recording verifies.
    const sessions = (JSON.parse((await runCli(['sessions', '-o', 'json', '-n', '1000'], ci)).stdout) as Array<{ id: string }>).filter((s) => !before.has(s.id));
    expect(sessions.length).toBeGreaterThanOrEqual(2);
    for (const s of sessions) {
      const verified = await runCli(['audit', 'verify', s.id], ci);
      expect(verified.code, `${s.id}: ${verified.stdout}${verified.stderr}`).toBe(0);
    }
  });
});
