import { describe, expect, it } from 'vitest';
import { WsFrameDecoder, WsFrameError, WsOp, encodeFrame } from '../../../src/lib/ws-frame-codec.js';

const asBuffer = (f: Buffer | [Buffer, Buffer]) => (Array.isArray(f) ? Buffer.concat(f) : f);

/** A client frame with a real (non-zero) mask, as browsers and the `ws` library send them. */
function maskedFrame(opcode: number, payload: Buffer, key = Buffer.from([0x12, 0x34, 0x56, 0x78]), fin = true): Buffer {
  const head = asBuffer(encodeFrame(opcode, Buffer.alloc(0), true)).subarray(0, 2);
  const lengthBytes = payload.length < 126 ? Buffer.alloc(0) : payload.length < 65536 ? Buffer.from([payload.length >> 8, payload.length & 0xff]) : Buffer.alloc(8);
  if (lengthBytes.length === 8) lengthBytes.writeUInt32BE(payload.length, 4);
  head[0] = (fin ? 0x80 : 0) | opcode;
  head[1] = 0x80 | (payload.length < 126 ? payload.length : payload.length < 65536 ? 126 : 127);
  const body = Buffer.from(payload.map((b, i) => b ^ key[i & 3]!));
  return Buffer.concat([head, lengthBytes, key, body]);
}

