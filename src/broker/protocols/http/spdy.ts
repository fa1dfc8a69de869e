/**
 * SPDY/3.1 framing, as far as the Kubernetes port-forward protocol uses it. kubectl 1.31+ runs port-forward as SPDY
 * carried inside a WebSocket (subprotocol `SPDY/3.1+portforward.k8s.io`): the binary messages, joined, are a SPDY
 * byte stream. The broker reads it to record which pod ports were forwarded and how much crossed; the bytes it
 * forwards are never changed.
 *
 * Frames: an 8-byte header, then the payload.
 *   control: 1 bit C=1 · 15 bits version (3) · 16 bits type · 8 bits flags · 24 bits length
 *   data:    1 bit C=0 · 31 bits stream id        · 8 bits flags · 24 bits length
 * Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are zlib-compressed with a preset dictionary, one compression
 * context per direction for the whole connection (so they must be inflated in order).
 * @see https://www.chromium.org/spdy/spdy-protocol/spdy-protocol-draft3-1/
 */
import { constants, createDeflate, createInflate, type Deflate, type Inflate } from 'node:zlib';

export const SPDY_VERSION = 3;

export const SpdyType = { SynStream: 1, SynReply: 2, RstStream: 3, Settings: 4, Ping: 6, GoAway: 7, Headers: 8, WindowUpdate: 9 } as const;

export const SpdyFlag = { Fin: 0x01, Unidirectional: 0x02 } as const;

/** RST_STREAM status codes (the ones a port-forward peer sends). */
export const SpdyRst = { ProtocolError: 1, InvalidStream: 2, RefusedStream: 3, Cancel: 5, InternalError: 6 } as const;

/** A control frame longer than this is treated as a broken stream (kubectl's are tens of bytes). */
export const MAX_CONTROL_FRAME = 64 * 1024;
/** A header block that inflates to more than this is refused: a few bytes of zlib can claim gigabytes. */
export const MAX_HEADER_BLOCK = 256 * 1024;

export type SpdyFrame =
  | { control: true; type: number; flags: number; payload: Buffer }
  | { control: false; streamId: number; flags: number; payload: Buffer };

/** Header name → values (a value block with NUL separators is split into several values). */
export type SpdyHeaders = Map<string, string[]>;

/**
 * The preset dictionary of SPDY/3 header compression (§2.6.10.1): length-prefixed header names and common
 * values, then a run of status lines, dates and media types. Built from its parts; kubectl rejects any other.
 */
export const SPDY3_DICTIONARY: Buffer = (() => {
  const words = [
    'options', 'head', 'post', 'put', 'delete', 'trace', 'accept', 'accept-charset', 'accept-encoding', 'accept-language',
    'accept-ranges', 'age', 'allow', 'authorization', 'cache-control', 'connection', 'content-base', 'content-encoding',
    'content-language', 'content-length', 'content-location', 'content-md5', 'content-range', 'content-type', 'date',
    'etag', 'expect', 'expires', 'from', 'host', 'if-match', 'if-modified-since', 'if-none-match', 'if-range',
    'if-unmodified-since', 'last-modified', 'location', 'max-forwards', 'pragma', 'proxy-authenticate',
    'proxy-authorization', 'range', 'referer', 'retry-after', 'server', 'te', 'trailer', 'transfer-encoding', 'upgrade',
    'user-agent', 'vary', 'via', 'warning', 'www-authenticate', 'method', 'get', 'status', '200 OK', 'version',
    'HTTP/1.1', 'url', 'public', 'set-cookie', 'keep-alive', 'origin',
  ];
  const tail =
    '100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505' +
    '203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized' +
    '403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable' +
    'Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT' +
    'chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,' +
    'text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.';
  const parts: Buffer[] = [];
  for (const w of words) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(w.length);
    parts.push(len, Buffer.from(w, 'latin1'));
  }
  parts.push(Buffer.from(tail, 'latin1'));
  return Buffer.concat(parts);
})();

export class SpdyProtocolError extends Error {
  override name = 'SpdyProtocolError';
}

/**
 * Splits a SPDY byte stream into frames, however it was cut. Once the stream stops looking like SPDY (another
 * version, a data frame first) it reports the error and nothing more.
 */
