/**
 * `npm run bench` part `replicas`: broker replicas on the PostgreSQL store behind HAProxy, run from the very file the
 * README shows (deploy/haproxy.cfg; addresses through its environment variables).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { freePort } from '../../src/lib/net.js';

/** Kept beside the sources: dist/scripts/bench → deploy/. */
const HAPROXY_CFG = resolve(import.meta.dirname, '../../../deploy/haproxy.cfg');

export interface RunningHaproxy {
  url: string;
  process: ChildProcess;
}

/** HAProxy in front of two brokers (`host:port` each); resolves once it answers /readyz through either. */
export async function startHaproxy(dir: string, brokers: [string, string]): Promise<RunningHaproxy> {
  const port = await freePort();
  const child = spawn('haproxy', ['-db', '-f', HAPROXY_CFG], {
    env: {
      PATH: process.env.PATH, HOOPCTL_LB_BIND: `127.0.0.1:${port}`, HOOPCTL_LB_STATS: join(dir, 'haproxy.sock'),
      HOOPCTL_BROKER_A: brokers[0], HOOPCTL_BROKER_B: brokers[1],
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  let failed: Error | undefined;
  child.once('error', (e) => (failed = e)); // not installed: spawn ENOENT
  for (;;) {
    if (failed) throw new Error(`haproxy did not start: ${failed.message} (apt-get install -y haproxy)`);
    if (child.exitCode !== null) throw new Error(`haproxy exited ${child.exitCode}`);
    const ok = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
    if (ok) return { url, process: child };
    await new Promise((r) => setTimeout(r, 100));
  }
}