describe('the tunnel WebSocket frame codec', () => {
  it('reads back what it writes at every length class, cut at any byte', () => {
    for (const size of [0, 1, 125, 126, 65535, 65536, 70_000]) {
      const payload = Buffer.alloc(size, 7);
      const wire = asBuffer(encodeFrame(WsOp.Binary, payload, false));
      // Header: 2 bytes, then 0, 2 or 8 bytes of length.
      expect(wire.length).toBe(size + 2 + (size < 126 ? 0 : size < 65536 ? 2 : 8));
      for (const cut of size < 200 ? Array.from({ length: wire.length }, (_, i) => i) : [1, 3, 9, wire.length - 1]) {
        const d = new WsFrameDecoder({ expectMasked: false, maxPayload: 1 << 20 });
        const frames = [...d.push(wire.subarray(0, cut)), ...d.push(wire.subarray(cut))];
        expect(frames).toHaveLength(1);
        expect(frames[0]!.opcode).toBe(WsOp.Binary);
        expect(frames[0]!.payload.equals(payload)).toBe(true);
      }
    }
  });

  it('reads a large frame that arrives in many small chunks, with the frames around it, joined once', () => {
    const big = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = i % 251;
    const wire = Buffer.concat([maskedFrame(WsOp.Binary, Buffer.from('before')), maskedFrame(WsOp.Binary, big), maskedFrame(WsOp.Binary, Buffer.from('after'))]);
    const d = new WsFrameDecoder({ expectMasked: true, maxPayload: 4 * 1024 * 1024 });
    const frames = [];
    let concats = 0;
    const concat = Buffer.concat;
    Buffer.concat = ((list: readonly Uint8Array[], length?: number) => (concats++, concat(list, length))) as typeof Buffer.concat;
    try {
      // 4,099 bytes at a time: headers, masks and payloads cut at every kind of place along the way.
      for (let at = 0; at < wire.length; at += 4099) frames.push(...d.push(wire.subarray(at, at + 4099)));
    } finally {
      Buffer.concat = concat;
    }
    expect(frames.map((f) => f.payload.length)).toEqual([6, big.length, 5]);
    expect(frames[1]!.payload.equals(big)).toBe(true);
    expect(frames[2]!.payload.toString()).toBe('after');
    // Joined when whole (and for the short frames whose header was cut), not at each of the ~770 chunks.
    expect(concats).toBeLessThan(5);
  });

  it('copies a stream of socket-read-sized frames, each cut between two reads, once at most', () => {
    // What hoopctl connect sends for an upload: one 64 KiB frame per read of the client's socket (header 14 bytes);
    // the broker reads them 64 KiB at a time, so every frame straddles two reads.
    const payloads = Array.from({ length: 64 }, (_, i) => Buffer.alloc(64 * 1024, i + 1));
    const wire = Buffer.concat(payloads.map((p) => asBuffer(encodeFrame(WsOp.Binary, p, true))));
    const d = new WsFrameDecoder({ expectMasked: true, maxPayload: 1 << 20 });
    const got: Buffer[] = [];
    let copied = 0;
    const originals = { allocUnsafe: Buffer.allocUnsafe, from: Buffer.from, concat: Buffer.concat };
    let inside = false;
    const count = <F extends (...a: never[]) => Buffer>(f: F) =>
      ((...a: Parameters<F>) => {
        const outer = !inside;
        inside = true;
        try {
          const b = f.apply(Buffer, a);
          if (outer) copied += b.length;
          return b;
        } finally {
          if (outer) inside = false;
        }
      }) as unknown as F;
    Object.assign(Buffer, { allocUnsafe: count(originals.allocUnsafe), from: count(originals.from as never), concat: count(originals.concat) });
    try {
      for (let at = 0; at < wire.length; at += 65536) got.push(...d.push(wire.subarray(at, at + 65536)).map((f) => f.payload));
    } finally {
      Object.assign(Buffer, originals);
    }
    expect(got.length).toBe(payloads.length);
    expect(got.every((p, i) => p.equals(payloads[i]!))).toBe(true);
    // At most the bytes themselves (a cut frame copied once); joining and copying leftovers made 2–2.5 times that.
    expect(copied).toBeLessThanOrEqual(wire.length);
  });

  it('marks client frames masked with the zero key and takes them as they are; unmasks a real key', () => {
    const payload = Buffer.from('SELECT 1');
    const zero = asBuffer(encodeFrame(WsOp.Binary, payload, true));
    expect(zero[1]! & 0x80).toBe(0x80);
    expect(zero.subarray(2, 6).equals(Buffer.alloc(4))).toBe(true);
    const d = new WsFrameDecoder({ expectMasked: true, maxPayload: 1024 });
    const frames = d.push(Buffer.concat([zero, maskedFrame(WsOp.Binary, payload), maskedFrame(WsOp.Ping, Buffer.from('hi'))]));
    expect(frames.map((f) => [f.opcode, f.payload.toString()])).toEqual([[WsOp.Binary, 'SELECT 1'], [WsOp.Binary, 'SELECT 1'], [WsOp.Ping, 'hi']]);
  });

  it('joins a fragmented message and refuses what the rules forbid, with the close code that says why', () => {
    const d = new WsFrameDecoder({ expectMasked: true, maxPayload: 1024 });
    const parts = d.push(Buffer.concat([maskedFrame(WsOp.Binary, Buffer.from('ab'), undefined, false), maskedFrame(WsOp.Continuation, Buffer.from('cd'))]));
    expect(parts.map((f) => f.payload.toString()).join('')).toBe('abcd');

    const refusal = (bytes: Buffer, o = { expectMasked: true, maxPayload: 1024 }) => {
      try {
        new WsFrameDecoder(o).push(bytes);
      } catch (e) {
        expect(e).toBeInstanceOf(WsFrameError);
        return [(e as WsFrameError).code, (e as Error).message];
      }
      return undefined;
    };
    expect(refusal(asBuffer(encodeFrame(WsOp.Binary, Buffer.from('x'), false)))).toEqual([1002, 'an unmasked frame from a client']);
    expect(refusal(maskedFrame(WsOp.Binary, Buffer.from('x')), { expectMasked: false, maxPayload: 1024 })).toEqual([1002, 'a masked frame from a server']);
    expect(refusal(maskedFrame(WsOp.Text, Buffer.from('x')))).toBeUndefined();
    expect(refusal(maskedFrame(WsOp.Text, Buffer.from([0xc3, 0x28])))).toEqual([1007, 'a text frame that is not UTF-8']);
    expect(refusal(maskedFrame(WsOp.Close, Buffer.from([0x03, 0xed])))).toEqual([1002, 'a close frame with the invalid code 1005']);
    expect(refusal(maskedFrame(WsOp.Close, Buffer.from([0x03])))?.[0]).toBe(1002);
    expect(refusal(maskedFrame(WsOp.Close, Buffer.from([0x03, 0xe8, 0xff])))).toEqual([1007, 'a close reason that is not UTF-8']);
    expect(refusal(maskedFrame(WsOp.Close, Buffer.from([0x0f, 0xa0, 0x6f, 0x6b])))).toBeUndefined();
    expect(refusal(maskedFrame(WsOp.Continuation, Buffer.from('x')))?.[1]).toMatch(/no message to continue/);
    expect(refusal(maskedFrame(WsOp.Ping, Buffer.alloc(126)))?.[1]).toMatch(/control frame over 125/);
    expect(refusal(maskedFrame(WsOp.Ping, Buffer.alloc(1), undefined, false))?.[1]).toMatch(/fragmented control/);
    expect(refusal(maskedFrame(0x3, Buffer.alloc(1)))?.[1]).toMatch(/unknown opcode 0x3/);
    expect(refusal(maskedFrame(WsOp.Binary, Buffer.alloc(2000)))).toEqual([1009, 'a frame of 2000 bytes (the limit is 1024)']);
    const rsv = maskedFrame(WsOp.Binary, Buffer.from('x'));
    rsv[0] = rsv[0]! | 0x40;
    expect(refusal(rsv)?.[1]).toMatch(/RSV bits/);
    // A too-large frame is refused from its header alone: nothing of its payload is buffered first.
    const huge = maskedFrame(WsOp.Binary, Buffer.alloc(70_000)).subarray(0, 14);
    expect(refusal(huge)?.[0]).toBe(1009);
  });
});
