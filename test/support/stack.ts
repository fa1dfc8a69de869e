import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, createWriteStream, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { once } from 'node:events';
import pg from 'pg';
import { stringify } from 'yaml';
import { startPgCluster, type PgCluster } from '../../src/dev/pg-cluster.js';
import { startDevIssuer, type DevIssuer } from '../../src/dev/oidc-issuer.js';
import { freePort } from '../../src/lib/net.js';

/**
 * A whole deployment for end-to-end tests, all real: a PostgreSQL cluster with SCRAM auth and an
 * application role, the development OIDC issuer (oidc-provider), and the broker run as a process
 * (`hoopctl broker start --config …`). The CLI runs as a process too, with its own config dir.
 */
export const BIN = resolve(import.meta.dirname, '../../bin/hoopctl');
export const AUDIENCE = 'urn:hoopctl:test';
export const APP_PASSWORD = `app-secret-${Math.random().toString(36).slice(2, 10)}-never-leak`;

export interface Stack {
  dir: string;
  cluster: PgCluster;
  issuer: DevIssuer;
  brokerUrl: string;
  brokerLogPath: string;
  configPath: string;
  broker: ChildProcess;
  /** Environment for a CLI process: its own XDG config dir, file token store, this broker. */
  cliEnv(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
  /** Stops the broker (SIGTERM: a clean stop; SIGKILL: a crash), unless it already exited, and starts it again on the same config. */
  restartBroker(signal?: NodeJS.Signals): Promise<void>;
  stop(): Promise<void>;
}

export interface StackOptions {
  /** Replaces top-level keys of the broker config. */
  extraConfig?: Record<string, unknown>;
  /** Added to the `app-pg` connection: its `defaultAction` and `rules`. */
  appPgPolicy?: { defaultAction?: 'allow' | 'deny'; rules?: unknown[] };
  /** More fields of the `app-pg` connection (e.g. `reviews`). */
  appPg?: Record<string, unknown>;
  /**
   * More connections to the same database and credential: each entry gives the name and any other fields
   * (e.g. `access` with an `approval`).
   */
  extraConnections?: Array<{ name: string } & Record<string, unknown>>;
  /** Runs once the cluster and the `app` database exist, before the broker starts (roles its start must find). */
  beforeBroker?: (cluster: PgCluster) => Promise<void>;
  /** `server.drainGrace`: how long a SIGTERM'd broker lets sessions run (short by default, so stops stay quick). */
  drainGrace?: string;
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-e2e-'));
  // The cluster and the OIDC issuer need nothing of each other: started side by side.
  const [cluster, issuer] = await Promise.all([
    (async () => {
      const cluster = await startPgCluster({ auth: 'scram-sha-256' });
      const admin = new pg.Client({ connectionString: cluster.url() });
      await admin.connect();
      await admin.query(`CREATE ROLE app_rw LOGIN PASSWORD '${APP_PASSWORD}'`);
      await admin.query('CREATE DATABASE app OWNER app_rw');
      await admin.end();
      await options.beforeBroker?.(cluster);
      return cluster;
    })(),
    startDevIssuer({
      audience: AUDIENCE,
      accessTokenTtlSeconds: 600,
      users: {
        alice: { groups: ['dba', 'auditors'], email: 'alice@example.com' },
        mallory: { groups: ['contractors'] },
        bob: { groups: ['dba', 'leads'] },
        carol: { groups: ['dba', 'leads'] },
      },
      defaultGroups: ['dba'],
      serviceClients: [
        { clientId: 'ci-report', clientSecret: 'ci-report-secret', groups: [] },
        { clientId: 'ci-other', clientSecret: 'ci-other-secret', groups: ['builders'] },
      ],
    }),
  ]);
  const port = await freePort();
  const brokerUrl = `http://127.0.0.1:${port}`;
  const configPath = join(dir, 'broker.yaml');
  const passwordFile = join(dir, 'app-password');
  writeFileSync(passwordFile, APP_PASSWORD + '\n', { mode: 0o600 });
  writeFileSync(
    configPath,
    stringify({
      server: { listen: `127.0.0.1:${port}`, drainGrace: options.drainGrace ?? '1s' },
      store: { path: join(dir, 'broker.db') },
      auth: { issuers: [{ issuer: issuer.issuer, audience: AUDIENCE, clientId: issuer.cliClientId, maxTokenLifetime: '1h' }] },
      audit: { groups: ['auditors'] },
      admin: { groups: ['leads'] },
      logging: { level: 'debug' },
      connections: [
        {
          name: 'app-pg',
          type: 'postgres',
          target: { host: cluster.host, port: cluster.port, database: 'app', sslmode: 'disable' },
          credentials: { user: 'app_rw', password: { file: passwordFile } },
          access: { groups: ['dba'], clientIds: ['ci-report'] },
          ...options.appPgPolicy,
          ...options.appPg,
        },
        ...(options.extraConnections ?? []).map((c) => ({
          type: 'postgres',
          target: { host: cluster.host, port: cluster.port, database: 'app', sslmode: 'disable' },
          credentials: { user: 'app_rw', password: { file: passwordFile } },
          access: { groups: ['dba'] },
          ...c,
        })),
      ],
      ...options.extraConfig,
    }),
  );
  const brokerLogPath = join(dir, 'broker.log');
  let broker = await spawnBroker(configPath, brokerLogPath);

