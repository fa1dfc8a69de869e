import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { homedir } from 'node:os';
import { processAlive } from '../lib/process-alive.js';

/**
 * The tunnels `hoopctl connect` has open on this machine, for `hoopctl status`: one small file per running connect
 * (named by its process id) in the state dir, removed when it closes. A file left by a process that died is
 * ignored (and cleared) when the process is gone. Nothing secret is written: the connection, where it listens, since
 * when, and the broker.
 */
export interface OpenTunnel {
  connection: string;
  type: string;
  broker: string;
  host: string;
  port: number;
  pid: number;
  /** ms since epoch */
  since: number;
}

/** Runtime state, not configuration: `$XDG_STATE_HOME/hoopctl/tunnels` (~/.local/state when unset). */
function tunnelsDir(): string {
  const xdg = process.env.XDG_STATE_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.local', 'state'), 'hoopctl', 'tunnels');
}

/** Notes `tunnel` as open; returns what removes the note (call it when the tunnel closes). */
export function noteOpenTunnel(tunnel: Omit<OpenTunnel, 'pid' | 'since'>): () => void {
  const dir = tunnelsDir();
  const file = join(dir, `${process.pid}.json`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(file, JSON.stringify({ ...tunnel, pid: process.pid, since: Date.now() }), { mode: 0o600 });
  } catch {
    // Only `status` reads it: a read-only config dir must not stop a tunnel.
    return () => undefined;
  }
  const remove = () => rmSync(file, { force: true });
  process.once('exit', remove);
  return () => {
    process.off('exit', remove);
    remove();
  };
}

/** The tunnels open now, oldest first. */
export function listOpenTunnels(): OpenTunnel[] {
  const dir = tunnelsDir();
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => /^\d+\.json$/.test(n));
  } catch {
    return [];
  }
  const open: OpenTunnel[] = [];
  for (const name of names) {
    const file = join(dir, name);
    let tunnel: OpenTunnel;
    try {
      tunnel = JSON.parse(readFileSync(file, 'utf8')) as OpenTunnel;
    } catch {
      continue;
    }
    if (processAlive(tunnel.pid)) open.push(tunnel);
    else rmSync(file, { force: true });
  }
  return open.sort((a, b) => a.since - b.since);
}
