import { describe, expect, it } from 'vitest';
import { addressBytes, findSocketOwner, parseProcAddress } from '../../../src/tunnel/peer-owner.js';

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

  it('treats IPv4 and IPv4-mapped IPv6 as the same address', () => {
    expect(addressBytes('::ffff:127.0.0.1')).toEqual(addressBytes('127.0.0.1'));
    expect(addressBytes('not an address')).toBeUndefined();
  });
});