  return {
    dir, cluster, issuer, brokerUrl, brokerLogPath, configPath,
    get broker() {
      return broker;
    },
    cliEnv: (extra = {}) => ({
      PATH: process.env.PATH,
      HOME: dir,
      XDG_CONFIG_HOME: join(dir, 'client-config'),
      XDG_STATE_HOME: join(dir, 'client-state'),
      HOOPCTL_TOKEN_STORE: 'file',
      HOOPCTL_BROKER: brokerUrl,
      NO_COLOR: '1',
      ...extra,
    }),
    async restartBroker(signal: NodeJS.Signals = 'SIGTERM') {
      // A broker already gone (killed by the test itself) is just started again.
      if (broker.exitCode === null && broker.signalCode === null) {
        const exited = once(broker, 'exit');
        broker.kill(signal);
        await exited;
      }
      broker = await spawnBroker(configPath, brokerLogPath);
    },
    async stop() {
      broker.kill('SIGTERM');
      await Promise.race([once(broker, 'exit'), new Promise((r) => setTimeout(r, 3000))]);
      await Promise.all([issuer.stop(), cluster.stop()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function spawnBroker(configPath: string, logPath: string): Promise<ChildProcess> {
  const log = createWriteStream(logPath, { flags: 'a' });
  const child = spawn(process.execPath, [BIN, 'broker', 'start', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(log);
  let stderr = '';
  await new Promise<void>((resolvePromise, reject) => {
    const onData = (d: Buffer) => {
      stderr += d.toString();
      log.write(d);
      if (stderr.includes('broker listening on')) {
        child.stderr!.off('data', onData);
        child.stderr!.pipe(log);
        resolvePromise();
      }
    };
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`broker exited ${code}: ${stderr}`)));
  });
  return child;
}

/**
 * `run` over `items`, at most `limit` at a time, results in order: a replay per session started all at once is dozens
 * of Node processes on 2 shared cores, each slower than the hang guard allows; a few at a time finish sooner.
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, run: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await run(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs hoopctl to completion. */
export function runCli(args: string[], env: NodeJS.ProcessEnv, input?: string, timeoutMs = 30_000): Promise<CliResult> {
  return runProcess(process.execPath, [BIN, ...args], env, input, timeoutMs);
}

export function runProcess(cmd: string, args: string[], env: NodeJS.ProcessEnv, input?: string, timeoutMs = 30_000): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} timed out; stdout: ${stdout}; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? -1, stdout, stderr });
    });
    // A program that exits without reading its input (most do) closes the pipe: EPIPE here is not a failure.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });
}

/** A long-running CLI process (connect, login) whose output the test reads as it comes. */
export class CliProcess {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';

  /** Runs `hoopctl args…`, or `program args…` when a program is given (kubectl, ssh). */
  constructor(args: string[], env: NodeJS.ProcessEnv, program?: string) {
    this.child = program
      ? spawn(program, args, { env, stdio: ['pipe', 'pipe', 'pipe'] })
      : spawn(process.execPath, [BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d) => (this.stdout += d));
    this.child.stderr!.on('data', (d) => (this.stderr += d));
  }

  /** Resolves with the first match of `pattern` in stdout. */
  waitFor(pattern: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    return new Promise((resolvePromise, reject) => {
      const check = () => {
        const m = this.stdout.match(pattern);
        if (m) {
          cleanup();
          resolvePromise(m);
        }
      };
      const onExit = (code: number) => {
        cleanup();
        reject(new Error(`process exited ${code} before ${pattern}; stdout: ${this.stdout}; stderr: ${this.stderr}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${pattern}; stdout: ${this.stdout}; stderr: ${this.stderr}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.child.stdout!.off('data', check);
        this.child.off('exit', onExit);
      };
      this.child.stdout!.on('data', check);
      this.child.once('exit', onExit);
      check();
    });
  }

  async exit(timeoutMs = 20_000): Promise<number> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    const [code] = (await Promise.race([
      once(this.child, 'exit'),
      new Promise((_, reject) => setTimeout(() => reject(new Error(`process did not exit; stderr: ${this.stderr}`)), timeoutMs)),
    ])) as [number];
    return code;
  }

  async stop(): Promise<number> {
    if (this.child.exitCode === null) this.child.kill('SIGINT');
    return this.exit();
  }
}

export function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** Logs `user` in through the device flow with the CLI as a process, playing the user in the provider's pages. */
export async function loginAs(stack: Stack, user: string, outputs?: string[]): Promise<NodeJS.ProcessEnv> {
  const { completeDeviceLogin } = await import('./device-user.js');
  const env = stack.cliEnv({ XDG_CONFIG_HOME: join(stack.dir, `config-${user}`) });
  const login = new CliProcess(['login', '--broker', stack.brokerUrl, '--poll-interval', '0.2'], env);
  const [, uri] = await login.waitFor(/or open (\S+)/);
  await completeDeviceLogin(uri!, user);
  const code = await login.exit();
  outputs?.push(login.stdout, login.stderr);
  if (code !== 0) throw new Error(`login as ${user} failed: ${login.stderr}`);
  return env;
}
