/**
 * `npm run bench`: PostgreSQL, HTTP and SSH through hoopctl + broker against the direct path, in one run on this machine.
 * Everything is real: a throwaway cluster (pgbench scale 10), the development OIDC issuer, the broker and
 * `hoopctl connect` as their own processes, pgbench as the load. Prints a markdown table of TPS, latency and
 * the ratios; BENCHMARKS.md keeps the figures with the machine they came from.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { startPgCluster } from '../src/dev/pg-cluster.js';
import { startDevIssuer } from '../src/dev/oidc-issuer.js';
import { clientCredentialsLogin } from '../src/auth/oidc.js';
import { freePort } from '../src/lib/net.js';
import { Agent, request } from 'node:http';
import { startSshd } from '../src/dev/sshd.js';

const BIN = resolve(import.meta.dirname, '../../bin/hoopctl');
const seconds = Number(process.env.BENCH_SECONDS ?? 15);
const clients = Number(process.env.BENCH_CLIENTS ?? 8);

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

function peakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

function waitForLine(child: ChildProcess, stream: 'stdout' | 'stderr', pattern: RegExp): Promise<RegExpMatchArray> {
  return new Promise((resolvePromise, reject) => {
    let buf = '';
    child[stream]!.on('data', (d) => {
      buf += d;
      const m = buf.match(pattern);
      if (m) resolvePromise(m);
    });
    child.once('exit', (code) => reject(new Error(`exited ${code} before ${pattern}: ${buf}`)));
  });
}

/** A JSON API in its own process (so the load generator does not share its event loop): GET /items → ~1 KB. */
const API_SERVER = `
const items = Array.from({ length: 12 }, (_, i) => ({ id: i, name: 'item ' + i, owner: 'owner' + i + '@example.com', price: i * 3.5 }));
const body = JSON.stringify({ items });
require('node:http').createServer((req, res) => { res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }); res.end(body); })
  .listen(0, '127.0.0.1', function () { console.log(JSON.stringify({ port: this.address().port })); });
`;

