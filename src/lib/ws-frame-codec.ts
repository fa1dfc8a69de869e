/**
 * The WebSocket framing (RFC 6455 §5.2) of a tunnel's data path, for the side that carries a byte stream over it
 * without a general-purpose WebSocket library: each frame is built as one buffer (one write() per message, where a
 * header and payload written apart cost a writev and the stream machinery around it), and frames are read without
 * copying payloads that arrived whole. Only what a tunnel uses: data frames (binary; text is taken as bytes too, as
 * `ws` streams took it), ping/pong and close; extensions (RSV bits) are protocol errors.
 * @see https://www.rfc-editor.org/rfc/rfc6455#section-5.2
 */
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';

/** The Sec-WebSocket-Accept a server answers to the client's Sec-WebSocket-Key (RFC 6455 §4.2.2). */
export function webSocketAccept(key: string): string {
  return createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
}

export const WsOp = { Continuation: 0x0, Text: 0x1, Binary: 0x2, Close: 0x8, Ping: 0x9, Pong: 0xa } as const;

/** Above this a payload is written after its header rather than copied behind it (see encodeFrame). */
const COPY_LIMIT = 64 * 1024;

/**
 * One final frame of `opcode` carrying `payload`. A client's frame is marked masked with the all-zero key (the
 * payload is sent as it is; see ws-transport.ts for why), a server's is unmasked. Returns one buffer, or for a large
 * payload the header and the payload itself (no copy of megabytes for one syscall saved).
 */
export function encodeFrame(opcode: number, payload: Buffer, masked: boolean): Buffer | [Buffer, Buffer] {
  const n = payload.length;
  const lengthBytes = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const headerLength = 2 + lengthBytes + (masked ? 4 : 0);
  const whole = n <= COPY_LIMIT;
  const out = Buffer.allocUnsafe(whole ? headerLength + n : headerLength);
  out[0] = 0x80 | opcode;
  out[1] = (masked ? 0x80 : 0) | (lengthBytes === 0 ? n : lengthBytes === 2 ? 126 : 127);
  if (lengthBytes === 2) out.writeUInt16BE(n, 2);
  else if (lengthBytes === 8) {
    out.writeUInt32BE(Math.floor(n / 2 ** 32), 2);
    out.writeUInt32BE(n >>> 0, 6);
  }
  if (masked) out.writeUInt32BE(0, 2 + lengthBytes);
  if (!whole) return [out, payload];
  payload.copy(out, headerLength);
  return out;
}

/** The peer broke the framing rules; `code` is the close code to answer with (1002 protocol error, 1009 too big). */
export class WsFrameError extends Error {
  constructor(message: string, readonly code: number) {
    super(message);
    this.name = new.target.name;
  }
}

export interface WsFrame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

export interface WsFrameDecoderOptions {
  /** Frames from a client must be masked, frames from a server must not be (RFC 6455 §5.1). */
  expectMasked: boolean;
  /** Largest payload of one frame (control frames: 125 bytes, always). */
  maxPayload: number;
}

/**
 * A frame cut between two chunks is copied into a buffer of its own size as its bytes arrive, when it is at most this
 * long (a tunnel's frames are one socket read, 64 KiB); a longer one keeps its chunks and joins them once whole, so a
 * peer that announces a large frame gets no memory for it before it sends the bytes.
 */
const FILL_LIMIT = 256 * 1024;

/**
 * Reads frames out of a byte stream cut anywhere. A frame inside one chunk comes out as a view of that chunk
 * (unmasked in place when its key is not zero: the chunk is the decoder's once pushed); only a frame spanning
 * chunks is copied together, once. Throws WsFrameError on a frame the rules forbid, and keeps throwing it.
 */
