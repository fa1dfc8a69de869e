import { describe, expect, it } from 'vitest';
import { SftpRequestScanner, type SftpOperation } from '../../../../../src/broker/protocols/ssh/sftp-audit.js';

const str = (s: string) => {
  const b = Buffer.from(s, 'utf8');
  const n = Buffer.alloc(4);
  n.writeUInt32BE(b.length);
  return Buffer.concat([n, b]);
};
const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
};
const frame = (type: number, ...parts: Buffer[]) => {
  const body = Buffer.concat([Buffer.from([type]), ...parts]);
  return Buffer.concat([u32(body.length), body]);
};

// What an scp upload looks like: INIT, REALPATH, OPEN for write, a large WRITE, CLOSE, then a rename and a remove.
const stream = Buffer.concat([
  frame(1, u32(3)),
  frame(16, u32(1), str('.')),
  frame(3, u32(2), str('/tmp/upload.txt'), u32(0x1a), u32(0)),
  frame(6, u32(3), str('handle'), Buffer.alloc(8), str('x'.repeat(100_000))),
  frame(4, u32(4), str('handle')),
  frame(200, u32(5), str('posix-rename@openssh.com'), str('/tmp/upload.txt'), str('/tmp/final.txt')),
  frame(13, u32(6), str('/tmp/old')),
  frame(14, u32(7), str('/tmp/dir')),
]);
const expected: SftpOperation[] = [
  { op: 'open', path: '/tmp/upload.txt', mode: 'write,creat,trunc' },
  { op: 'rename', path: '/tmp/upload.txt', target: '/tmp/final.txt' },
  { op: 'remove', path: '/tmp/old' },
  { op: 'mkdir', path: '/tmp/dir' },
];

describe('SftpRequestScanner', () => {
  it('finds the file operations in a request stream', () => {
    expect(new SftpRequestScanner().feed(stream)).toEqual(expected);
  });

  it('survives the stream cut into pieces of every size up to 80 bytes (and a few large ones)', () => {
    for (const cut of [...Array.from({ length: 80 }, (_, i) => i + 1), 1000, 4096, 65536]) {
      const s = new SftpRequestScanner();
      const found: SftpOperation[] = [];
      for (let i = 0; i < stream.length; i += cut) found.push(...s.feed(stream.subarray(i, i + cut)));
      expect(found, `cut ${cut}`).toEqual(expected);
    }
  });

  it('skips a frame it cannot read and goes on', () => {
    const broken = frame(13, u32(1), u32(999)); // string length past the end
    expect(new SftpRequestScanner().feed(Buffer.concat([broken, frame(15, u32(2), str('/x'))]))).toEqual([{ op: 'rmdir', path: '/x' }]);
  });
});
