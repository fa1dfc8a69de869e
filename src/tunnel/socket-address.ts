/** The two ends of a loopback TCP connection, as the owner checks ask about them. */
import { isIPv4, isIPv6 } from 'node:net';

export interface Endpoint {
  address: string;
  port: number;
}

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

/** What a lookup asks: whose socket is `peer`, connected to our listener at `local`. */
export interface OwnerQuery {
  peer: Endpoint;
  local: Endpoint;
}

const V4_MAPPED_PREFIX = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

/** The 4 bytes of an IPv4 address in `addressBytes` form (IPv4-mapped), or undefined for an IPv6 one. */
export function mappedIPv4(bytes: Buffer): Buffer | undefined {
  return bytes.subarray(0, 12).equals(V4_MAPPED_PREFIX) ? bytes.subarray(12) : undefined;
}
