/**
 * Who owns the other end of a loopback TCP connection, on Linux: the kernel lists every TCP socket with its owner's
 * uid in /proc/net/tcp and /proc/net/tcp6. The connecting client's socket is the row whose local address is the
 * peer's address and port and whose remote address is the listener's. Elsewhere the answer is "cannot tell" and the
 * per-tunnel secret is the guard.
 */
import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import { isIPv4, isIPv6 } from 'node:net';

export interface Endpoint {
  address: string;
  port: number;
}

/** Whether this platform can say who owns a peer's socket. */
export const CAN_CHECK_PEER_OWNER = process.platform === 'linux';

/**
 * The 16 bytes of an IPv6 address (IPv4 as IPv4-mapped), or undefined for anything else. Zone ids (`%eth0`) are
 * dropped: the kernel's table does not show them.
 */
export function addressBytes(address: string): Buffer | undefined {
  const plain = address.replace(/%.*$/, '');
  if (isIPv4(plain)) return Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...plain.split('.').map(Number)]);
  if (!isIPv6(plain)) return undefined;
  let text = plain;
  // A dotted-quad tail (::ffff:127.0.0.1) becomes two hex groups.
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted[1]!.split('.').map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const groups = (s: string | undefined) => (s ? s.split(':') : []);
  const left = groups(head);
  const right = groups(tail);
  const all = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  if (all.length !== 8) return undefined;
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/**
 * Parses one /proc/net/tcp{,6} address (`0100007F:1F90`): the kernel prints each 32-bit word of the address in the
 * host's byte order, the port big-endian. Returns the address as 16 bytes (IPv4 mapped) and the port.
 */
export function parseProcAddress(text: string, littleEndian = endianness() === 'LE'): { bytes: Buffer; port: number } | undefined {
  const m = /^([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):([0-9A-Fa-f]{4})$/.exec(text);
  if (!m) return undefined;
  const hex = m[1]!;
  const words = Buffer.from(hex, 'hex');
  if (littleEndian) for (let i = 0; i < words.length; i += 4) words.subarray(i, i + 4).reverse();
  const bytes = words.length === 4 ? Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...words]) : words;
  return { bytes, port: parseInt(m[2]!, 16) };
}

/**
 * The uid owning the socket at `peer` connected to `local`, from the text of /proc/net/tcp or tcp6; undefined when
 * no row matches.
 */
export function findSocketOwner(table: string, peer: Endpoint, local: Endpoint): number | undefined {
  const peerBytes = addressBytes(peer.address);
  const localBytes = addressBytes(local.address);
  if (!peerBytes || !localBytes) return undefined;
  for (const line of table.split('\n').slice(1)) {
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const mine = parseProcAddress(f[1]!);
    const theirs = parseProcAddress(f[2]!);
    if (!mine || !theirs) continue;
    if (mine.port !== peer.port || theirs.port !== local.port) continue;
    if (!mine.bytes.equals(peerBytes) || !theirs.bytes.equals(localBytes)) continue;
    const uid = Number(f[7]);
    if (Number.isInteger(uid)) return uid;
  }
  return undefined;
}

/** The uid owning a connected peer's socket (Linux), or undefined when the kernel's tables do not show it. */
export async function peerSocketOwner(peer: Endpoint, local: Endpoint): Promise<number | undefined> {
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const table = await readFile(file, 'utf8').catch(() => '');
    const uid = findSocketOwner(table, peer, local);
    if (uid !== undefined) return uid;
  }
  return undefined;
}
