/**
 * `npm run load`: LOAD_SESSIONS (default 500) concurrent tunnelled PostgreSQL sessions × LOAD_STATEMENTS (default
 * 1,000) statements through one broker; expects 0 errors and every statement recorded, and reports the broker's RSS.
 * All real: a throwaway cluster (max_connections raised for the sessions), the development OIDC issuer, the broker
 * and LOAD_TUNNELS (default 4) `hoopctl connect` processes; node-postgres clients in this process, each its own
 * session over its own WebSocket, spread over the tunnels. Why a handful of `hoopctl connect` and not one per
 * session: 500 CLI processes would cost ~30 GB of RSS and measure process start-up on a 2-core machine, while each
 * accepted TCP connection already rides its own WebSocket and is its own broker session — what the broker sees is
 * the same 500 sessions. Afterwards the store is read as an auditor would (scripts/crash/store-audit.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { clientCredentialsLogin } from '../src/auth/oidc.js';
import { startDevIssuer } from '../src/dev/oidc-issuer.js';
import { startPgCluster } from '../src/dev/pg-cluster.js';
import { freePort } from '../src/lib/net.js';
import { LEDGER_TABLE, LedgerWorkload } from './crash/ledger-workload.js';
import { publicKeyBeside, readStore } from './crash/store-audit.js';
import { HOOPCTL_BIN, startConnectTunnel, type RunningTunnel } from './support/tunnel-client.js';

const sessions = Number(process.env.LOAD_SESSIONS ?? 500);
const statements = Number(process.env.LOAD_STATEMENTS ?? 1000);
const tunnelCount = Number(process.env.LOAD_TUNNELS ?? 4);

function memoryMb(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) / 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-load-'));
  const cluster = await startPgCluster({ auth: 'scram-sha-256', settings: { max_connections: String(sessions + 50), shared_buffers: '256MB' } });
  const issuer = await startDevIssuer({ audience: 'urn:hoopctl:load', accessTokenTtlSeconds: 3600, serviceClients: [{ clientId: 'load', clientSecret: 'load-secret', groups: ['writers'] }] });
  let broker: ChildProcess | undefined;
  const tunnels: RunningTunnel[] = [];
  try {
    const admin = new pg.Client({ connectionString: cluster.url() });
    await admin.connect();
    await admin.query(LEDGER_TABLE);
    await admin.end();
    const port = await freePort();
    const storePath = join(dir, 'broker.db');
    writeFileSync(join(dir, 'broker.yaml'), stringify({
      server: { listen: `127.0.0.1:${port}` },
      store: { path: storePath },
      logging: { level: 'warn' },
      auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:hoopctl:load', maxTokenLifetime: '2h' }] },
      connections: [{
        name: 'ledger', type: 'postgres',
        target: { host: cluster.host, port: cluster.port, database: 'postgres', sslmode: 'disable' },
        credentials: { user: cluster.superuser, password: { value: cluster.password } },
        access: { groups: ['writers'] },
        // Every statement is parsed and judged, as on a production connection.
        rules: [{ name: 'no-ddl', match: { effects: ['schema'] }, action: 'deny' }],
      }],
    }));
    broker = spawn(process.execPath, [HOOPCTL_BIN, 'broker', 'start', '--config', join(dir, 'broker.yaml')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let brokerErr = '';
    await new Promise<void>((resolve, reject) => {
      broker!.stderr!.on('data', (d) => {
        brokerErr += d;
        if (brokerErr.includes('broker listening on')) resolve();
      });
      broker!.once('exit', (code) => reject(new Error(`broker exited ${code}: ${brokerErr}`)));
    });
    const { accessToken } = await clientCredentialsLogin({ issuer: issuer.issuer, clientId: 'load', clientSecret: 'load-secret' });
    const env = { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: join(dir, 'cfg'), HOOPCTL_TOKEN: accessToken, HOOPCTL_BROKER: `http://127.0.0.1:${port}` };
    for (let i = 0; i < tunnelCount; i++) tunnels.push(await startConnectTunnel('ledger', env));
    const idle = memoryMb(broker.pid!);
    let next = 0;
    const workload = new LedgerWorkload({ tag: 'load', clients: sessions, holders: 0, statements, openAtOnce: 25, connect: () => tunnels[next++ % tunnels.length]!.pgClientConfig('postgres') });
    let peakDuring = 0;
    let ticks = 0;
    const sampler = setInterval(() => {
      peakDuring = Math.max(peakDuring, memoryMb(broker!.pid!).rss);
      if (++ticks % 15 === 0) process.stderr.write(`  ${ticks} s: ${workload.acknowledged.length} acknowledged, ${workload.errors.length + workload.lost} errors, broker RSS ${memoryMb(broker!.pid!).rss.toFixed(0)} MB${workload.errors[0] ?? [...workload.lostReasons][0] ? `; first error: ${workload.errors[0] ?? [...workload.lostReasons][0]}` : ''}\n`);
    }, 1000);
    process.stderr.write(`${sessions} sessions (opened 25 at a time, then all run together) × ${statements} statements over ${tunnelCount} hoopctl connect processes…\n`);
    const started = performance.now();
    workload.start();
    await workload.done;
    const seconds = (performance.now() - started) / 1000;
    clearInterval(sampler);
    const atEnd = memoryMb(broker.pid!);
    process.stderr.write(`done in ${seconds.toFixed(1)} s; reading the store…\n`);
    // Sessions close (and record it) as their clients end: wait until the store has no open session left.
    const audit = async () => {
      for (;;) {
        const facts = readStore(storePath, publicKeyBeside(storePath));
        if (![...facts.sessions.values()].includes('open')) return facts;
        await new Promise((r) => setTimeout(r, 500));
      }
    };
    const facts = await audit();
    const check = new pg.Client({ connectionString: cluster.url() });
    await check.connect();
    const rows = (await check.query<{ n: number }>("select count(*)::int as n from ledger where marker like 'm:load-%'")).rows[0]!.n;
    await check.end();
    const acknowledged = workload.acknowledged;
    const missing = acknowledged.filter((m) => !facts.statements.has(m)).length;
    const withResult = acknowledged.filter((m) => facts.results.has(m)).length;
    const closed = [...facts.sessions.values()].filter((s) => s === 'closed').length;
    const report = [
      `Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}; ${new Date().toISOString()}`,
      `Command: npm run load (LOAD_SESSIONS=${sessions}, LOAD_STATEMENTS=${statements}, LOAD_TUNNELS=${tunnelCount})`,
      '',
      '| sessions | statements each | acknowledged | errors | recorded (statement events) | missing | with a recorded result | rows in the database | chains verified | sessions closed | time | statements/s |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|',
      `| ${sessions} | ${statements} | ${acknowledged.length} | ${workload.errors.length + workload.lost} | ${acknowledged.length - missing} | ${missing} | ${withResult} | ${rows} | ${facts.chainsVerified}/${facts.streams} | ${closed} | ${seconds.toFixed(1)} s | ${(acknowledged.length / seconds).toFixed(0)} |`,
      '',
      `Broker RSS: ${idle.rss.toFixed(0)} MB idle before the load, ${peakDuring.toFixed(0)} MB peak sampled during it (VmHWM ${atEnd.peak.toFixed(0)} MB), ${atEnd.rss.toFixed(0)} MB when the clients were done.`,
    ];
    process.stdout.write(report.join('\n') + '\n');
    if (workload.errors.length + workload.lost > 0 || missing > 0 || acknowledged.length !== sessions * statements || facts.broken.length > 0) {
      process.stderr.write(`FAILED: errors ${JSON.stringify(workload.errors.slice(0, 5))}, lost ${workload.lost} (${JSON.stringify([...workload.lostReasons].slice(0, 5))}), broken ${JSON.stringify(facts.broken.slice(0, 5))}\n`);
      process.exitCode = 1;
    }
  } finally {
    for (const t of tunnels) await t.stop().catch(() => undefined);
    if (broker && broker.exitCode === null) {
      const exited = once(broker, 'exit');
      broker.kill('SIGTERM');
      await exited;
    }
    await issuer.stop();
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`load run failed: ${(e as Error).stack}\n`);
  process.exitCode = 1;
});
