/**
 * `npm run bench`: PostgreSQL, HTTP and SSH through hoopctl + broker against reference paths, in one run on this
 * machine and against the same backends. Everything is real: a throwaway cluster (pgbench scale 10), the
 * development OIDC issuer, the broker and `hoopctl connect` as their own processes, pgbench/psql/pg as the load.
 * The PostgreSQL reference rows are the direct path, pgbouncer in session mode and a raw two-hop Node.js relay
 * (scripts/bench/peers.ts); every gated figure is printed ÷ direct and ÷ the raw relay. Rows are measured in
 * interleaved rounds (BENCH_ROUNDS, the order rotating) and the median is kept, so noise from other processes
 * hits every row alike. BENCHMARKS.md keeps the figures with the machine they came from.
 *
 * Knobs: BENCH_SECONDS (per row, split over the rounds; default 15), BENCH_ROUNDS (3), BENCH_CLIENTS (8),
 * BENCH_IDLE_SESSIONS (1000), BENCH_PARTS (comma list of pgbench,big,sessions,verdict,store,http,ssh,replicas, `pg` = pgbench,big; default all),
 * BENCH_PROFILE=1 (CPU profiles of the broker, hoopctl connect and the relay hops; top self-time frames printed),
 * BENCH_BROKER_NODE_ARGS (extra Node.js arguments for the broker alone, space-separated: a V8 flag or a diagnostic
 * `--require` tried against the same run's other rows).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { startPgCluster } from '../src/dev/pg-cluster.js';
import { startDevIssuer } from '../src/dev/oidc-issuer.js';
import { clientCredentialsLogin } from '../src/auth/oidc.js';
import { freePort } from '../src/lib/net.js';
import { Agent, request } from 'node:http';
import { startSshd } from '../src/dev/sshd.js';
import { startPgbouncer, startRawRelay } from './bench/peers.js';
import { cpuSeconds, mainThreadCpuSeconds, profiledNodeArgs, rssMb, rssSampler, summariseProfiles, treeCpuSeconds, waitForLine } from './bench/processes.js';
import { openIdleSessions, sessionRate, sustainedSessionRate, type PgTarget } from './bench/session-load.js';
import { measureVerdictCost } from './bench/verdict-cost.js';
import { measureStoreCommit } from './bench/store-commit.js';
import { startHaproxy } from './bench/replicas.js';

const seconds = Number(process.env.BENCH_SECONDS ?? 15);
const rounds = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const clients = Number(process.env.BENCH_CLIENTS ?? 8);
const idleSessions = Number(process.env.BENCH_IDLE_SESSIONS ?? 1000);
const parts = new Set((process.env.BENCH_PARTS ?? 'pgbench,big,sessions,verdict,store,http,ssh,replicas').split(',').flatMap((p) => (p.trim() === 'pg' ? ['pgbench', 'big'] : [p.trim()])));
const profiling = Boolean(process.env.BENCH_PROFILE);
const brokerNodeArgs = (process.env.BENCH_BROKER_NODE_ARGS ?? '').split(' ').filter(Boolean);

/** The queries, stated once: the report prints them. */
const PGBENCH_QUERY = 'pgbench -S (select-only: `SELECT abalance FROM pgbench_accounts WHERE aid = :aid`), scale 10, simple protocol';
const BIG_SQL = "select g as id, 'customer' || g || '@example.com' as email, md5(g::text) as note from generate_series(1, 1000000) g";

interface PgbenchResult {
  tps: number;
  latencyMs: number;
}

