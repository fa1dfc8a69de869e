import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetlinkOwners, netlinkQuestion } from '../../src/tunnel/peer-owner-netlink.js';
import { lookUpOwners, type OwnerQuery } from '../../src/tunnel/peer-owner.js';

/**
 * Both ways `hoopctl connect` tells who opened a connection to its listener, against the real kernel: the exact
 * netlink lookup (through its Perl helper) and the /proc/net/tcp scan it falls back to. The other OS user is
 * `nobody` (runuser; the suite runs as root), whose client is a Node process of its own.
 */
let server: Server;
let port: number;
const accepted: Socket[] = [];
const children: ChildProcess[] = [];
const own = process.getuid!();

/** A client of `nobody` connected to our listener: its port, and the process (alive until its stdin closes). */
async function nobodysClient(): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn('runuser', ['-u', 'nobody', '--', process.execPath, '-e',
    `const c = require('net').connect(${port}, '127.0.0.1', () => console.log(c.localPort)); process.stdin.on('end', () => process.exit(0)); process.stdin.resume();`],
  { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  return { port: Number(line.toString().trim()), child };
}

/** The server's end of the connection from `peerPort`, once accepted (it may be accepted after the client printed). */
async function acceptedFrom(peerPort: number): Promise<Socket> {
  for (;;) {
    const found = accepted.find((s) => s.remotePort === peerPort);
    if (found) return found;
    await once(server, 'connection');
  }
}

const ask = (peerPort: number, address = '127.0.0.1'): OwnerQuery => ({ peer: { address, port: peerPort }, local: { address, port } });

beforeAll(async () => {
  server = createServer((s) => accepted.push(s));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as { port: number }).port;
});

afterAll(() => {
  for (const c of children) c.stdin?.end();
  for (const s of accepted) s.destroy();
  server.close();
});

describe("the owner of a connection's other end, from the kernel", () => {
  it("answers our own client's uid and another user's, by netlink and by the table alike", async () => {
    const mine = tcpConnect(port, '127.0.0.1');
    await once(mine, 'connect');
    const theirs = await nobodysClient();
    const netlink = new NetlinkOwners();
    expect(await netlink.ask(ask(mine.localPort!))).toBe(own);
    expect(netlink.ready).toBe(true);
    expect(await netlink.ask(ask(theirs.port))).toBe(65534);
    expect(lookUpOwners([ask(mine.localPort!), ask(theirs.port)])).toEqual([own, 65534]);
    mine.destroy();
  });

  it('says nothing of a socket that does not exist, nor of the listener itself', async () => {
    const netlink = new NetlinkOwners();
    const unused = createServer();
    await new Promise<void>((resolve) => unused.listen(0, '127.0.0.1', resolve));
    const freePort = (unused.address() as { port: number }).port;
    unused.close();
    expect(await netlink.ask(ask(freePort))).toBeUndefined();
    // The kernel's exact lookup falls back to a listener on the asked port; only the exact four-tuple counts.
    expect(await netlink.ask({ peer: { address: '127.0.0.1', port }, local: { address: '127.0.0.1', port: 1 } })).toBeUndefined();
  });

  it("does not take a client that already closed for root's: the kernel shows such a socket as uid 0, with no inode", async () => {
    // Root runs this suite, so a wrong "uid 0" here would let another user's bytes into root's tunnel.
    const theirs = await nobodysClient();
    const end = once(await acceptedFrom(theirs.port), 'end');
    theirs.child.stdin!.end();
    await Promise.all([once(theirs.child, 'exit'), end]);
    expect(await new NetlinkOwners().ask(ask(theirs.port))).toBeUndefined();
    expect(lookUpOwners([ask(theirs.port)])).toEqual([undefined]);
  });

  it('starts its helper ahead of the first check when asked, and says whether it answers', async () => {
    const netlink = new NetlinkOwners();
    expect(netlink.ready).toBe(false);
    expect(await netlink.start()).toBe(true);
    expect(netlink.ready).toBe(true);
    expect(await netlink.start()).toBe(true);
    expect(await new NetlinkOwners(['/nonexistent/perl']).start()).toBe(false);
  });

  it('answers "cannot say" without Perl, so the caller reads the table', async () => {
    const mine = tcpConnect(port, '127.0.0.1');
    await once(mine, 'connect');
    const netlink = new NetlinkOwners(['/nonexistent/perl']);
    expect(await netlink.ask(ask(mine.localPort!))).toBeUndefined();
    expect(netlink.ready).toBe(false);
    mine.destroy();
  });
});

describe('the question the netlink helper is asked', () => {
  const local = { address: '127.0.0.1', port: 5432 };
  it('asks IPv4 (and IPv4-mapped) peers as AF_INET with 4-byte addresses, IPv6 ones with 16', () => {
    expect(netlinkQuestion(7, { peer: { address: '127.0.0.1', port: 40112 }, local })).toBe('7 4 7f000001 40112 7f000001 5432\n');
    expect(netlinkQuestion(8, { peer: { address: '::ffff:127.0.0.1', port: 40112 }, local })).toBe('8 4 7f000001 40112 7f000001 5432\n');
    expect(netlinkQuestion(9, { peer: { address: '::1', port: 1 }, local: { address: '::1', port: 2 } })).toBe(`9 6 ${'0'.repeat(31)}1 1 ${'0'.repeat(31)}1 2\n`);
  });

  it('asks nothing it cannot put on one line for the kernel', () => {
    expect(netlinkQuestion(1, { peer: { address: '::1', port: 1 }, local })).toBeUndefined();
    expect(netlinkQuestion(1, { peer: { address: 'localhost\n1 4', port: 1 }, local })).toBeUndefined();
    expect(netlinkQuestion(1, { peer: { address: '127.0.0.1', port: 0 }, local })).toBeUndefined();
    expect(netlinkQuestion(1, { peer: { address: '127.0.0.1', port: 70000 }, local })).toBeUndefined();
  });
});