/** Requests per second of `concurrency` keep-alive clients fetching `url` for `secs` seconds, and mean latency. */
async function httpLoad(url: string, concurrency: number, secs: number, bearer?: string): Promise<{ rps: number; latencyMs: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const until = Date.now() + secs * 1000;
  let done = 0;
  let totalMs = 0;
  const one = () =>
    new Promise<void>((resolvePromise, reject) => {
      const started = performance.now();
      request(url, { agent, headers: bearer ? { authorization: `Bearer ${bearer}` } : {} }, (res) => {
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

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-bench-'));
  const cluster = await startPgCluster({ auth: 'scram-sha-256', settings: { shared_buffers: '256MB' } });
  const children: ChildProcess[] = [];
  const cleanups: Array<() => Promise<void>> = [];
  try {
    process.stderr.write('initialising pgbench scale 10…\n');
    execFileSync('pgbench', ['-i', '-s', '10', '-q'], { env: { ...process.env, ...cluster.psqlEnv() }, stdio: 'ignore' });
    const issuer = await startDevIssuer({ audience: 'urn:hoopctl:bench', accessTokenTtlSeconds: 3600, serviceClients: [{ clientId: 'bench', clientSecret: 'bench-secret', groups: ['bench'] }] });
    const port = await freePort();
    const sshd = await startSshd();
    cleanups.push(() => sshd.stop());
    const api = spawn(process.execPath, ['-e', API_SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(api);
    const apiPort = JSON.parse((await waitForLine(api, 'stdout', /\{.*\}\n/))[0]!).port as number;
    writeFileSync(join(dir, 'broker.yaml'), stringify({
      server: { listen: `127.0.0.1:${port}` },
      store: { path: join(dir, 'broker.db') },
      logging: { level: 'warn' },
      auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:hoopctl:bench', maxTokenLifetime: '2h' }] },
      connections: [
        ...['bench', 'bench-masked'].map((name) => ({
          name, type: 'postgres',
          target: { host: cluster.host, port: cluster.port, database: 'postgres', sslmode: 'disable' },
          credentials: { user: cluster.superuser, password: { value: cluster.password } },
          access: { clientIds: ['bench'] },
          // The masked path: a column rule plus content detectors, so every row is decoded, scanned and rebuilt.
          ...(name === 'bench-masked' ? { rules: [{ name: 'pii', mask: { columns: ['email'], detectors: ['email', 'credit_card'], strategy: 'redact' } }] } : {}),
        })),
        {
          name: 'host', type: 'ssh', target: { host: sshd.host, port: sshd.port, user: sshd.user, hostKey: sshd.hostPublicKey },
          credentials: { privateKey: { file: sshd.clientKeyPath } }, access: { clientIds: ['bench'] },
        },
        ...['api', 'api-masked'].map((name) => ({
          name, type: 'http', target: { url: `http://127.0.0.1:${apiPort}` }, credentials: { bearer: { value: 'bench-api-token' } },
          access: { clientIds: ['bench'] },
          ...(name === 'api-masked' ? { mask: { jsonPaths: ['$.items[*].owner'], detectors: ['email'] } } : {}),
        })),
      ],
    }));
    const broker = spawn(process.execPath, [BIN, 'broker', 'start', '--config', join(dir, 'broker.yaml')], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(broker);
    await waitForLine(broker, 'stderr', /broker listening on/);
    const { accessToken } = await clientCredentialsLogin({ issuer: issuer.issuer, clientId: 'bench', clientSecret: 'bench-secret' });
    const env = { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: join(dir, 'cfg'), HOOPCTL_TOKEN: accessToken, HOOPCTL_BROKER: `http://127.0.0.1:${port}` };
    const tunnel = spawn(process.execPath, [BIN, 'connect', 'bench', '-o', 'json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(tunnel);
    const [line] = await waitForLine(tunnel, 'stdout', /\{.*\}\n/);
    // Each tunnel has its own password (in the URL connect prints); pgbench and psql present it.
    const passwordOf = (ready: { url: string }) => decodeURIComponent(new URL(ready.url).password);
    const tunnelPort = JSON.parse(line!).port as number;
    const tunnelPassword = passwordOf(JSON.parse(line!));
    const maskedTunnel = spawn(process.execPath, [BIN, 'connect', 'bench-masked', '-o', 'json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(maskedTunnel);
    const maskedReady = JSON.parse((await waitForLine(maskedTunnel, 'stdout', /\{.*\}\n/))[0]!) as { port: number; url: string };
    const maskedPort = maskedReady.port;

    const direct = { PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.superuser, PGPASSWORD: cluster.password, PGDATABASE: 'postgres' };
    const gated = { PGHOST: '127.0.0.1', PGPORT: String(tunnelPort), PGUSER: 'bench', PGDATABASE: 'postgres', PGPASSWORD: tunnelPassword };
    const load = ['-S', '-n', '-c', String(clients), '-j', '2', '-T', String(seconds)];
    const single = ['-S', '-n', '-c', '1', '-T', String(Math.max(5, Math.round(seconds / 2)))];
    process.stderr.write(`pgbench -S, ${clients} clients, ${seconds}s: direct…\n`);
    const d8 = pgbench(direct, load);
    process.stderr.write('… through hoopctl + broker…\n');
    const g8 = pgbench(gated, load);
    process.stderr.write('pgbench -S, 1 client: direct, then through hoopctl + broker…\n');
    const d1 = pgbench(direct, single);
    const g1 = pgbench(gated, single);
    process.stderr.write('1M-row SELECT through psql: direct, then through hoopctl + broker…\n');
    const bigSql = "select g as id, 'customer' || g || '@example.com' as email, md5(g::text) as note from generate_series(1, 1000000) g";
    const dBig = timePsql(direct, bigSql);
    const gBig = timePsql(gated, bigSql);
    process.stderr.write('… and through a connection with a masking rule…\n');
    const mBig = timePsql({ ...gated, PGPORT: String(maskedPort), PGPASSWORD: passwordOf(maskedReady) }, bigSql);
    const sample = execFileSync('psql', ['-X', '-w', '-At', '-c', `${bigSql} limit 3`], { env: { ...process.env, ...gated, PGPORT: String(maskedPort), PGPASSWORD: passwordOf(maskedReady) }, encoding: 'utf8' });
    if (sample.includes('@example.com')) throw new Error(`the masked path returned raw values:\n${sample}`);
    process.stderr.write(`HTTP GET of a 1 KB JSON body, ${clients} keep-alive clients: direct, through hoopctl + broker, and masked…\n`);
    const httpSecs = Math.max(5, Math.round(seconds / 2));
    const apiTunnels: Array<{ port: number; bearer: string }> = [];
    for (const name of ['api', 'api-masked']) {
      const t = spawn(process.execPath, [BIN, 'connect', name, '-o', 'json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(t);
      apiTunnels.push(JSON.parse((await waitForLine(t, 'stdout', /\{.*\}\n/))[0]!) as { port: number; bearer: string });
    }
    const hDirect = await httpLoad(`http://127.0.0.1:${apiPort}/items`, clients, httpSecs);
    const hGated = await httpLoad(`http://127.0.0.1:${apiTunnels[0]!.port}/items`, clients, httpSecs, apiTunnels[0]!.bearer);
    const hMasked = await httpLoad(`http://127.0.0.1:${apiTunnels[1]!.port}/items`, clients, httpSecs, apiTunnels[1]!.bearer);
    const maskedBody = await (await fetch(`http://127.0.0.1:${apiTunnels[1]!.port}/items`, { headers: { authorization: `Bearer ${apiTunnels[1]!.bearer}` } })).text();
    if (maskedBody.includes('@example.com')) throw new Error(`the masked HTTP path returned raw values: ${maskedBody.slice(0, 200)}`);
    process.stderr.write('scp of a 256 MB file: direct, then through hoopctl + broker…\n');
    const hostTunnel = spawn(process.execPath, [BIN, 'connect', 'host', '-o', 'json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(hostTunnel);
    const ready = JSON.parse((await waitForLine(hostTunnel, 'stdout', /\{.*\}\n/))[0]!) as { port: number; hostKey: string; identityFile: string };
    const knownHosts = join(dir, 'known_hosts');
    writeFileSync(knownHosts, `[127.0.0.1]:${ready.port} ${ready.hostKey}\n[127.0.0.1]:${sshd.port} ${sshd.hostPublicKey}\n`);
    const payload = join(dir, 'payload.bin');
    execFileSync('head', ['-c', String(256 * 2 ** 20), '/dev/urandom'], { stdio: ['ignore', openSync(payload, 'w'), 'ignore'] });
    const sshOpts = ['-F', '/dev/null', '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-q'];
    const timeScp = (p: number, extra: string[]) => {
      const started = process.hrtime.bigint();
      execFileSync('scp', ['-P', String(p), ...sshOpts, ...extra, payload, `${sshd.user}@127.0.0.1:${join(dir, `copy-${p}.bin`)}`], { stdio: 'ignore' });
      return Number(process.hrtime.bigint() - started) / 1e9;
    };
    const sDirect = timeScp(sshd.port, ['-i', sshd.clientKeyPath]);
    const sGated = timeScp(ready.port, ['-i', ready.identityFile, '-o', 'IdentitiesOnly=yes']);
    const brokerRss = peakRssMb(broker.pid!);
    const tunnelRss = peakRssMb(tunnel.pid!);

    const cpu = cpus()[0]?.model ?? 'unknown cpu';
    const report = [
      `Machine: ${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${execFileSync('pgbench', ['--version'], { encoding: 'utf8' }).trim()}`,
      `Command: npm run bench (BENCH_SECONDS=${seconds}, BENCH_CLIENTS=${clients}); pgbench scale 10, select-only (-S)`,
      '',
      '| path | TPS, ' + clients + ' clients | ÷ direct | latency, 1 client | TPS, 1 client | ÷ direct |',
      '|---|---|---|---|---|---|',
      `| direct | ${d8.tps.toFixed(0)} | 1.00 | ${d1.latencyMs.toFixed(3)} ms | ${d1.tps.toFixed(0)} | 1.00 |`,
      `| hoopctl connect + broker | ${g8.tps.toFixed(0)} | ${(g8.tps / d8.tps).toFixed(2)} | ${g1.latencyMs.toFixed(3)} ms | ${g1.tps.toFixed(0)} | ${(g1.tps / d1.tps).toFixed(2)} |`,
      '',
      '| path | 1M-row SELECT via psql | rows/s | ÷ direct (rows/s) |',
      '|---|---|---|---|',
      `| direct | ${dBig.toFixed(2)} s | ${(1e6 / dBig).toFixed(0)} | 1.00 |`,
      `| hoopctl connect + broker | ${gBig.toFixed(2)} s | ${(1e6 / gBig).toFixed(0)} | ${(dBig / gBig).toFixed(2)} |`,
      `| … with masking (email column + email, credit_card detectors) | ${mBig.toFixed(2)} s | ${(1e6 / mBig).toFixed(0)} | ${(dBig / mBig).toFixed(2)} |`,
      '',
      `| path | HTTP GET, 1 KB JSON, ${clients} clients | ÷ direct | mean latency |`,
      '|---|---|---|---|',
      `| direct | ${hDirect.rps.toFixed(0)} req/s | 1.00 | ${hDirect.latencyMs.toFixed(2)} ms |`,
      `| hoopctl connect + broker | ${hGated.rps.toFixed(0)} req/s | ${(hGated.rps / hDirect.rps).toFixed(2)} | ${hGated.latencyMs.toFixed(2)} ms |`,
      `| … with JSON-path + email masking | ${hMasked.rps.toFixed(0)} req/s | ${(hMasked.rps / hDirect.rps).toFixed(2)} | ${hMasked.latencyMs.toFixed(2)} ms |`,
      '',
      '| path | scp 256 MB (upload) | MB/s | ÷ direct |',
      '|---|---|---|---|',
      `| direct | ${sDirect.toFixed(2)} s | ${(256 / sDirect).toFixed(0)} | 1.00 |`,
      `| hoopctl connect + broker (SSH terminated and re-encrypted) | ${sGated.toFixed(2)} s | ${(256 / sGated).toFixed(0)} | ${(sDirect / sGated).toFixed(2)} |`,
      '',
      `Peak RSS: broker ${brokerRss.toFixed(0)} MB, hoopctl connect ${tunnelRss.toFixed(0)} MB (every statement recorded to SQLite before it is forwarded).`,
    ].join('\n');
    process.stdout.write(report + '\n');
    await issuer.stop();
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    for (const c of cleanups) await c().catch(() => undefined);
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${(e as Error).stack}\n`);
  process.exitCode = 1;
});
