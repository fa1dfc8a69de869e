import { describe, expect, it } from 'vitest';
import { addressBytes, findSocketOwner, parseProcAddress, procAddressText, scanForOwners } from '../../../src/tunnel/peer-owner.js';

/** Rows as a little-endian Linux prints them: the listener 127.0.0.1:5433, a client from 127.0.0.1:40112 (uid 65534). */
const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1535 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9CB0 0100007F:1535 01 00000000:00000000 00:00000000 00000000 65534        0 1002 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1535 0100007F:9CB0 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 20 4 30 10 -1
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:9CB1 00000000000000000000000001000000:1536 01 00000000:00000000 00:00000000 00000000  1000        0 2001 1
`;

describe('the owner of a peer socket (/proc/net/tcp)', () => {
  it('reads host-order addresses and big-endian ports', () => {
    expect(parseProcAddress('0100007F:1535', true)).toEqual({ bytes: addressBytes('127.0.0.1'), port: 5429 });
    expect(parseProcAddress('7F000001:1535', false)?.bytes).toEqual(addressBytes('127.0.0.1'));
    expect(parseProcAddress('00000000000000000000000001000000:0016', true)?.bytes).toEqual(addressBytes('::1'));
    expect(parseProcAddress('nonsense')).toBeUndefined();
  });

  it("finds the client's row by both ends, not the listener's own row for that connection", () => {
    expect(findSocketOwner(TCP, { address: '127.0.0.1', port: 40112 }, { address: '127.0.0.1', port: 5429 })).toBe(65534);
    expect(findSocketOwner(TCP, { address: '127.0.0.1', port: 40113 }, { address: '127.0.0.1', port: 5429 })).toBeUndefined();
    expect(findSocketOwner(TCP, { address: '127.0.0.2', port: 40112 }, { address: '127.0.0.1', port: 5429 })).toBeUndefined();
    expect(findSocketOwner(TCP6, { address: '::1', port: 40113 }, { address: '::1', port: 5430 })).toBe(1000);
  });

  it("takes a closed client's row (no inode, printed as uid 0) for nobody's, not for root's", () => {
    const closed = `header\n   0: 0100007F:9CB0 0100007F:1535 06 00000000:00000000 03:0000176F 00000000     0        0 0 3 000000005cfec69d\n`;
    expect(findSocketOwner(closed, { address: '127.0.0.1', port: 40112 }, { address: '127.0.0.1', port: 5429 })).toBeUndefined();
  });

  it('treats IPv4 and IPv4-mapped IPv6 as the same address', () => {
    expect(addressBytes('::ffff:127.0.0.1')).toEqual(addressBytes('127.0.0.1'));
    expect(addressBytes('not an address')).toBeUndefined();
  });

  it('prints an address and port the way the kernel does, words in host order', () => {
    expect(procAddressText('127.0.0.1', 40112, 4, true)).toBe('0100007F:9CB0');
    expect(procAddressText('127.0.0.1', 5429, 4, false)).toBe('7F000001:1535');
    expect(procAddressText('::1', 40113, 6, true)).toBe('00000000000000000000000001000000:9CB1');
    expect(procAddressText('127.0.0.1', 1, 6, true)).toBe('0000000000000000FFFF00000100007F:0001');
    // An IPv6 peer has no row in the IPv4 table.
    expect(procAddressText('::1', 1, 4, true)).toBeUndefined();
  });

  /** `text` handed out `size` bytes per read, as the kernel hands out /proc/net/tcp a page at a time; counts the reads. */
  const chunked = (text: string, size: number) => {
    let at = 0;
    const source = { reads: 0, read: (buf: Buffer) => {
      source.reads++;
      const n = buf.write(text.slice(at, at + size), 'latin1');
      at += n;
      return n;
    } };
    return source;
  };
  const listener = { address: '127.0.0.1', port: 5429 };
  // Many other sockets (TIME_WAIT rows of past connections), then two clients of the listener.
  const filler = Array.from({ length: 200 }, (_, i) =>
    `${String(i + 3).padStart(4)}: 0100007F:${(20000 + i).toString(16).toUpperCase()} 0100007F:0CEA 06 00000000:00000000 03:00000F5C 00000000     0        0 0 3 0000000000000000\n`).join('');
  const BIG = `${TCP}${filler}   203: 0100007F:9CB2 0100007F:1535 01 00000000:00000000 00:00000000 00000000  1000        0 1004 1 0000000000000000 20 4 30 10 -1\n`;

  it('answers every waiting check in one scan, whatever chunk a row is cut by', () => {
    const clients = [{ address: '127.0.0.1', port: 40112 }, { address: '127.0.0.1', port: 40114 }, { address: '127.0.0.1', port: 40113 }];
    for (const size of [61, 100, 4096, 1 << 20]) {
      const source = chunked(BIG, size);
      expect(scanForOwners(source.read, clients.map((peer) => ({ peer, local: listener })), 4, true)).toEqual([65534, 1000, undefined]);
    }
  });

  it('stops reading once every check is answered', () => {
    const source = chunked(BIG, 100);
    expect(scanForOwners(source.read, [{ peer: { address: '127.0.0.1', port: 40112 }, local: listener }], 4, true)).toEqual([65534]);
    // The row is in the first 400 bytes: the thousands after it are never read.
    expect(source.reads).toBeLessThan(6);
  });

  it('finds an IPv4 client that connected from an IPv6 socket (IPv4-mapped, in tcp6)', () => {
    const mapped = `header\n   0: 0000000000000000FFFF00000100007F:9CB0 0000000000000000FFFF00000100007F:1535 01 00000000:00000000 00:00000000 00000000  1000        0 3001 1\n`;
    expect(scanForOwners(chunked(mapped, 4096).read, [{ peer: { address: '127.0.0.1', port: 40112 }, local: listener }], 6, true)).toEqual([1000]);
  });
});
