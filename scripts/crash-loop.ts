/**
 * `npm run crash`: kill -9 the broker under load, again and again (CRASH_ROUNDS, default 20), and count what survived.
 * All real and each its own process: a throwaway PostgreSQL cluster, the development OIDC issuer (in this process),
 * the broker (`hoopctl broker start`) and one `hoopctl connect` that stays up across every restart; node-postgres
 * clients in this process ride that tunnel. Each round: CRASH_CLIENTS writers insert marked rows (half simple, half
 * extended protocol) and two holders wait on a statement held for review, with an access grant and a lock in the
 * store; after a warm-up the broker is killed at a random moment (seeded: CRASH_SEED), then started again and the
 * store is read as an auditor would (scripts/crash/store-audit.ts). Prints a table per round and the totals.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { clientCredentialsLogin } from '../src/auth/oidc.js';
import { startDevIssuer } from '../src/dev/oidc-issuer.js';
import { startPgCluster } from '../src/dev/pg-cluster.js';
import { freePort } from '../src/lib/net.js';
import { runCrashRound, type CrashRoundReport } from './crash/crash-round.js';
import { HOLD_RULES, LEDGER_TABLE } from './crash/ledger-workload.js';
import { publicKeyBeside } from './crash/store-audit.js';
import { HOOPCTL_BIN, startConnectTunnel } from './support/tunnel-client.js';

const rounds = Number(process.env.CRASH_ROUNDS ?? 20);
const clients = Number(process.env.CRASH_CLIENTS ?? 8);
const holders = 2;
let seed = Number(process.env.CRASH_SEED ?? 13);
/** mulberry32: the kill moments of a run can be replayed with its seed. */
function random(): number {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

async function spawnBroker(configPath: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [HOOPCTL_BIN, 'broker', 'start', '--config', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let err = '';
    const onData = (d: Buffer) => {
      err += d;
      if (!err.includes('broker listening on')) return;
      child.stderr!.off('data', onData);
      child.off('exit', onExit);
      child.stderr!.resume();
      resolve();
    };
    const onExit = (code: number | null) => reject(new Error(`broker exited ${code}: ${err}`));
    child.stderr!.on('data', onData);
    child.once('exit', onExit);
  });
  return child;
}