export class WsFrameDecoder {
  readonly #o: WsFrameDecoderOptions;
  /** A cut header, or a frame over FILL_LIMIT: its bytes in the chunks they came in (joined once the frame is whole). */
  #pending: Buffer[] = [];
  #pendingLength = 0;
  /**
   * A cut frame of known length (at most FILL_LIMIT): its bytes, header included, copied in as they arrive. Frames
   * of a stream as long as the reads that carry them straddle two reads each (a 64 KiB frame and its header in 64 KiB
   * reads): joining the rest of one read with the next, and copying what is left over again, made 2–2.5 copies of
   * every byte (580 MB of Buffers for an scp of 256 MB through the broker); this makes one, of the cut frame only.
   */
  #frame: Buffer | undefined;
  #filled = 0;
  /** How many bytes the unfinished frame needs in all, once its header has been read (0: not known yet). */
  #need = 0;
  #failed: WsFrameError | undefined;
  /** The opcode of the fragmented message in progress (0: none). */
  #fragmented = 0;

  constructor(options: WsFrameDecoderOptions) {
    this.#o = options;
  }

  /** The frames completed by `chunk`, in order. */
  push(chunk: Buffer): WsFrame[] {
    if (this.#failed) throw this.#failed;
    const frames: WsFrame[] = [];
    let b = chunk;
    if (this.#frame) {
      const frame = this.#frame;
      const n = Math.min(frame.length - this.#filled, chunk.length);
      chunk.copy(frame, this.#filled, 0, n);
      this.#filled += n;
      if (this.#filled < frame.length) return frames;
      this.#frame = undefined;
      this.#decode(frame, frames);
      b = chunk.subarray(n);
    } else if (this.#pendingLength > 0) {
      // A large frame arrives in many chunks: they are kept and joined once, when the frame is whole (joining at
      // every chunk would copy a 16 MiB frame hundreds of times over).
      this.#pending.push(chunk);
      this.#pendingLength += chunk.length;
      if (this.#need > this.#pendingLength) return frames;
      b = Buffer.concat(this.#pending, this.#pendingLength);
      this.#pending = [];
      this.#pendingLength = 0;
    }
    const at = this.#decode(b, frames);
    // Copied: the rest of a frame arrives later, and the chunk's memory may be reused meanwhile.
    if (at < b.length) {
      const rest = b.subarray(at);
      if (this.#need > 0 && this.#need <= FILL_LIMIT) {
        this.#frame = Buffer.allocUnsafe(this.#need);
        this.#filled = rest.copy(this.#frame);
      } else {
        const copy = Buffer.from(rest);
        this.#pending = [copy];
        this.#pendingLength = copy.length;
      }
    }
    return frames;
  }

  /** Decodes the whole frames at the start of `b` into `frames`; returns how many bytes they took. */
  #decode(b: Buffer, frames: WsFrame[]): number {
    let at = 0;
    try {
      for (;;) {
        const used = this.#frameAt(b, at, frames);
        if (used === 0) break;
        at += used;
      }
    } catch (e) {
      if (e instanceof WsFrameError) this.#failed = e;
      throw e;
    }
    return at;
  }

  /** Decodes the frame starting at `at` into `frames`; returns its length, or 0 when it is not complete yet. */
  #frameAt(b: Buffer, at: number, frames: WsFrame[]): number {
    const avail = b.length - at;
    this.#need = 0;
    if (avail < 2) return 0;
    const b0 = b[at]!;
    const b1 = b[at + 1]!;
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    const masked = (b1 & 0x80) !== 0;
    if (b0 & 0x70) throw new WsFrameError('a frame with RSV bits set (no extension was negotiated)', 1002);
    if (masked !== this.#o.expectMasked) throw new WsFrameError(this.#o.expectMasked ? 'an unmasked frame from a client' : 'a masked frame from a server', 1002);
    const control = opcode >= 0x8;
    if (control) {
      if (opcode !== WsOp.Close && opcode !== WsOp.Ping && opcode !== WsOp.Pong) throw new WsFrameError(`unknown opcode 0x${opcode.toString(16)}`, 1002);
      if (!fin) throw new WsFrameError('a fragmented control frame', 1002);
    } else if (opcode === WsOp.Continuation) {
      if (!this.#fragmented) throw new WsFrameError('a continuation frame with no message to continue', 1002);
    } else if (opcode === WsOp.Binary || opcode === WsOp.Text) {
      if (this.#fragmented) throw new WsFrameError('a new message inside a fragmented one', 1002);
    } else {
      throw new WsFrameError(`unknown opcode 0x${opcode.toString(16)}`, 1002);
    }
    const size = payloadLength(b, at);
    if (size === undefined) return 0;
    if (size === null) throw new WsFrameError('a frame length over 2^53', 1009);
    const { length } = size;
    let header = size.header;
    if (control && length > 125) throw new WsFrameError('a control frame over 125 bytes', 1002);
    if (length > this.#o.maxPayload) throw new WsFrameError(`a frame of ${length} bytes (the limit is ${this.#o.maxPayload})`, 1009);
    const keyAt = at + header;
    if (masked) header += 4;
    this.#need = header + length;
    if (avail < header + length) return 0;
    const start = at + header;
    const payload = b.subarray(start, start + length);
    if (masked) {
      const k0 = b[keyAt]!, k1 = b[keyAt + 1]!, k2 = b[keyAt + 2]!, k3 = b[keyAt + 3]!;
      if ((k0 | k1 | k2 | k3) !== 0) {
        const key = [k0, k1, k2, k3];
        for (let i = 0; i < length; i++) payload[i] = payload[i]! ^ key[i & 3]!;
      }
    }
    if (opcode === WsOp.Close) checkClose(payload);
    // A whole text message must be UTF-8 (RFC 6455 §8.1); a fragmented one is passed on as bytes, unchecked.
    else if (opcode === WsOp.Text && fin && !isUtf8(payload)) throw new WsFrameError('a text frame that is not UTF-8', 1007);
    if (!control) this.#fragmented = fin ? 0 : opcode;
    frames.push({ fin, opcode, payload });
    return header + length;
  }
}

/**
 * The payload length of the frame whose header starts at `b[at]`, and the header's length before any masking key:
 * undefined while the header is not all there, null for a length over 2^53 (RFC 6455 §5.2 allows 2^63).
 */
export function payloadLength(b: Buffer, at: number): { length: number; header: number } | undefined | null {
  const avail = b.length - at;
  if (avail < 2) return undefined;
  const short = b[at + 1]! & 0x7f;
  if (short < 126) return { length: short, header: 2 };
  if (short === 126) return avail < 4 ? undefined : { length: b.readUInt16BE(at + 2), header: 4 };
  if (avail < 10) return undefined;
  const high = b.readUInt32BE(at + 2);
  if (high > 0x1fffff) return null;
  return { length: high * 2 ** 32 + b.readUInt32BE(at + 6), header: 10 };
}

/** A close frame's code must be one an endpoint may send (RFC 6455 §7.4), its reason UTF-8. */
function checkClose(payload: Buffer): void {
  if (payload.length === 0) return;
  if (payload.length === 1) throw new WsFrameError('a close frame with a one-byte body', 1002);
  const code = payload.readUInt16BE(0);
  const valid = (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
  if (!valid) throw new WsFrameError(`a close frame with the invalid code ${code}`, 1002);
  if (!isUtf8(payload.subarray(2))) throw new WsFrameError('a close reason that is not UTF-8', 1007);
}

/** A close frame's payload: the code, then a reason of at most 123 bytes. */
export function closePayload(code: number, reason = ''): Buffer {
  const text = Buffer.from(reason, 'utf8').subarray(0, 123);
  const out = Buffer.allocUnsafe(2 + text.length);
  out.writeUInt16BE(code, 0);
  text.copy(out, 2);
  return out;
}
