import { describe, expect, it, vi } from 'vitest';
import { MAX_OBSERVED_MESSAGE, WsFrameObserver, type WsMessage } from '../../../../../src/broker/protocols/http/ws-frames.js';

/** Builds a frame as a WebSocket peer would (clients mask, servers do not). */
function frame(opcode: number, payload: Buffer, o: { fin?: boolean; mask?: boolean } = {}): Buffer {
  const fin = o.fin ?? true;
  const head: number[] = [(fin ? 0x80 : 0) | opcode];
  const m = o.mask ? 0x80 : 0;
  if (payload.length < 126) head.push(m | payload.length);
  else if (payload.length < 65536) head.push(m | 126, payload.length >> 8, payload.length & 255);
  else {
    const b = Buffer.alloc(9);
    b[0] = m | 127;
    b.writeBigUInt64BE(BigInt(payload.length), 1);
    head.push(...b);
  }
  if (!o.mask) return Buffer.concat([Buffer.from(head), payload]);
  const key = Buffer.from([1, 2, 3, 4]);
  const body = Buffer.from(payload.map((x, i) => x ^ key[i & 3]));
  return Buffer.concat([Buffer.from(head), key, body]);
}

describe('WsFrameObserver', () => {
  it('reads masked and unmasked frames cut at every byte boundary', () => {
    const stream = Buffer.concat([
      frame(2, Buffer.from([1, 104, 105, 10]), { mask: true }),
      frame(1, Buffer.alloc(300, 'a')),
      frame(2, Buffer.alloc(70_000, 7), { mask: true }),
    ]);
    for (const cut of [1, 2, 3, 7, 100, 4096, stream.length]) {
      const got: WsMessage[] = [];
      const o = new WsFrameObserver((m) => got.push(m));
      for (let i = 0; i < stream.length; i += cut) o.push(stream.subarray(i, i + cut));
      expect(got.map((m) => [m.opcode, m.payload.length])).toEqual([
        [2, 4],
        [1, 300],
        [2, 70_000],
      ]);
      expect([...got[0].payload]).toEqual([1, 104, 105, 10]);
      expect(got[2].payload.every((b) => b === 7)).toBe(true);
    }
  });

  it('joins fragments and passes control frames between them', () => {
    const got: WsMessage[] = [];
    const o = new WsFrameObserver((m) => got.push(m));
    o.push(Buffer.concat([frame(2, Buffer.from('ab'), { fin: false }), frame(9, Buffer.from('p')), frame(0, Buffer.from('cd'))]));
    expect(got.map((m) => [m.opcode, m.payload.toString()])).toEqual([
      [9, 'p'],
      [2, 'abcd'],
    ]);
  });

  it('copies a large frame that comes in many chunks about once, not again at every chunk', () => {
    const payload = Buffer.alloc(4 * 1024 * 1024, 9);
    const stream = frame(2, payload, { mask: true });
    const got: WsMessage[] = [];
    const o = new WsFrameObserver((m) => got.push(m));
    // Counts the bytes joined: the observer used to join its pending bytes with each new chunk (4 GiB here).
    const concat = vi.spyOn(Buffer, 'concat');
    let joined = 0;
    try {
      for (let i = 0; i < stream.length; i += 4096) {
        o.push(stream.subarray(i, i + 4096));
        joined = concat.mock.calls.reduce((n, [list]) => n + list.reduce((m, b) => m + b.length, 0), 0);
      }
    } finally {
      concat.mockRestore();
    }
    expect(got).toHaveLength(1);
    // The recording keeps the head of a message this large.
    expect(got[0].payload.equals(payload.subarray(0, MAX_OBSERVED_MESSAGE))).toBe(true);
    expect(joined).toBeLessThanOrEqual(2 * stream.length);
  });
});