function pgbench(env: NodeJS.ProcessEnv, args: string[]): PgbenchResult {
  const out = execFileSync('pgbench', args, { env: { ...process.env, ...env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const tps = Number(/tps = ([\d.]+)/.exec(out)?.[1]);
  const latencyMs = Number(/latency average = ([\d.]+) ms/.exec(out)?.[1]);
  if (!Number.isFinite(tps)) throw new Error(`cannot read pgbench output:\n${out}`);
  return { tps, latencyMs };
}

/** Seconds for psql to fetch a whole result and throw it away. */
function timePsql(env: NodeJS.ProcessEnv, sql: string): number {
  const started = process.hrtime.bigint();
  execFileSync('psql', ['-X', '-w', '-q', '-At', '-c', sql], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 30 });
  return Number(process.hrtime.bigint() - started) / 1e9;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/**
 * Runs `measure` for every path in `rounds` rounds, the order rotating each round, and keeps each path's
 * median: a burst of load from other processes then falls on every path alike.
 */
function interleaved<P extends { name: string }>(paths: P[], measure: (p: P) => number): Map<string, number> {
  const seen = new Map<string, number[]>(paths.map((p) => [p.name, []]));
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < paths.length; i++) {
      const p = paths[(i + r) % paths.length]!;
      process.stderr.write(`  round ${r + 1}/${rounds}: ${p.name}\n`);
      seen.get(p.name)!.push(measure(p));
    }
  }
  return new Map([...seen].map(([name, v]) => [name, median(v)]));
}

/** A JSON API in its own process (so the load generator does not share its event loop): GET /items → ~1 KB. */
const API_SERVER = `
const items = Array.from({ length: 12 }, (_, i) => ({ id: i, name: 'item ' + i, owner: 'owner' + i + '@example.com', price: i * 3.5 }));
const body = JSON.stringify({ items });
require('node:http').createServer((req, res) => { res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }); res.end(body); })
  .listen(0, '127.0.0.1', function () { console.log(JSON.stringify({ port: this.address().port })); });
`;

/** Requests per second of `concurrency` keep-alive clients fetching `url` for `secs` seconds, and mean latency. */
/** What `hoopctl connect -o json` prints: the port, and per type the tunnel's own secret (URL password, bearer, key). */
interface TunnelReady {
  port: number;
  url?: string;
  hostKey?: string;
  bearer?: string;
  identityFile?: string;
}

async function httpLoad(url: string, concurrency: number, secs: number, bearer?: string): Promise<{ rps: number; latencyMs: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const until = Date.now() + secs * 1000;
  let done = 0;
  let totalMs = 0;
  const one = () =>
    new Promise<void>((resolvePromise, reject) => {
      const started = performance.now();
      request(url, { agent, ...(bearer ? { headers: { authorization: `Bearer ${bearer}` } } : {}) }, (res) => {
        if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode} from ${url}`));
        res.resume();
        res.on('end', () => {
          totalMs += performance.now() - started;
          done++;
          resolvePromise();
        });
      }).on('error', reject).end();
    });
  const started = Date.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (Date.now() < until) await one();
  }));
  agent.destroy();
  return { rps: done / ((Date.now() - started) / 1000), latencyMs: totalMs / done };
}

/** One PostgreSQL path of the benchmark: how psql and pgbench reach it (libpq environment). */
interface PgPath {
  name: string;
  env: NodeJS.ProcessEnv;
  /** A path through the gate: printed ÷ direct and ÷ the raw relay. */
  gated: boolean;
}

const ratio = (a: number | undefined, b: number | undefined) => (a && b ? (a / b).toFixed(2) : '–');

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-bench-'));
  const profileDir = profiling ? join(dir, 'profiles') : undefined;
  if (profileDir) mkdirSync(profileDir);
  const cluster = await startPgCluster({ auth: 'scram-sha-256', settings: { shared_buffers: '256MB', max_connections: String(idleSessions + 100) } });
  const children: ChildProcess[] = [];
  const cleanups: Array<() => Promise<void>> = [];
  const removals: Array<() => void> = [];
  const report: string[] = [];
  const started = new Date();
  const load0 = loadavg();
  try {
    process.stderr.write('initialising pgbench scale 10…\n');
    execFileSync('pgbench', ['-i', '-s', '10', '-q'], { env: { ...process.env, ...cluster.psqlEnv() }, stdio: 'ignore' });
    const issuer = await startDevIssuer({ audience: 'urn:hoopctl:bench', accessTokenTtlSeconds: 3600, serviceClients: [{ clientId: 'bench', clientSecret: 'bench-secret', groups: ['bench'] }] });
    const port = await freePort();
    const frontDoorPort = await freePort();
    const sshd = parts.has('ssh') ? await startSshd() : undefined;
    if (sshd) cleanups.push(() => sshd.stop());
    const api = spawn(process.execPath, ['-e', API_SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(api);
    const apiPort = JSON.parse((await waitForLine(api, 'stdout', /\{.*\}\n/))[0]!).port as number;
    const pgConnection = (name: string, rules?: unknown[], extra: Record<string, unknown> = {}) => ({
      name, type: 'postgres',
      target: { host: cluster.host, port: cluster.port, database: 'postgres', sslmode: 'disable' },
      credentials: { user: cluster.superuser, password: { value: cluster.password } },
      access: { clientIds: ['bench'] },
      ...(rules ? { rules } : {}),
      ...extra,
    });
    const brokerConfig = {
      server: { listen: `127.0.0.1:${port}` },
      // The broker's own PostgreSQL listener (the front door: one hop, the token as the password).
      postgres: { listen: `127.0.0.1:${frontDoorPort}` },
      store: { path: join(dir, 'broker.db') },
      logging: { level: 'warn' },
      auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:hoopctl:bench', maxTokenLifetime: '2h' }] },
      connections: [
        pgConnection('bench'),
        // The same with the broker's backend pool: sessions reuse logged-in backends (reset with DISCARD ALL).
        pgConnection('bench-pooled', undefined, { pool: { idle: 2 * clients } }),
        // A column rule only: the masker rewrites one named column of every row.
        pgConnection('bench-mask-column', [{ name: 'pii', mask: { columns: ['email'], strategy: 'redact' } }]),
        // Content detectors only: every text value of every row is scanned.
        pgConnection('bench-mask-detect', [{ name: 'pii', mask: { detectors: ['email', 'credit_card'], strategy: 'redact' } }]),
        ...(sshd ? [{
          name: 'host', type: 'ssh', target: { host: sshd.host, port: sshd.port, user: sshd.user, hostKey: sshd.hostPublicKey },
          credentials: { privateKey: { file: sshd.clientKeyPath } }, access: { clientIds: ['bench'] },
        }] : []),
        ...['api', 'api-masked'].map((name) => ({
          name, type: 'http', target: { url: `http://127.0.0.1:${apiPort}` }, credentials: { bearer: { value: 'bench-api-token' } },
          access: { clientIds: ['bench'] },
          ...(name === 'api-masked' ? { mask: { jsonPaths: ['$.items[*].owner'], detectors: ['email'] } } : {}),
        })),
      ],
    };
    writeFileSync(join(dir, 'broker.yaml'), stringify(brokerConfig));
    const broker = spawn(process.execPath, [...brokerNodeArgs, ...profiledNodeArgs(profileDir, 'broker'), resolve(import.meta.dirname, '../../bin/hoopctl'), 'broker', 'start', '--config', join(dir, 'broker.yaml')], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(broker);
    await waitForLine(broker, 'stderr', /broker listening on/);
    const brokerRss = rssSampler(broker.pid!);
    const { accessToken } = await clientCredentialsLogin({ issuer: issuer.issuer, clientId: 'bench', clientSecret: 'bench-secret' });
    const env = { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: join(dir, 'cfg'), HOOPCTL_TOKEN: accessToken, HOOPCTL_BROKER: `http://127.0.0.1:${port}` };
    const connect = async (connection: string, profileName?: string, brokerUrl?: string) => {
      const t = spawn(process.execPath, [...profiledNodeArgs(profileName ? profileDir : undefined, profileName ?? ''), resolve(import.meta.dirname, '../../bin/hoopctl'), 'connect', connection, '-o', 'json'], {
        env: brokerUrl ? { ...env, HOOPCTL_BROKER: brokerUrl } : env, stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(t);
      return { child: t, ready: JSON.parse((await waitForLine(t, 'stdout', /\{.*\}\n/))[0]!) as TunnelReady };
    };

    // The one place that says how a client reaches a tunnel's local PostgreSQL listener: its port and its own password
    // (in the URL connect prints; a tunnel serves only its owner, the broker injects the database's credential).
    const tunnelTarget = (ready: TunnelReady): PgTarget => ({
      host: '127.0.0.1', port: ready.port, user: 'bench', database: 'postgres', password: decodeURIComponent(new URL(ready.url!).password),
    });
    const libpqEnv = (t: PgTarget): NodeJS.ProcessEnv => ({
      PGHOST: t.host, PGPORT: String(t.port), PGUSER: t.user, PGDATABASE: t.database, ...(t.password ? { PGPASSWORD: t.password } : {}),
    });
    // A tunnel is reached as `hoopctl connect` prints it, sslmode included (disable: the hop is loopback). Without it
    // libpq's default (prefer) put TLS on the loopback hop that no reference row pays: 0.78 x the TPS in one run.
    const tunnelEnv = (ready: TunnelReady): NodeJS.ProcessEnv => ({
      ...libpqEnv(tunnelTarget(ready)), PGSSLMODE: new URL(ready.url!).searchParams.get('sslmode') ?? 'prefer',
    });

    if (parts.has('pgbench') || parts.has('big') || parts.has('sessions')) {
      const gate = await connect('bench', 'hoopctl-connect');
      const direct: PgPath = { name: 'direct', gated: false, env: libpqEnv({ host: cluster.host, port: cluster.port, user: cluster.superuser, database: 'postgres', password: cluster.password }) };
      const bouncer = await startPgbouncer({ host: cluster.host, port: cluster.port, user: cluster.superuser, password: cluster.password }).catch((e: Error) => {
        process.stderr.write(`pgbouncer did not start, its row is skipped: ${e.message}\n`);
        return undefined;
      });
      if (bouncer) {
        children.push(...bouncer.processes);
        removals.push(() => bouncer.remove?.());
      }
      const relay = await startRawRelay(cluster.host, cluster.port, (name) => profiledNodeArgs(profileDir, name));
      children.push(...relay.processes);
      const paths: PgPath[] = [
        direct,
        ...(bouncer ? [{ name: 'pgbouncer (session mode)', gated: false, env: { ...direct.env, PGHOST: bouncer.host, PGPORT: String(bouncer.port) } }] : []),
        { name: 'raw two-hop Node relay', gated: false, env: { ...direct.env, PGHOST: relay.host, PGPORT: String(relay.port) } },
        { name: 'hoopctl connect + broker', gated: true, env: tunnelEnv(gate.ready) },
        // The broker's own PostgreSQL listener (issue 15 item 3, one hop): dbname is the connection, the token the password.
        { name: 'PostgreSQL front door (broker, one hop)', gated: true, env: { ...libpqEnv({ host: '127.0.0.1', port: frontDoorPort, user: 'bench', database: 'bench', password: accessToken }), PGSSLMODE: 'disable' } },
      ];
      const [directName, relayName] = [direct.name, 'raw two-hop Node relay'];

      if (parts.has('pgbench')) {
        const roundSecs = String(Math.max(2, Math.round(seconds / rounds)));
        process.stderr.write(`pgbench -S, ${clients} clients, ${rounds} rounds of ${roundSecs}s per path…\n`);
        brokerRss.phase('pgbench -S');
        const tps8 = interleaved(paths, (p) => pgbench(p.env, ['-S', '-n', '-c', String(clients), '-j', '2', '-T', roundSecs]).tps);
        process.stderr.write(`pgbench -S, 1 client, ${rounds} rounds of ${roundSecs}s per path…\n`);
        // Latency and TPS of one client, each the median of its own rounds (a round's pair is not kept together).
        const tps1Rounds = new Map<string, number[]>(paths.map((p) => [p.name, []]));
        const lat1 = interleaved(paths, (p) => {
          const r = pgbench(p.env, ['-S', '-n', '-c', '1', '-T', roundSecs]);
          tps1Rounds.get(p.name)!.push(r.tps);
          return r.latencyMs;
        });
        report.push(
          `Queries: ${PGBENCH_QUERY}; 1 client is the same with \`-c 1\`. Each figure is the median of ${rounds} interleaved rounds of ${roundSecs} s per path.`,
          '',
          `| path | TPS, ${clients} clients | ÷ direct | ÷ raw relay | latency, 1 client | − raw relay | TPS, 1 client |`,
          '|---|---|---|---|---|---|---|',
          ...paths.map((p) => {
            const t = tps8.get(p.name)!;
            const l = lat1.get(p.name)!;
            const relayLat = lat1.get(relayName)!;
            return `| ${p.name} | ${t.toFixed(0)} | ${ratio(t, tps8.get(directName))} | ${ratio(t, tps8.get(relayName))} | ${l.toFixed(3)} ms | ${p.name === directName ? '' : `${l >= relayLat ? '+' : '−'}${Math.abs(l - relayLat).toFixed(3)} ms`} | ${median(tps1Rounds.get(p.name)!).toFixed(0)} |`;
          }),
          '',
        );
      }

      if (parts.has('big')) {
        const maskColumn = await connect('bench-mask-column');
        const maskDetect = await connect('bench-mask-detect');
        const bigPaths: PgPath[] = [
          ...paths,
          { name: 'hoopctl connect + broker, column rule (email)', gated: true, env: tunnelEnv(maskColumn.ready) },
          { name: 'hoopctl connect + broker, detectors (email, credit_card) on every value', gated: true, env: tunnelEnv(maskDetect.ready) },
        ];
        for (const masked of bigPaths.slice(-2)) {
          const sample = execFileSync('psql', ['-X', '-w', '-At', '-c', `${BIG_SQL} limit 3`], { env: { ...process.env, ...masked.env }, encoding: 'utf8' });
          if (sample.includes('@example.com')) throw new Error(`the masked path ${masked.name} returned raw values:\n${sample}`);
        }
        process.stderr.write(`1M-row SELECT through psql, ${rounds} rounds per path…\n`);
        brokerRss.phase('1M-row SELECT');
        // The broker's CPU seconds per run of a gated path: the masker's cost, hardly moved by the machine's load.
        const brokerCpu = new Map<string, number[]>(bigPaths.map((p) => [p.name, []]));
        const big = interleaved(bigPaths, (p) => {
          const cpuBefore = cpuSeconds(broker.pid!);
          const secs = timePsql(p.env, BIG_SQL);
          brokerCpu.get(p.name)!.push(cpuSeconds(broker.pid!) - cpuBefore);
          return secs;
        });
        const gateBig = big.get('hoopctl connect + broker');

        report.push(
          `The big result: \`psql -c "${BIG_SQL}"\` (3 columns, 1M rows, ~60 MB, fetched and discarded); the median of ${rounds} interleaved runs per path.`,
          '',
          '| path | 1M-row SELECT via psql | rows/s | ÷ direct | ÷ raw relay | ÷ gate unmasked | broker CPU |',
          '|---|---|---|---|---|---|---|',
          ...bigPaths.map((p) => {
            const s = big.get(p.name)!;
            const cpu = p.gated ? `${median(brokerCpu.get(p.name)!).toFixed(2)} s` : '';
            // Ratios of throughput (rows/s): the inverse of the times.
            return `| ${p.name} | ${s.toFixed(2)} s | ${(1e6 / s).toFixed(0)} | ${ratio(big.get(directName), s)} | ${ratio(big.get(relayName), s)} | ${p.gated ? ratio(gateBig, s) : ''} | ${cpu} |`;
          }),
          '',
          `Broker RSS, peak through the PostgreSQL rows (sampled every 200 ms): ${brokerRss.peakMb().toFixed(0)} MB; hoopctl connect ${rssMb(gate.child.pid!, 'VmHWM').toFixed(0)} MB.`,
          '',
        );
      }

      if (parts.has('sessions')) {
        const rateSecs = Math.max(3, Math.round(seconds / 2));
        process.stderr.write(`new sessions per second, ${clients} loops for ${rateSecs}s per path…\n`);
        brokerRss.phase('session rate');
        // CPU per session of each process (user + system, from /proc): on a shared 2-core machine this says where a
        // session's cost lies whatever else runs (2000 ms of CPU a second is the machine's ceiling); the postmaster's
        // children, reaped or alive (pooled ones stay), are the PostgreSQL backends. The raw relay and the front door show the floor of each part.
        const postmaster = Number(readFileSync(join(cluster.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
        const pooledGate = await connect('bench-pooled');
        const cpuNow = (connectPid = gate.child.pid!) => ({
          broker: cpuSeconds(broker.pid!), connect: treeCpuSeconds(connectPid), connectMain: mainThreadCpuSeconds(connectPid), relay: relay.processes.reduce((sum, c) => sum + cpuSeconds(c.pid!), 0),
          postgres: treeCpuSeconds(postmaster), load: process.cpuUsage(),
        });
        const directTarget: PgTarget = { host: cluster.host, port: cluster.port, user: cluster.superuser, database: 'postgres', password: cluster.password };
        const sessionPaths: Array<{ name: string; target: PgTarget; connectPid?: number }> = [
          { name: 'direct (SCRAM login)', target: directTarget },
          { name: 'raw two-hop Node relay (SCRAM login by the client)', target: { ...directTarget, host: relay.host, port: relay.port } },
          { name: 'PostgreSQL front door (broker, one hop: token verified, session recorded, SCRAM login by the broker)', target: { host: '127.0.0.1', port: frontDoorPort, user: 'bench', database: 'bench', password: accessToken } },
          { name: 'hoopctl connect + broker (token verified, session recorded, SCRAM login by the broker)', target: tunnelTarget(gate.ready) },
          { name: 'PostgreSQL front door, pool on (token verified, session recorded, a pooled backend reset with DISCARD ALL)', target: { host: '127.0.0.1', port: frontDoorPort, user: 'bench', database: 'bench-pooled', password: accessToken } },
          { name: 'hoopctl connect + broker, pool on (token verified, session recorded, a pooled backend reset with DISCARD ALL)', target: tunnelTarget(pooledGate.ready), connectPid: pooledGate.child.pid! },
        ];
        const sessionRows: string[] = [];
        // hoopctl connect's main thread alone, per tunnel path; the column counts its whole process and its children:
        // the netlink helper that answers each accepted client's owner check (or the worker that reads the kernel's
        // socket tables instead), GC and I/O threads.
        const connectSplit: string[] = [];
        const cpuRows: string[] = [];
        let directRate = 0;
        for (const p of sessionPaths) {
          process.stderr.write(`  ${p.name}\n`);
          const from = cpuNow(p.connectPid);
          const r = await sessionRate(p.target, clients, rateSecs);
          const to = cpuNow(p.connectPid);
          directRate ||= r.perSecond;
          const ms = (seconds: number) => ((1000 * seconds) / Math.max(1, r.sessions)).toFixed(2);
          const load = (to.load.user + to.load.system - from.load.user - from.load.system) / 1e6;
          const total = to.broker - from.broker + to.connect - from.connect + to.relay - from.relay + to.postgres - from.postgres + load;
          sessionRows.push(`| ${p.name} | ${r.perSecond.toFixed(0)} | ${ratio(r.perSecond, directRate)} |`);
          if (p.name.startsWith('hoopctl connect')) connectSplit.push(`${p.name.replace(/ \(.*/, '')}: ${ms(to.connectMain - from.connectMain)} of ${ms(to.connect - from.connect)} ms`);
          cpuRows.push(`| ${p.name.replace(/ \(.*/, '')} | ${ms(to.broker - from.broker)} | ${ms(to.connect - from.connect)} | ${ms(to.relay - from.relay)} | ${ms(to.postgres - from.postgres)} | ${ms(load)} | ${ms(total)} | ${(2000 / Number(ms(total))).toFixed(0)} |`);
        }
        // Sustained: the pooled tunnel held for a minute or more (every closed connection of the last minute stays in
        // the host's TCP table as TIME_WAIT), in 10-second windows.
        const sustainSecs = Math.max(30, Math.round(seconds * 2.5));
        process.stderr.write(`  sustained: the pooled tunnel for ${sustainSecs}s…\n`);
        const sustained = await sustainedSessionRate(tunnelTarget(pooledGate.ready), clients, sustainSecs, 10);
        process.stderr.write(`${idleSessions} idle sessions through the gate…\n`);
        brokerRss.phase(`${idleSessions} idle sessions`);
        const before = rssMb(broker.pid!);
        const idle = await openIdleSessions(tunnelTarget(gate.ready), idleSessions);
        const held = rssMb(broker.pid!);
        const connectHeld = rssMb(gate.child.pid!);
        await idle.close();
        report.push(
          `| sessions (pg driver: connect, \`select 1\`, end; ${clients} at a time) | per second | ÷ direct |`,
          '|---|---|---|',
          ...sessionRows,
          '',
          `Sustained, hoopctl connect + broker with the pool, ${sustainSecs} s: ${sustained.perSecond.toFixed(0)} sessions/s; per 10-second window ${sustained.windows.map((w) => w.toFixed(0)).join(', ')}; the host's TCP table held ${sustained.tcpSockets} sockets at the end (TIME_WAIT ones included).`,
          '',
          '| CPU ms per session (user + system) | broker | hoopctl connect | relay hops | PostgreSQL (backends + postmaster) | load generator (pg driver) | total | sessions/s the 2 cores allow |',
          '|---|---|---|---|---|---|---|---|',
          ...cpuRows,
          '',
          `hoopctl connect's main thread per session (the rest is its owner-check helper process, GC and I/O threads): ${connectSplit.join('; ')}.`,
          '',
          `Idle sessions: ${idle.opened} of ${idleSessions} opened through the gate${idle.failed ? ` (${idle.failed} failed: ${idle.firstError})` : ''}; broker RSS ${before.toFixed(0)} MB before, ${held.toFixed(0)} MB with them open (${idle.opened ? (((held - before) * 1024) / idle.opened).toFixed(0) : '–'} kB each); hoopctl connect ${connectHeld.toFixed(0)} MB.`,
          '',
        );
      }
    }

    if (parts.has('replicas')) {
      // The same broker config on the PostgreSQL store (a database of its own on the benchmark's cluster), once as
      // one broker and once as two replicas behind HAProxy (deploy/haproxy.cfg); the SQLite broker above for reference.
      execFileSync('psql', ['-X', '-q', '-c', 'CREATE DATABASE hoopstore'], { env: { ...process.env, ...cluster.psqlEnv() }, stdio: 'ignore' });
      const keyPath = join(dir, 'audit-key.pem');
      writeFileSync(keyPath, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
      const replicaPorts = [await freePort(), await freePort()];
      for (const [i, p] of replicaPorts.entries()) {
        const { postgres: _frontDoor, ...rest } = brokerConfig;
        writeFileSync(join(dir, `replica-${i}.yaml`), stringify({
          ...rest, server: { listen: `127.0.0.1:${p}` }, store: { type: 'postgres', url: { value: cluster.url('hoopstore') } }, audit: { signingKey: { file: keyPath } },
        }));
        const replica = spawn(process.execPath, [resolve(import.meta.dirname, '../../bin/hoopctl'), 'broker', 'start', '--config', join(dir, `replica-${i}.yaml`)], { stdio: ['ignore', 'ignore', 'pipe'] });
        children.push(replica);
        await waitForLine(replica, 'stderr', /broker listening on/);
      }
      const lb = await startHaproxy(dir, [`127.0.0.1:${replicaPorts[0]}`, `127.0.0.1:${replicaPorts[1]}`]).catch((e: Error) => {
        process.stderr.write(`${e.message}: the two-replica row is skipped\n`);
        return undefined;
      });
      if (lb) children.push(lb.process);
      brokerRss.phase('store and replicas (this broker: the SQLite row)');
      const onSqlite = await connect('bench');
      const onPostgres = await connect('bench', undefined, `http://127.0.0.1:${replicaPorts[0]}`);
      const onLb = lb ? await connect('bench', undefined, lb.url) : undefined;
      const storePaths: PgPath[] = [
        { name: 'hoopctl connect + broker, SQLite store', gated: true, env: libpqEnv(tunnelTarget(onSqlite.ready)) },
        { name: 'hoopctl connect + broker, PostgreSQL store', gated: true, env: libpqEnv(tunnelTarget(onPostgres.ready)) },
        ...(onLb ? [{ name: 'hoopctl connect → HAProxy → 2 brokers, PostgreSQL store', gated: true, env: libpqEnv(tunnelTarget(onLb.ready)) }] : []),
      ];
      const roundSecs = String(Math.max(2, Math.round(seconds / rounds)));
      process.stderr.write(`pgbench -S, ${clients} clients, ${rounds} rounds of ${roundSecs}s: SQLite store, PostgreSQL store, two replicas behind HAProxy…\n`);
      const latency = new Map<string, number[]>(storePaths.map((p) => [p.name, []]));
      const tps = interleaved(storePaths, (p) => {
        const r = pgbench(p.env, ['-S', '-n', '-c', String(clients), '-j', '2', '-T', roundSecs]);
        latency.get(p.name)!.push(r.latencyMs);
        return r.tps;
      });
      const sqliteTps = tps.get(storePaths[0]!.name);
      report.push(
        `Store and replicas: ${PGBENCH_QUERY}, ${clients} clients, every statement recorded before it is forwarded; the PostgreSQL store is a database on the same cluster (and cores) as the backend; HAProxy runs deploy/haproxy.cfg (leastconn, so the ${clients} sessions split over both brokers). Medians of ${rounds} interleaved rounds of ${roundSecs} s.`,
        '',
        `| path | TPS, ${clients} clients | ÷ SQLite store | mean latency |`,
        '|---|---|---|---|',
        ...storePaths.map((p) => `| ${p.name} | ${tps.get(p.name)!.toFixed(0)} | ${ratio(tps.get(p.name), sqliteTps)} | ${median(latency.get(p.name)!).toFixed(3)} ms |`),
        '',
      );
    }

    if (parts.has('verdict')) {
      process.stderr.write('verdict cost over the bypass-attempt suites…\n');
      brokerRss.phase('verdict (in the bench process)');
      const v = await measureVerdictCost();
      const us = (ms: number) => `${(ms * 1000).toFixed(0)} µs`;
      report.push(
        `Verdict cost (parse + classify + rules, in process, in the bench process) over the ${v.texts} texts of test/support/policy-attempts.ts and effect-attempts.ts:`,
        '',
        '| phase | judgements | p50 | p99 | max |',
        '|---|---|---|---|---|',
        `| cold: the first judgement of each text in this process | ${v.cold.samples} | ${us(v.cold.p50Ms)} | ${us(v.cold.p99Ms)} | ${us(v.cold.maxMs)} |`,
        `| warm-up: the next ${v.warmupRounds} rounds | ${v.warmup.samples} | ${us(v.warmup.p50Ms)} | ${us(v.warmup.p99Ms)} | ${us(v.warmup.maxMs)} |`,
        `| steady state: the ${v.steadyRounds} rounds after those | ${v.steady.samples} | ${us(v.steady.p50Ms)} | ${us(v.steady.p99Ms)} | ${us(v.steady.maxMs)} |`,
        `| verdict cache miss (StatementJudge: judged in full, then kept) | ${v.cache.miss.samples} | ${us(v.cache.miss.p50Ms)} | ${us(v.cache.miss.p99Ms)} | ${us(v.cache.miss.maxMs)} |`,
        `| verdict cache hit (the same texts again; ${(v.cache.hitShare * 100).toFixed(0)}% hit, EXECUTE is never cached) | ${v.cache.hit.samples} | ${us(v.cache.hit.p50Ms)} | ${us(v.cache.hit.p99Ms)} | ${us(v.cache.hit.maxMs)} |`,
        '',
        `Steady state: ${v.steadyGc.count} garbage collections (longest ${v.steadyGc.maxMs.toFixed(2)} ms) overlapped ${v.steadyGc.tailSamplesInGc} of its slowest 1% judgements; the slowest text by its median is ${us(v.slowest.medianMs)} (\`${v.slowest.sql.replace(/\s+/g, ' ').slice(0, 80)}\`).`,
        '',
      );
    }

    if (parts.has('store')) {
      process.stderr.write('the store\'s durable append, alone and in groups of 8…\n');
      const c = await measureStoreCommit();
      report.push(
        `Durable record (SqliteStore.appendEvent of a statement event, in process: acknowledged once written to the store's event journal, copied into SQLite — WAL, synchronous=NORMAL — every 20 ms, which the figures include): ${c.aloneUs.toFixed(0)} µs per event awaited one at a time (one write each); ${c.groupOf8Us.toFixed(0)} µs per event when 8 arrive together (one write); ${c.perStatementUs.toFixed(0)} µs per statement as the PostgreSQL proxy records it (the previous result, the statement and its verdict in one write).`,
        '',
      );
    }

    if (parts.has('http')) {
      process.stderr.write(`HTTP GET of a 1 KB JSON body, ${clients} keep-alive clients: direct, through hoopctl + broker, and masked…\n`);
      const httpSecs = Math.max(5, Math.round(seconds / 2));
      // Each HTTP tunnel wants its own bearer on every request (the listener strips it before the broker).
      brokerRss.phase('HTTP');
      const apiTunnels = [(await connect('api')).ready, (await connect('api-masked')).ready];
      const hDirect = await httpLoad(`http://127.0.0.1:${apiPort}/items`, clients, httpSecs);
      const hGated = await httpLoad(`http://127.0.0.1:${apiTunnels[0]!.port}/items`, clients, httpSecs, apiTunnels[0]!.bearer);
      const hMasked = await httpLoad(`http://127.0.0.1:${apiTunnels[1]!.port}/items`, clients, httpSecs, apiTunnels[1]!.bearer);
      const maskedBody = await (await fetch(`http://127.0.0.1:${apiTunnels[1]!.port}/items`, { headers: { authorization: `Bearer ${apiTunnels[1]!.bearer}` } })).text();
      if (maskedBody.includes('@example.com')) throw new Error(`the masked HTTP path returned raw values: ${maskedBody.slice(0, 200)}`);
      report.push(
        `| path | HTTP GET, 1 KB JSON, ${clients} clients | ÷ direct | mean latency |`,
        '|---|---|---|---|',
        `| direct | ${hDirect.rps.toFixed(0)} req/s | 1.00 | ${hDirect.latencyMs.toFixed(2)} ms |`,
        `| hoopctl connect + broker | ${hGated.rps.toFixed(0)} req/s | ${(hGated.rps / hDirect.rps).toFixed(2)} | ${hGated.latencyMs.toFixed(2)} ms |`,
        `| … with JSON-path + email masking | ${hMasked.rps.toFixed(0)} req/s | ${(hMasked.rps / hDirect.rps).toFixed(2)} | ${hMasked.latencyMs.toFixed(2)} ms |`,
        '',
      );
    }

    if (sshd) {
      process.stderr.write('scp of a 256 MB file: direct, then through hoopctl + broker…\n');
      brokerRss.phase('scp through SSH');
      const { ready } = await connect('host');
      const knownHosts = join(dir, 'known_hosts');
      writeFileSync(knownHosts, `[127.0.0.1]:${ready.port} ${ready.hostKey}\n[127.0.0.1]:${sshd.port} ${sshd.hostPublicKey}\n`);
      const payload = join(dir, 'payload.bin');
      execFileSync('head', ['-c', String(256 * 2 ** 20), '/dev/urandom'], { stdio: ['ignore', openSync(payload, 'w'), 'ignore'] });
      const sshOpts = ['-F', '/dev/null', '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-q'];
      const timeScp = (p: number, extra: string[]) => {
        const t0 = process.hrtime.bigint();
        execFileSync('scp', ['-P', String(p), ...sshOpts, ...extra, payload, `${sshd.user}@127.0.0.1:${join(dir, `copy-${p}.bin`)}`], { stdio: 'ignore' });
        return Number(process.hrtime.bigint() - t0) / 1e9;
      };
      const sDirect = timeScp(sshd.port, ['-i', sshd.clientKeyPath]);
      const sGated = timeScp(ready.port, ['-i', ready.identityFile!, '-o', 'IdentitiesOnly=yes']);
      report.push(
        '| path | scp 256 MB (upload) | MB/s | ÷ direct |',
        '|---|---|---|---|',
        `| direct | ${sDirect.toFixed(2)} s | ${(256 / sDirect).toFixed(0)} | 1.00 |`,
        `| hoopctl connect + broker (SSH terminated and re-encrypted) | ${sGated.toFixed(2)} s | ${(256 / sGated).toFixed(0)} | ${(sDirect / sGated).toFixed(2)} |`,
        '',
      );
    }

    report.push(`Broker RSS: peak through the whole run ${brokerRss.peakMb().toFixed(0)} MB sampled (VmHWM ${rssMb(broker.pid!, 'VmHWM').toFixed(0)} MB). Every statement is durable in the SQLite store (its event journal) before it is forwarded.`);
    // Which part the peak came from (each part's own peak, sampled every 200 ms), and what each part left behind.
    report.push(`Broker RSS right after "listening": ${brokerRss.startMb.toFixed(0)} MB. By part, peak (and at the part's end): ${brokerRss.phases().map((p) => `${p.name} ${p.peakMb.toFixed(0)} MB (${p.endMb.toFixed(0)})`).join('; ')}.`);
    brokerRss.stop();
    const cpu = cpus()[0]?.model ?? 'unknown cpu';
    const load1 = loadavg();
    process.stdout.write([
      `Run ${started.toISOString()} – ${new Date().toISOString()}`,
      `Machine: ${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${execFileSync('pgbench', ['--version'], { encoding: 'utf8' }).trim()}; load average ${load0[0]!.toFixed(1)} at the start, ${load1[0]!.toFixed(1)} at the end (other processes share the cores when it is above ~2)`,
      `Command: npm run bench (BENCH_SECONDS=${seconds}, BENCH_ROUNDS=${rounds}, BENCH_CLIENTS=${clients}, BENCH_IDLE_SESSIONS=${idleSessions}, BENCH_PARTS=${[...parts].join(',')}${profiling ? ', BENCH_PROFILE=1' : ''})`,
      '',
      ...report,
    ].join('\n') + '\n');
    await issuer.stop();
  } finally {
    const exits = children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : Promise.resolve()));
    for (const c of children) c.kill('SIGTERM');
    await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 10_000))]);
    if (profileDir) process.stdout.write(`\nCPU profiles (${profileDir}):\n\n${summariseProfiles(profileDir)}\n`);
    for (const c of cleanups) await c().catch(() => undefined);
    await cluster.stop();
    for (const r of removals) r();
    if (!process.env.BENCH_KEEP) rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${(e as Error).stack}\n`);
  process.exitCode = 1;
});
