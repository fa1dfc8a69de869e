/**
 * What the fuzzer runs against, all real: a PostgreSQL cluster (SCRAM, a `fuzz` role that owns nothing), the
 * development OIDC issuer, an HTTP API, OpenSSH's sshd, and the broker as its own process (`hoopctl broker start`) —
 * so a crash is an exit of that process and its RSS is its own.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { once } from 'node:events';
import pg from 'pg';
import { stringify } from 'yaml';
import { clientCredentialsLogin } from '../../src/auth/oidc.js';
import { startPgCluster, type PgCluster } from '../../src/dev/pg-cluster.js';
import { startDevIssuer, type DevIssuer } from '../../src/dev/oidc-issuer.js';
import { startSshd, type TestSshd } from '../../src/dev/sshd.js';
import { freePort } from '../../src/lib/net.js';

/** bin/hoopctl, from scripts/fuzz/ (run by tsx in tests) or dist/scripts/fuzz/ (run by node). */
const BIN = [resolve(import.meta.dirname, '../../bin/hoopctl'), resolve(import.meta.dirname, '../../../bin/hoopctl')].find((p) => {
  try {
    readFileSync(p);
    return true;
  } catch {
    return false;
  }
})!;

export const FUZZ_DATABASE = 'fuzz';

export interface FuzzDeployment {
  brokerUrl: string;
  broker: ChildProcess;
  brokerLogPath: string;
  /**
   * The broker's memory now, measured by the broker itself after a full GC (its opt-in SIGUSR2 probe): RSS, and the
   * V8 heap still reachable. Also writes a heap snapshot when the deployment was started with `heapSnapshots`.
   */
  memory(): Promise<MemorySample>;
  /** PostgreSQL's own log (pg_ctl -l): a backend that crashed, and the restart that cut every session, show there. */
  pgLogPath: string;
  /** A fresh enough access token (client credentials of the `fuzz` client). */
  token(): Promise<string>;
  /** Environment for a hoopctl process: this broker, a token of its own. */
  cliEnv(): Promise<NodeJS.ProcessEnv>;
  bin: string;
  cluster: PgCluster;
  ssh?: string;
  http: string;
  stop(): Promise<void>;
}

export interface MemorySample {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  snapshot?: string;
}