export class SpdyFrameReader {
  #buf: Buffer = Buffer.alloc(0);
  #started = false;
  broken?: SpdyProtocolError;

  /** Feeds bytes; returns the frames now complete. */
  push(chunk: Buffer): SpdyFrame[] {
    if (this.broken) return [];
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const frames: SpdyFrame[] = [];
    while (this.#buf.length >= 8) {
      const b = this.#buf;
      const length = b.readUIntBE(5, 3);
      const control = (b[0] & 0x80) !== 0;
      // Nothing can precede the first SYN_STREAM (or SETTINGS, PING) but a control frame: anything else is not SPDY.
      if (!control && !this.#started) {
        this.broken = new SpdyProtocolError('the stream does not start with a control frame');
        return frames;
      }
      this.#started = true;
      if (control && (b.readUInt16BE(0) & 0x7fff) !== SPDY_VERSION) {
        this.broken = new SpdyProtocolError(`SPDY version ${b.readUInt16BE(0) & 0x7fff} is not 3`);
        return frames;
      }
      if (control && length > MAX_CONTROL_FRAME) {
        this.broken = new SpdyProtocolError(`a control frame of ${length} bytes (more than ${MAX_CONTROL_FRAME})`);
        return frames;
      }
      if (b.length < 8 + length) break;
      // A view, not a copy: a port-forward's data frames are only counted, and chunks are never reused by their source.
      const payload = b.subarray(8, 8 + length);
      const flags = b[4];
      frames.push(control ? { control, type: b.readUInt16BE(2), flags, payload } : { control, streamId: b.readUInt32BE(0) & 0x7fffffff, flags, payload });
      this.#buf = b.subarray(8 + length);
    }
    return frames;
  }
}

/** The stream id a control frame is about (SYN_STREAM, SYN_REPLY, RST_STREAM, HEADERS, WINDOW_UPDATE). */
export function controlStreamId(frame: SpdyFrame & { control: true }): number | undefined {
  const streamScoped: number[] = [SpdyType.SynStream, SpdyType.SynReply, SpdyType.RstStream, SpdyType.Headers, SpdyType.WindowUpdate];
  if (!streamScoped.includes(frame.type) || frame.payload.length < 4) return undefined;
  return frame.payload.readUInt32BE(0) & 0x7fffffff;
}

/** The compressed header block of a SYN_STREAM (after stream id, associated id, priority, slot), SYN_REPLY or HEADERS. */
export function headerBlockOf(frame: SpdyFrame & { control: true }): Buffer | undefined {
  const at = frame.type === SpdyType.SynStream ? 10 : frame.type === SpdyType.SynReply || frame.type === SpdyType.Headers ? 4 : -1;
  if (at < 0 || frame.payload.length < at) return undefined;
  return frame.payload.subarray(at);
}

/** Decodes an inflated name/value block: a 32-bit count, then 32-bit-length-prefixed names and values. */
export function parseNameValueBlock(block: Buffer): SpdyHeaders {
  const headers: SpdyHeaders = new Map();
  let at = 0;
  const take = (): string => {
    if (at + 4 > block.length) throw new SpdyProtocolError('truncated header block');
    const len = block.readUInt32BE(at);
    at += 4;
    if (at + len > block.length) throw new SpdyProtocolError('truncated header block');
    const s = block.toString('utf8', at, at + len);
    at += len;
    return s;
  };
  if (block.length < 4) throw new SpdyProtocolError('truncated header block');
  const count = block.readUInt32BE(0);
  at = 4;
  for (let i = 0; i < count; i++) {
    const name = take().toLowerCase();
    const values = take().split('\0');
    headers.set(name, [...(headers.get(name) ?? []), ...values]);
  }
  return headers;
}

export function encodeNameValueBlock(headers: Record<string, string | string[]>): Buffer {
  const parts: Buffer[] = [];
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  const entries = Object.entries(headers);
  parts.push(u32(entries.length));
  for (const [name, value] of entries) {
    const n = Buffer.from(name.toLowerCase(), 'utf8');
    const v = Buffer.from(Array.isArray(value) ? value.join('\0') : value, 'utf8');
    parts.push(u32(n.length), n, u32(v.length), v);
  }
  return Buffer.concat(parts);
}

