import { Transform, type TransformCallback } from 'node:stream';

/**
 * Reads the client's side of an SFTP channel (draft-ietf-secsh-filexfer-02, what OpenSSH speaks) just enough to
 * record which files are opened, written, removed or renamed. Frames are `uint32 length, byte type, …`; data
 * frames (WRITE, READ replies) are skipped without being buffered, so a large upload costs no memory here.
 * @see https://datatracker.ietf.org/doc/html/draft-ietf-secsh-filexfer-02#section-3
 */

export interface SftpOperation {
  op: 'open' | 'remove' | 'rename' | 'mkdir' | 'rmdir' | 'opendir' | 'setstat' | 'symlink' | 'link';
  path: string;
  /** Second path of rename, symlink and link. */
  target?: string;
  /** For open: what the client asked to do with the file. */
  mode?: string;
}

const TYPE = { OPEN: 3, SETSTAT: 9, OPENDIR: 11, REMOVE: 13, MKDIR: 14, RMDIR: 15, RENAME: 18, SYMLINK: 20, EXTENDED: 200 } as const;
const INTERESTING = new Set<number>(Object.values(TYPE));
/** Longest request frame of interest we buffer (paths are short); longer ones are skipped unread. */
const MAX_BUFFERED_FRAME = 64 * 1024;

const PFLAGS = { READ: 0x1, WRITE: 0x2, APPEND: 0x4, CREAT: 0x8, TRUNC: 0x10, EXCL: 0x20 } as const;

function describeOpenFlags(flags: number): string {
  return (Object.entries(PFLAGS) as Array<[string, number]>).filter(([, bit]) => flags & bit).map(([name]) => name.toLowerCase()).join(',') || 'none';
}

class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  u8(): number {
    return this.buf.readUInt8(this.pos++);
  }
  u32(): number {
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  string(): string {
    const n = this.u32();
    if (this.pos + n > this.buf.length) throw new RangeError('string past the end of the frame');
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
}

/** Parses one request frame (type byte onward); undefined when it is not one we record. */
export function parseSftpRequest(frame: Buffer): SftpOperation | undefined {
  const r = new Reader(frame);
  const type = r.u8();
  if (!INTERESTING.has(type)) return undefined;
  r.u32(); // request id
  switch (type) {
    case TYPE.OPEN: {
      const path = r.string();
      return { op: 'open', path, mode: describeOpenFlags(r.u32()) };
    }
    case TYPE.SETSTAT:
      return { op: 'setstat', path: r.string() };
    case TYPE.OPENDIR:
      return { op: 'opendir', path: r.string() };
    case TYPE.REMOVE:
      return { op: 'remove', path: r.string() };
    case TYPE.MKDIR:
      return { op: 'mkdir', path: r.string() };
    case TYPE.RMDIR:
      return { op: 'rmdir', path: r.string() };
    case TYPE.RENAME:
      return { op: 'rename', path: r.string(), target: r.string() };
    case TYPE.SYMLINK: {
      // OpenSSH sends (target, link) — the reverse of the draft; record both as sent.
      const a = r.string();
      return { op: 'symlink', path: a, target: r.string() };
    }
    case TYPE.EXTENDED: {
      const name = r.string();
      if (name === 'posix-rename@openssh.com') return { op: 'rename', path: r.string(), target: r.string() };
      if (name === 'hardlink@openssh.com') return { op: 'link', path: r.string(), target: r.string() };
      return undefined;
    }
  }
  return undefined;
}

/**
 * Splits the client→server byte stream into frames and reports the operations worth recording. Survives any
 * split of the stream; a frame it cannot read is reported as undefined and skipped (the backend decides).
 */
export class SftpRequestScanner {
  #head = Buffer.alloc(0);
  /** Bytes of the current frame still to skip (a frame not worth reading). */
  #skip = 0;
  /** Length of the frame being buffered, when one is. */
  #want = 0;
  #frame: Buffer[] = [];
  #have = 0;

  feed(chunk: Buffer): SftpOperation[] {
    const found: SftpOperation[] = [];
    let data = chunk;
    while (data.length > 0) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, data.length);
        this.#skip -= n;
        data = data.subarray(n);
        continue;
      }
      if (this.#want > 0) {
        const n = Math.min(this.#want - this.#have, data.length);
        this.#frame.push(data.subarray(0, n));
        this.#have += n;
        data = data.subarray(n);
        if (this.#have === this.#want) {
          const frame = Buffer.concat(this.#frame);
          this.#want = 0;
          this.#have = 0;
          this.#frame = [];
          try {
            const op = parseSftpRequest(frame);
            if (op) found.push(op);
          } catch {
            // unreadable: not ours to judge
          }
        }
        continue;
      }
      // Need the 5-byte header (length + type).
      const take = data.subarray(0, 5 - this.#head.length);
      this.#head = Buffer.concat([this.#head, take]);
      data = data.subarray(take.length);
      if (this.#head.length < 5) continue;
      const length = this.#head.readUInt32BE(0);
      const type = this.#head.readUInt8(4);
      this.#head = Buffer.alloc(0);
      if (length < 1) continue;
      if (INTERESTING.has(type) && length <= MAX_BUFFERED_FRAME) {
        this.#want = length;
        this.#frame = [Buffer.from([type])];
        this.#have = 1;
        if (this.#have === this.#want) this.#want = 0;
      } else {
        this.#skip = length - 1;
      }
    }
    return found;
  }
}

/**
 * A pass-through for the client→backend half of an SFTP channel that records each file operation before the
 * bytes that carry it go on (the recording is durable first, as for SQL and exec commands).
 */
export function createSftpAuditor(record: (op: SftpOperation) => Promise<void>): Transform {
  const scanner = new SftpRequestScanner();
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      const ops = scanner.feed(chunk);
      if (ops.length === 0) return cb(null, chunk);
      ops.reduce((p, op) => p.then(() => record(op)), Promise.resolve()).then(
        () => cb(null, chunk),
        (e: Error) => cb(e),
      );
    },
  });
}
