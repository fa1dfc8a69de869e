/**
 * The reference rows of `npm run bench`: what the gate is measured against in the same run. A raw two-hop
 * relay (two `net` byte pipes, each in its own process, like `hoopctl connect` + broker: the floor of any design
 * with a local client process and a broker process) and pgbouncer in session mode (a mature one-hop proxy).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../src/lib/net.js';
import { waitForLine } from './processes.js';

/** One hop of the relay: accept on loopback, pipe each connection to `target`, both sockets without Nagle. */
const RELAY_HOP = `
const net = require('node:net');
const [host, port] = [process.argv[1], Number(process.argv[2])];
net.createServer((a) => {
  a.setNoDelay(true);
  const b = net.connect(port, host, () => b.setNoDelay(true));
  a.pipe(b).pipe(a);
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
}).listen(0, '127.0.0.1', function () { console.log(JSON.stringify({ port: this.address().port })); });
`;

export interface Peer {
  host: string;
  port: number;
  /** The processes of this path, to profile or to read their memory. */
  processes: ChildProcess[];
  /** Removes what the path left on disk (after its processes have exited). */
  remove?: () => void;
}

/** Two relay hops in their own processes: client → hop 1 → hop 2 → `host:port`. */
export async function startRawRelay(host: string, port: number, nodeArgs: (name: string) => string[]): Promise<Peer> {
  const hop = async (name: string, toHost: string, toPort: number) => {
    const child = spawn(process.execPath, [...nodeArgs(name), '-e', RELAY_HOP, toHost, String(toPort)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const [line] = await waitForLine(child, 'stdout', /\{.*\}\n/);
    return { child, port: JSON.parse(line!).port as number };
  };
  const second = await hop('relay-hop2', host, port);
  const first = await hop('relay-hop1', '127.0.0.1', second.port);
  return { host: '127.0.0.1', port: first.port, processes: [first.child, second.child] };
}

/**
 * pgbouncer (Debian package) in session mode in front of the cluster, or undefined when it is not installed.
 * Clients are trusted on loopback (pgbench keeps its connections, so client authentication is not in the
 * measurement); pgbouncer logs in to the server with the superuser's password from its auth file.
 */
export async function startPgbouncer(target: { host: string; port: number; user: string; password: string }): Promise<Peer | undefined> {
  let binary: string;
  try {
    binary = execFileSync('sh', ['-c', 'command -v pgbouncer || ls /usr/sbin/pgbouncer'], { encoding: 'utf8' }).trim().split('\n')[0]!;
  } catch {
    return undefined;
  }
  const port = await freePort();
  // pgbouncer refuses to run as root: its files belong to the postgres user, as the cluster's do, in a directory
  // of its own that user can reach.
  const dir = mkdtempSync(join(tmpdir(), 'hoop-bench-pgbouncer-'));
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, 'userlist.txt'), `"${target.user}" "${target.password}"\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'pgbouncer.ini'), [
    '[databases]',
    `postgres = host=${target.host} port=${target.port} dbname=postgres`,
    '[pgbouncer]',
    'listen_addr = 127.0.0.1', `listen_port = ${port}`, `unix_socket_dir =`,
    'auth_type = trust', `auth_file = ${join(dir, 'userlist.txt')}`,
    'pool_mode = session', 'max_client_conn = 200', 'default_pool_size = 40',
    'ignore_startup_parameters = extra_float_digits,options',
  ].join('\n') + '\n');
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
  for (const f of ['userlist.txt', 'pgbouncer.ini']) chownSync(join(dir, f), uid, gid);
  const child = process.getuid?.() === 0
    ? spawn('runuser', ['-u', 'postgres', '--', binary, join(dir, 'pgbouncer.ini')], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(binary, [join(dir, 'pgbouncer.ini')], { stdio: ['ignore', 'ignore', 'pipe'] });
  const remove = () => rmSync(dir, { recursive: true, force: true });
  await waitForLine(child, 'stderr', /process up/).catch((e: unknown) => {
    child.kill('SIGTERM');
    remove();
    throw e;
  });
  return { host: '127.0.0.1', port, processes: [child], remove };
}