/**
 * Runs one zlib context over a connection's header blocks, in order. Each block is a sync-flushed piece of one
 * stream, so a block can only be read after every block before it.
 */
class HeaderZlib<T extends Inflate | Deflate> {
  #queue: Promise<unknown> = Promise.resolve();
  #out: Buffer[] = [];
  #outBytes = 0;
  #failed?: Error;
  #pending?: (e: Error) => void;

  constructor(private readonly z: T) {
    z.on('data', (c: Buffer) => {
      this.#outBytes += c.length;
      if (this.#outBytes > MAX_HEADER_BLOCK && !this.#failed) {
        this.#failed = new SpdyProtocolError(`a header block inflates to more than ${MAX_HEADER_BLOCK} bytes`);
        this.#pending?.(this.#failed);
        z.destroy();
        return;
      }
      this.#out.push(c);
    });
    // A zlib error never calls the flush callback: the block waiting on it is rejected here.
    z.on('error', (e: Error) => {
      this.#failed = e;
      this.#pending?.(e);
    });
  }

  run(input: Buffer): Promise<Buffer> {
    const next = this.#queue.then(
      () =>
        new Promise<Buffer>((resolve, reject) => {
          if (this.#failed) return reject(this.#failed);
          this.#pending = reject;
          this.z.write(input);
          this.z.flush(constants.Z_SYNC_FLUSH, () => {
            this.#pending = undefined;
            if (this.#failed) return reject(this.#failed);
            const out = Buffer.concat(this.#out);
            this.#out = [];
            this.#outBytes = 0;
            resolve(out);
          });
        }),
    );
    this.#queue = next.catch(() => undefined);
    return next;
  }

  close(): void {
    this.z.close();
  }
}

/** Reads the header blocks one side of a connection sent. */
export class HeaderBlockInflater {
  readonly #z = new HeaderZlib(createInflate({ dictionary: SPDY3_DICTIONARY }));

  async inflate(block: Buffer): Promise<SpdyHeaders> {
    return parseNameValueBlock(await this.#z.run(block));
  }

  close(): void {
    this.#z.close();
  }
}

/** Writes the header blocks of one side of a connection. */
export class HeaderBlockDeflater {
  readonly #z = new HeaderZlib(createDeflate({ dictionary: SPDY3_DICTIONARY }));

  deflate(headers: Record<string, string | string[]>): Promise<Buffer> {
    return this.#z.run(encodeNameValueBlock(headers));
  }

  close(): void {
    this.#z.close();
  }
}

function controlFrame(type: number, flags: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt16BE(0x8000 | SPDY_VERSION, 0);
  head.writeUInt16BE(type, 2);
  head[4] = flags;
  head.writeUIntBE(payload.length, 5, 3);
  return Buffer.concat([head, payload]);
}

function u32s(...values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => b.writeUInt32BE(v >>> 0, i * 4));
  return b;
}

export function createSynStream(streamId: number, headerBlock: Buffer, flags = 0): Buffer {
  return controlFrame(SpdyType.SynStream, flags, Buffer.concat([u32s(streamId, 0), Buffer.from([0, 0]), headerBlock]));
}

export function createSynReply(streamId: number, headerBlock: Buffer, flags = 0): Buffer {
  return controlFrame(SpdyType.SynReply, flags, Buffer.concat([u32s(streamId), headerBlock]));
}

export function createRstStream(streamId: number, status: number): Buffer {
  return controlFrame(SpdyType.RstStream, 0, u32s(streamId, status));
}

export function createPing(id: number): Buffer {
  return controlFrame(SpdyType.Ping, 0, u32s(id));
}

export function createGoAway(lastGoodStreamId: number, status = 0): Buffer {
  return controlFrame(SpdyType.GoAway, 0, u32s(lastGoodStreamId, status));
}

export function createDataFrame(streamId: number, payload: Buffer, flags = 0): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(streamId & 0x7fffffff, 0);
  head[4] = flags;
  head.writeUIntBE(payload.length, 5, 3);
  return Buffer.concat([head, payload]);
}
