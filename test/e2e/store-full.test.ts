import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { LEDGER_TABLE } from '../../scripts/crash/ledger-workload.js';
import { startConnectTunnel, type RunningTunnel } from '../../scripts/support/tunnel-client.js';
import { APP_PASSWORD, readText, runCli, startStack, type Stack } from '../support/stack.js';

/**
 * A store that stops taking writes, for real: the broker's SQLite store lives on a 16 MB tmpfs (mounted as root, as
 * the suite runs), which the test then fills to the last byte. A running session's next statement is not forwarded
 * (the database never sees it), new sessions are refused with the reason (psql through `hoopctl connect`, and
 * `hoopctl exec`), the broker logs it; once space is back, sessions open again and the recordings still verify.
 */
let stack: Stack;
let mount: string;
let ci: NodeJS.ProcessEnv;
let tunnel: RunningTunnel;
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
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,mode=0700', 'tmpfs', mount]);
  stack = await startStack({ extraConfig: { store: { path: join(mount, 'broker.db') } } });
  const admin = new pg.Client(direct());
  await admin.connect();
  await admin.query(LEDGER_TABLE);
  await admin.end();
  ci = stack.cliEnv({ HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'ci-report-secret' });
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

describe('a store that fills up', () => {
  it('forwards nothing it cannot record, refuses new sessions saying why, and recovers once space is back', async () => {
    const running = new pg.Client(tunnel.pgClientConfig('app'));
    running.on('error', () => undefined);
    await running.connect();
    await running.query("insert into ledger (marker) values ('m:before-full')");

    fillUp(filler());
    await expect(running.query("insert into ledger (marker) values ('m:while-full')")).rejects.toThrow(
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
    const sessions = JSON.parse((await runCli(['sessions', '-o', 'json'], ci)).stdout) as Array<{ id: string }>;
    expect(sessions.length).toBeGreaterThanOrEqual(2);
    for (const s of sessions) {
      const verified = await runCli(['audit', 'verify', s.id], ci);
      expect(verified.code, `${s.id}: ${verified.stdout}${verified.stderr}`).toBe(0);
    }
  });
});