export async function startFuzzDeployment(o: { ssh: boolean; logLevel?: string; heapSnapshots?: string; pgSettings?: Record<string, string> }): Promise<FuzzDeployment> {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-fuzz-'));
  const cleanups: Array<() => Promise<unknown>> = [async () => rmSync(dir, { recursive: true, force: true })];
  const stop = async () => {
    // Each part gets a bounded moment to stop: one that lingers must not keep the rest running.
    for (const c of cleanups.reverse()) await Promise.race([c().catch(() => undefined), new Promise((r) => setTimeout(r, 10_000).unref())]);
  };
  try {
    const cluster = await startPgCluster({ auth: 'scram-sha-256', settings: { max_connections: '300', ...o.pgSettings } });
    cleanups.push(() => cluster.stop());
    const fuzzPassword = `fuzz-${Math.random().toString(36).slice(2)}`;
    const admin = new pg.Client({ connectionString: cluster.url() });
    await admin.connect();
    // A role that owns nothing and cannot run away: statements and lock waits are cut short by the server.
    await admin.query(`CREATE ROLE fuzz LOGIN PASSWORD '${fuzzPassword}'`);
    await admin.query(`ALTER ROLE fuzz SET statement_timeout = '5s'`);
    await admin.query(`ALTER ROLE fuzz SET lock_timeout = '2s'`);
    await admin.query(`CREATE DATABASE ${FUZZ_DATABASE}`);
    await admin.end();
    const db = new pg.Client({ connectionString: cluster.url(FUZZ_DATABASE) });
    await db.connect();
    await db.query(`CREATE TABLE fuzz_t (id int primary key, email text, note text)`);
    await db.query(`INSERT INTO fuzz_t SELECT g, 'user' || g || '@example.com', 'note ' || g FROM generate_series(1, 20) g`);
    await db.query(`CREATE UNLOGGED TABLE fuzz_sink (line text)`);
    await db.query(`GRANT SELECT, UPDATE, DELETE, INSERT ON fuzz_t TO fuzz; GRANT INSERT ON fuzz_sink TO fuzz`);
    await db.end();

    const issuer: DevIssuer = await startDevIssuer({
      audience: 'urn:hoopctl:fuzz', accessTokenTtlSeconds: 3600, serviceClients: [{ clientId: 'fuzz', clientSecret: 'fuzz-secret', groups: [] }],
    });
    cleanups.push(() => issuer.stop());
    const api = await startEchoApi();
    // The broker keeps its upstream connections alive: close them, or close() waits for them forever.
    cleanups.push(() => new Promise((r) => {
      api.server.close(r);
      api.server.closeAllConnections();
    }));
    let sshd: TestSshd | undefined;
    if (o.ssh) {
      sshd = await startSshd();
      cleanups.push(() => sshd!.stop());
    }

    const port = await freePort();
    const brokerUrl = `http://127.0.0.1:${port}`;
    const passwordFile = join(dir, 'fuzz-password');
    writeFileSync(passwordFile, fuzzPassword, { mode: 0o600 });
    const pgTarget = { type: 'postgres', target: { host: cluster.host, port: cluster.port, database: FUZZ_DATABASE, sslmode: 'disable' }, credentials: { user: 'fuzz', password: { file: passwordFile } }, access: { clientIds: ['fuzz'] } };
    const configPath = join(dir, 'broker.yaml');
    writeFileSync(configPath, stringify({
      server: { listen: `127.0.0.1:${port}` },
      store: { path: join(dir, 'broker.db') },
      logging: { level: o.logLevel ?? 'warn' },
      auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:hoopctl:fuzz', maxTokenLifetime: '2h' }] },
      connections: [
        // Rules and masks: every statement is parsed and judged, every row decoded and scanned.
        { name: 'fuzz-pg', ...pgTarget, rules: [
          { name: 'no-ddl', match: { category: ['ddl'] }, action: 'deny' },
          { name: 'no-privilege', match: { effects: ['privilege'] }, action: 'deny' },
          { name: 'pii', mask: { columns: ['email'], detectors: ['email', 'credit_card'], strategy: 'redact' } },
        ] },
        // The fast path: frames pass as raw slices.
        { name: 'fuzz-pg-plain', ...pgTarget },
        { name: 'fuzz-http', type: 'http', target: { url: api.url }, credentials: { bearer: { value: 'fuzz-api-token' } }, access: { clientIds: ['fuzz'] },
          mask: { jsonPaths: ['$.email'], detectors: ['email'] }, rules: [{ name: 'no-admin', match: { path: ['/admin/*'] }, action: 'deny' }] },
        ...(sshd ? [{ name: 'fuzz-ssh', type: 'ssh', target: { host: sshd.host, port: sshd.port, user: sshd.user, hostKey: sshd.hostPublicKey }, credentials: { privateKey: { file: sshd.clientKeyPath } }, access: { clientIds: ['fuzz'] } }] : []),
      ],
    }));
    const brokerLogPath = join(dir, 'broker.log');
    const memoryReport = join(dir, 'memory.jsonl');
    const broker = spawn(process.execPath, ['--expose-gc', BIN, 'broker', 'start', '--config', configPath], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, HOOPCTL_MEMORY_REPORT: memoryReport, ...(o.heapSnapshots ? { HOOPCTL_HEAP_SNAPSHOTS: o.heapSnapshots } : {}) },
    });
    const log = createWriteStream(brokerLogPath);
    broker.stderr!.pipe(log);
    cleanups.push(async () => {
      if (broker.exitCode === null && broker.signalCode === null) {
        broker.kill('SIGTERM');
        await once(broker, 'exit');
      }
    });
    await new Promise<void>((resolvePromise, reject) => {
      let seen = '';
      const onData = (d: Buffer) => {
        seen += d;
        if (seen.includes('broker listening on')) {
          broker.stderr!.off('data', onData);
          resolvePromise();
        }
      };
      broker.stderr!.on('data', onData);
      broker.once('exit', (code) => reject(new Error(`broker exited ${code}: ${seen}`)));
    });

    let cached: { token: string; until: number } | undefined;
    const token = async () => {
      if (!cached || cached.until < Date.now()) {
        const t = await clientCredentialsLogin({ issuer: issuer.issuer, clientId: 'fuzz', clientSecret: 'fuzz-secret' });
        cached = { token: t.accessToken, until: Date.now() + 20 * 60_000 };
      }
      return cached.token;
    };
    // One probe at a time: each signal appends one line, read back by its number.
    let probes = Promise.resolve<unknown>(undefined);
    let lines = 0;
    const memory = () => {
      const next = probes.then(async () => {
        broker.kill('SIGUSR2');
        const want = ++lines;
        for (;;) {
          const all = existsSync(memoryReport) ? readFileSync(memoryReport, 'utf8').split('\n').filter(Boolean) : [];
          if (all.length >= want) return JSON.parse(all[want - 1]!) as MemorySample;
          if (broker.exitCode !== null || broker.signalCode !== null) throw new Error('the broker is gone');
          await new Promise((r) => setTimeout(r, 50));
        }
      });
      probes = next.catch(() => undefined);
      return next;
    };
    return {
      memory, brokerUrl, broker, brokerLogPath, pgLogPath: join(dirname(cluster.dataDir), 'server.log'), token, bin: BIN, cluster, http: 'fuzz-http', ...(sshd ? { ssh: 'fuzz-ssh' } : {}),
      cliEnv: async () => ({ PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: join(dir, 'cli'), HOOPCTL_TOKEN: await token(), HOOPCTL_BROKER: brokerUrl, NO_COLOR: '1' }),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** The HTTP target: answers every request with what it received, as JSON. */
async function startEchoApi(): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    let length = 0;
    req.on('data', (d: Buffer) => (length += d.length));
    req.on('end', () => {
      const body = JSON.stringify({ method: req.method, url: req.url, length, email: 'ada@example.com' });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    req.on('error', () => res.destroy());
  });
  server.on('clientError', (_e, socket) => socket.destroy());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/** The broker's resident set now, in MiB (Linux /proc). */
export function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}
