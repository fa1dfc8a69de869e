/**
 * The one place the crash and load scripts (and their e2e tests) turn a running `hoopctl connect` into what a
 * PostgreSQL client needs: the tunnel's own password, which `connect -o json` prints in its URL (a tunnel serves only
 * its owner; the backend credential stays with the broker).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ClientConfig } from 'pg';

/** bin/hoopctl of this checkout, whether this file runs from its source (tests) or from dist/ (npm run crash, load). */
export const HOOPCTL_BIN = (() => {
  for (let dir = import.meta.dirname; dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, 'bin', 'hoopctl')) && existsSync(join(dir, 'package.json'))) return join(dir, 'bin', 'hoopctl');
  }
  throw new Error(`bin/hoopctl not found above ${import.meta.dirname}`);
})();

/** What `hoopctl connect <conn> -o json` prints once it listens. */
export interface ConnectReady {
  connection: string;
  type: string;
  host: string;
  port: number;
  url?: string;
  [key: string]: unknown;
}

export interface RunningTunnel {
  ready: ConnectReady;
  process: ChildProcess;
  /** What a `pg` client connects with to ride this tunnel (the tunnel's password; the broker injects the backend's). */
  pgClientConfig(database: string): ClientConfig;
  stop(): Promise<void>;
}

/** Starts `hoopctl connect <connection> -o json` with `env` (a token source, HOOPCTL_BROKER) and waits until it listens. */
export async function startConnectTunnel(connection: string, env: NodeJS.ProcessEnv): Promise<RunningTunnel> {
  const child = spawn(process.execPath, [HOOPCTL_BIN, 'connect', connection, '-o', 'json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const ready = await new Promise<ConnectReady>((resolvePromise, reject) => {
    let out = '';
    const onData = (d: Buffer) => {
      out += d;
      const line = /^\{.*\}$/m.exec(out);
      if (!line) return;
      child.stdout!.off('data', onData);
      child.off('exit', onExit);
      resolvePromise(JSON.parse(line[0]) as ConnectReady);
    };
    const onExit = (code: number | null) => reject(new Error(`hoopctl connect ${connection} exited ${code}: ${stderr}`));
    child.stdout!.on('data', onData);
    child.once('exit', onExit);
  });
  return {
    ready,
    process: child,
    pgClientConfig: (database) => pgClientConfig(ready, database),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

export function pgClientConfig(ready: ConnectReady, database: string): ClientConfig {
  if (!ready.url) throw new Error(`hoopctl connect ${ready.connection} printed no URL`);
  const password = decodeURIComponent(new URL(ready.url).password);
  return { host: ready.host, port: ready.port, user: 'hoopctl', database, password };
}