async function api(url: string, token: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const json = (await res.json()) as Record<string, unknown>;
  if (!res.ok) throw new Error(`${url}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-crash-'));
  const cluster = await startPgCluster({ auth: 'scram-sha-256' });
  const issuer = await startDevIssuer({
    audience: 'urn:hoopctl:crash', accessTokenTtlSeconds: 3600,
    serviceClients: [
      { clientId: 'load', clientSecret: 'load-secret', groups: ['writers'] },
      { clientId: 'lead', clientSecret: 'lead-secret', groups: ['leads'] },
      { clientId: 'suspect', clientSecret: 'suspect-secret', groups: ['writers'] },
    ],
  });
  let broker: ChildProcess | undefined;
  let tunnel: Awaited<ReturnType<typeof startConnectTunnel>> | undefined;
  try {
    const admin = new pg.Client({ connectionString: cluster.url() });
    await admin.connect();
    await admin.query(LEDGER_TABLE);
    await admin.end();
    const port = await freePort();
    const brokerUrl = `http://127.0.0.1:${port}`;
    const storePath = join(dir, 'broker.db');
    const configPath = join(dir, 'broker.yaml');
    const target = { host: cluster.host, port: cluster.port, database: 'postgres', sslmode: 'disable' };
    const credentials = { user: cluster.superuser, password: { value: cluster.password } };
    writeFileSync(configPath, stringify({
      server: { listen: `127.0.0.1:${port}` },
      store: { path: storePath },
      logging: { level: 'warn' },
      auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:hoopctl:crash', maxTokenLifetime: '2h' }] },
      admin: { groups: ['leads'] },
      connections: [
        { name: 'ledger', type: 'postgres', target, credentials, access: { groups: ['writers'] }, ...HOLD_RULES },
        { name: 'ledger-jit', type: 'postgres', target, credentials, access: { groups: ['writers'], approval: { groups: ['leads'], maxDuration: '2h' } } },
      ],
    }));
    broker = await spawnBroker(configPath);
    const token = async (clientId: string) => (await clientCredentialsLogin({ issuer: issuer.issuer, clientId, clientSecret: `${clientId}-secret` })).accessToken;
    const [load, lead] = [await token('load'), await token('lead')];
    // What must outlive every crash: an approved access grant and a lock.
    const asked = (await api(`${brokerUrl}/api/v1/connections/ledger-jit/access-requests`, load, { reason: 'crash run', duration: '2h' })).review as { id: string };
    await api(`${brokerUrl}/api/v1/reviews/${asked.id}/approve`, lead, { reason: 'ok' });
    await api(`${brokerUrl}/api/v1/locks`, lead, { clientId: 'suspect', reason: 'crash run' });
    tunnel = await startConnectTunnel('ledger', { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: join(dir, 'cfg'), HOOPCTL_TOKEN: load, HOOPCTL_BROKER: brokerUrl });
    const publicKeyPem = publicKeyBeside(storePath);
    const reports: Array<CrashRoundReport & { killAfterMs: number }> = [];
    for (let round = 1; round <= rounds; round++) {
      const killAfterMs = Math.floor(random() * 2000);
      const current = tunnel;
      const report = await runCrashRound({
        tag: `r${round}`, clients, holders, warmup: clients * 5, killAfterMs,
        connect: () => current.pgClientConfig('postgres'),
        direct: { connectionString: cluster.url() },
        storePath, publicKeyPem,
        async kill() {
          const exited = once(broker!, 'exit');
          broker!.kill('SIGKILL');
          await exited;
        },
        async restart() {
          broker = await spawnBroker(configPath);
        },
      });
      reports.push({ ...report, killAfterMs });
      process.stderr.write(`round ${round}: killed ${killAfterMs} ms after warm-up; ${report.acknowledged} acknowledged, ${report.missing.length} missing, ` +
        `${report.chainsVerified}/${report.streams} chains, ${report.reviewsOrphaned}/${report.reviewsPendingAtKill} reviews orphaned\n`);
    }
    const sum = (f: (r: CrashRoundReport) => number) => reports.reduce((a, r) => a + f(r), 0);
    const last = reports.at(-1)!;
    const lines = [
      `Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}; ${new Date().toISOString()}`,
      `Command: npm run crash (CRASH_ROUNDS=${rounds}, CRASH_CLIENTS=${clients}, CRASH_SEED=${process.env.CRASH_SEED ?? 13}); ${holders} held statements per round`,
      '',
      '| round | kill after warm-up | acknowledged | recorded | missing | results lost in flight | ran unrecorded | chains verified | sessions failed / open at kill | reviews orphaned / pending at kill | client errors |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
      ...reports.map((r, i) => `| ${i + 1} | ${r.killAfterMs} ms | ${r.acknowledged} | ${r.recorded} | ${r.missing.length} | ${r.resultsLost} | ${r.ranUnrecorded.length} | ${r.chainsVerified}/${r.streams} | ${r.sessionsMarkedFailed}/${r.sessionsOpenAtKill} | ${r.reviewsOrphaned}/${r.reviewsPendingAtKill} | ${r.clientErrors.length} |`),
      `| **total** | | ${sum((r) => r.acknowledged)} | ${sum((r) => r.recorded)} | ${sum((r) => r.missing.length)} | ${sum((r) => r.resultsLost)} | ${last.ranUnrecorded.length} (all rounds) | ${last.chainsVerified}/${last.streams} (whole store) | ${sum((r) => r.sessionsMarkedFailed)}/${sum((r) => r.sessionsOpenAtKill)} | ${sum((r) => r.reviewsOrphaned)}/${sum((r) => r.reviewsPendingAtKill)} | ${sum((r) => r.clientErrors.length)} |`,
      '',
      `Grants active: ${reports[0]!.grantsBefore.length} before the first kill, ${last.grantsAfter.length} after the last (changed in ${reports.filter((r) => r.grantsAfter.join() !== r.grantsBefore.join()).length} rounds). ` +
        `Locks active: ${reports[0]!.locksBefore.length} before, ${last.locksAfter.length} after (changed in ${reports.filter((r) => r.locksAfter.join() !== r.locksBefore.join()).length} rounds). ` +
        `Held reviews still pending after a restart: ${sum((r) => r.reviewsStillPending)}. Client connections lost to the kills: ${sum((r) => r.connectionsLost)}.`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
    const failed = sum((r) => r.missing.length) + last.ranUnrecorded.length + last.broken.length + sum((r) => r.clientErrors.length + r.reviewsStillPending) > 0 ||
      reports.some((r) => r.grantsAfter.join() !== r.grantsBefore.join() || r.locksAfter.join() !== r.locksBefore.join() || r.sessionsMarkedFailed !== r.sessionsOpenAtKill);
    if (failed) {
      process.stderr.write(`FAILED: ${JSON.stringify(reports.map((r) => ({ missing: r.missing.slice(0, 5), broken: r.broken.slice(0, 5), errors: r.clientErrors.slice(0, 5) })))}\n`);
      process.exitCode = 1;
    }
  } finally {
    await tunnel?.stop().catch(() => undefined);
    broker?.kill('SIGTERM');
    if (broker && broker.exitCode === null) await once(broker, 'exit');
    await issuer.stop();
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`crash run failed: ${(e as Error).stack}\n`);
  process.exitCode = 1;
});
