import { describe, expect, it } from 'vitest';
import { Writer } from '../../../../../src/lib/pg-wire/buffer-writer.js';
import { FrameError, FrameScanner, MAX_CLIENT_FRAME, type StreamPiece } from '../../../../../src/broker/protocols/postgres/frame-scanner.js';
import { FrontendCode } from '../../../../../src/lib/pg-wire/message-codes.js';
import { createBind, createExecute, createParse, createQuery, createSync, createTerminate } from '../../../../../src/broker/protocols/postgres/messages.js';

const copyData = (text: string) => new Writer().addString(text).frame('d');

/** A client stream mixing frames the proxy decodes (Q, P, B, E, S, X) with ones it must not (d, c, H). */
function clientStream(): Buffer {
  return Buffer.concat([
    createQuery('select 1'),
    copyData('a'.repeat(300)),
    new Writer().frame('c'),
    createParse({ name: 's1', sql: 'select $1::int' }),
    createBind({ statement: 's1', params: ['42', null] }),
    new Writer().frame('H'),
    createExecute(),
    createSync(),
    createQuery(''),
    createTerminate(),
  ]);
}

const wanted = new Set<number>([FrontendCode.Query, FrontendCode.Parse, FrontendCode.Bind, FrontendCode.Execute, FrontendCode.Sync, FrontendCode.Terminate]);

function runSplit(chunks: Buffer[]): { forwarded: Buffer; frames: Array<{ code: string; bytes: string }> } {
  const scanner = new FrameScanner({ wanted, maxLength: MAX_CLIENT_FRAME });
  const pieces: StreamPiece[] = chunks.flatMap((c) => scanner.split(c));
  return {
    forwarded: Buffer.concat(pieces.map((p) => p.bytes)),
    frames: pieces.filter((p) => p.kind === 'frame').map((p) => ({ code: String.fromCharCode(p.code), bytes: p.bytes.toString('hex') })),
  };
}

describe('FrameScanner', () => {
  const stream = clientStream();
  const whole = runSplit([stream]);

  it('finds every wanted frame and forwards every byte once, in order', () => {
    expect(whole.forwarded.equals(stream)).toBe(true);
    expect(whole.frames.map((f) => f.code).join('')).toBe('QPBESQX');
  });

  it('gives identical results when the stream is cut at every byte boundary', () => {
    for (let cut = 1; cut < stream.length; cut++) {
      const r = runSplit([stream.subarray(0, cut), stream.subarray(cut)]);
      expect(r.forwarded.equals(stream), `cut at ${cut}`).toBe(true);
      expect(r.frames, `cut at ${cut}`).toEqual(whole.frames);
    }
  });

  it('gives identical results when fed one byte at a time', () => {
    const bytes = Array.from(stream, (_, i) => stream.subarray(i, i + 1));
    const r = runSplit(bytes);
    expect(r.forwarded.equals(stream)).toBe(true);
    expect(r.frames).toEqual(whole.frames);
  });

  it('never emits bytes of a wanted frame before the frame is complete', () => {
    const query = createQuery('delete from accounts');
    const scanner = new FrameScanner({ wanted, maxLength: MAX_CLIENT_FRAME });
    const first = scanner.split(query.subarray(0, 10));
    expect(first).toEqual([]);
    const second = scanner.split(query.subarray(10));
    expect(second).toHaveLength(1);
    expect(second[0].kind).toBe('frame');
    expect(second[0].bytes.equals(query)).toBe(true);
  });

  it('returns unwanted frames as views of the input chunk, not copies', () => {
    const data = copyData('x'.repeat(1000));
    const scanner = new FrameScanner({ wanted, maxLength: MAX_CLIENT_FRAME });
    const [piece] = scanner.split(data);
    expect(piece.kind).toBe('raw');
    expect(piece.bytes.buffer).toBe(data.buffer);
  });

  it('observe() reports wanted frames across chunks and tracks frame boundaries', () => {
    const scanner = new FrameScanner({ wanted: new Set([0x5a /* Z */]), maxLength: MAX_CLIENT_FRAME });
    const z = new Writer().addByte(0x49).frame('Z');
    const row = new Writer().addInt16(1).addInt32(3).addString('abc').frame('D');
    const all = Buffer.concat([row, z, row]);
    for (let cut = 1; cut < all.length; cut++) {
      const s = new FrameScanner({ wanted: new Set([0x5a]), maxLength: MAX_CLIENT_FRAME });
      const frames = [...s.observe(all.subarray(0, cut)), ...s.observe(all.subarray(cut))];
      expect(frames.map((f) => f.bytes.toString('hex'))).toEqual([z.toString('hex')]);
      expect(s.atBoundary).toBe(true);
    }
    scanner.observe(row.subarray(0, 3));
    expect(scanner.atBoundary).toBe(false);
  });

  describe('malformed frames', () => {
    const header = (code: string, length: number) => {
      const b = Buffer.alloc(5);
      b.write(code, 0, 'latin1');
      b.writeInt32BE(length | 0, 1);
      return b;
    };

    it('rejects a length below 4', () => {
      const scanner = new FrameScanner({ wanted, maxLength: MAX_CLIENT_FRAME });
      expect(() => scanner.split(header('Q', 2))).toThrow(FrameError);
    });

    it('rejects a negative length', () => {
      const scanner = new FrameScanner({ wanted, maxLength: MAX_CLIENT_FRAME });
      expect(() => scanner.split(header('d', -5))).toThrow(/invalid length -5/);
    });

    it('rejects a length over the cap before reading the body', () => {
      const scanner = new FrameScanner({ wanted, maxLength: MAX_CLIENT_FRAME });
      expect(() => scanner.split(header('Q', 0x7fffffff))).toThrow(/invalid length 2147483647 in message of type 'Q'/);
    });

    it('rejects a bad length even when the header arrives split', () => {
      const scanner = new FrameScanner({ wanted, maxLength: 1000 });
      const h = header('d', 5000);
      expect(scanner.split(h.subarray(0, 3))).toEqual([{ kind: 'raw', bytes: h.subarray(0, 3) }]);
      expect(() => scanner.split(h.subarray(3))).toThrow(FrameError);
      // The stream is unusable after that: later input fails the same way.
      expect(() => scanner.split(createSync())).toThrow(FrameError);
    });
  });
});
