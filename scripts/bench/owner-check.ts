/**
 * The cost of `hoopctl connect`'s owner check per accepted connection, in process: the exact netlink lookup (through
 * its Perl helper, whose CPU is counted too) against the /proc/net/tcp scan it falls back to, with the host's TCP
 * table filled by `closed` connections this script opens and closes first (each leaves a TIME_WAIT row for 60 s).
 * Run: `npm run build && node dist/scripts/bench/owner-check.js [closed]` (Linux; wait a minute between runs for the
 * table to empty).
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { NetlinkOwners } from '../../src/tunnel/peer-owner-netlink.js';
import { lookUpOwners, type OwnerQuery } from '../../src/tunnel/peer-owner.js';
import { cpuSeconds } from './processes.js';

const closed = Number(process.argv[2] ?? 0);
const LIVE = 200;

const server = createServer((s) => {
  s.on('end', () => s.end());
  s.resume();
});
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const port = (server.address() as { port: number }).port;

/** A connection the client closes first: its socket waits out TIME_WAIT in the host's table. */
const openAndClose = () => new Promise<void>((resolve) => {
  const c = connect(port, '127.0.0.1', () => c.end());
  c.resume();
  c.on('close', () => resolve());
  c.on('error', () => resolve());
});
for (let i = 0; i < closed; i += 100) await Promise.all(Array.from({ length: Math.min(100, closed - i) }, openAndClose));
const rows = readFileSync('/proc/net/tcp', 'latin1').split('\n').length - 2;

const live: Socket[] = await Promise.all(Array.from({ length: LIVE }, async () => {
  const c = connect(port, '127.0.0.1');
  await once(c, 'connect');
  return c;
}));
const queries: OwnerQuery[] = live.map((c) => ({ peer: { address: '127.0.0.1', port: c.localPort! }, local: { address: '127.0.0.1', port } }));
const own = process.getuid!();

const netlink = new NetlinkOwners();
if ((await netlink.ask(queries[0]!)) !== own) throw new Error('the netlink helper did not answer (no Perl or no sock_diag here)');
const helper = Number(execFileSync('pgrep', ['-P', String(process.pid), 'perl']).toString().trim());
const helperMs = () => cpuSeconds(helper) * 1000;

const ROUNDS = 10;
const helperFrom = helperMs();
let from = process.cpuUsage();
for (let r = 0; r < ROUNDS; r++) for (const q of queries) if ((await netlink.ask(q)) !== own) throw new Error('netlink gave a wrong owner');
let used = process.cpuUsage(from);
const checks = ROUNDS * queries.length;
const nodeUs = (used.user + used.system) / checks;
const perlUs = ((helperMs() - helperFrom) * 1000) / checks;

const SCANS = 50;
from = process.cpuUsage();
for (const q of queries.slice(0, SCANS)) if (lookUpOwners([q])[0] !== own) throw new Error('the scan gave a wrong owner');
used = process.cpuUsage(from);
const scanUs = (used.user + used.system) / SCANS;

console.log(`TCP table rows ${rows}: netlink ${(nodeUs + perlUs).toFixed(0)} µs of CPU per check (Node ${nodeUs.toFixed(0)}, Perl helper ${perlUs.toFixed(0)}); ` +
  `/proc/net/tcp scan ${scanUs.toFixed(0)} µs per check (load average ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]})`);
for (const c of live) c.destroy();
server.close();
process.exit(0);
