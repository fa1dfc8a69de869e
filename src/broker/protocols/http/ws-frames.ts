/**
 * A WebSocket frame reader that watches a byte stream without changing it: fed every chunk of one direction of an
 * upgraded connection, it hands out whole messages (fragments joined, client masks removed). The proxy still
 * forwards the original bytes; this is only for recording.
 * @see https://www.rfc-editor.org/rfc/rfc6455#section-5.2
 */
import { payloadLength } from '../../../lib/ws-frame-codec.js';

export const WsOpcode = { Continuation: 0, Text: 1, Binary: 2, Close: 8, Ping: 9, Pong: 10 } as const;

export interface WsMessage {
  opcode: number;
  payload: Buffer;
}

const EMPTY = Buffer.alloc(0);

/** Messages larger than this are cut to it (the recording keeps the head; the stream is untouched). */
export const MAX_OBSERVED_MESSAGE = 1024 * 1024;

export class WsFrameObserver {
  #buf: Buffer = Buffer.alloc(0);
  /** Chunks of an unfinished frame (the first holds its start), joined once the frame is whole. */
  #pending: Buffer[] = [];
  #pendingLength = 0;
  /** Bytes the unfinished frame needs in all, once its header is known (0: not known yet). */
  #need = 0;
  #fragments: Buffer[] = [];
  #fragmentBytes = 0;
  #fragmentOpcode = 0;
  /** Set once the stream stops looking like WebSocket frames; nothing more is reported. */
  broken = false;

  /**
   * `stream: true` hands out each data frame as it arrives (continuations with their message's opcode), uncapped:
   * for byte streams carried over WebSocket (SPDY for port-forward), where message boundaries mean nothing.
   */
  constructor(
    private readonly onMessage: (m: WsMessage) => void,
    private readonly o: { stream?: boolean } = {},
  ) {}

  push(chunk: Buffer): void {
    if (this.broken) return;
    let b = chunk;
    if (this.#pendingLength > 0) {
      // A large frame comes in many chunks: they are kept and joined once, when it is whole (joining at every chunk
      // copied what came before again each time, quadratic in the frame's size).
      this.#pending.push(chunk);
      this.#pendingLength += chunk.length;
      if (this.#need > this.#pendingLength) return;
      b = Buffer.concat(this.#pending, this.#pendingLength);
      this.#pending = [];
      this.#pendingLength = 0;
    }
    this.#buf = b;
    for (;;) {
      const frame = this.#nextFrame();
      if (!frame) break;
      this.#frame(frame.fin, frame.opcode, frame.payload);
    }
    if (this.#buf.length > 0 && !this.broken) {
      this.#pending = [this.#buf];
      this.#pendingLength = this.#buf.length;
    }
    this.#buf = EMPTY;
  }

  #nextFrame(): { fin: boolean; opcode: number; payload: Buffer } | undefined {
    const b = this.#buf;
    this.#need = 0;
    if (b.length < 2) return undefined;
    const fin = (b[0] & 0x80) !== 0;
    const opcode = b[0] & 0x0f;
    const masked = (b[1] & 0x80) !== 0;
    const size = payloadLength(b, 0);
    if (size === undefined) return undefined;
    if (size === null) {
      this.broken = true;
      return undefined;
    }
    const len = size.length;
    let at = size.header;
    const maskAt = at;
    if (masked) at += 4;
    if (b.length < at + len) {
      this.#need = at + len;
      return undefined;
    }
    let payload = b.subarray(at, at + len);
    if (masked) {
      const key = b.subarray(maskAt, maskAt + 4);
      const out = Buffer.allocUnsafe(len);
      for (let i = 0; i < len; i++) out[i] = payload[i] ^ key[i & 3];
      payload = out;
    } else {
      payload = Buffer.from(payload);
    }
    this.#buf = b.subarray(at + len);
    return { fin, opcode, payload };
  }

  #frame(fin: boolean, opcode: number, payload: Buffer): void {
    if (opcode >= 8) {
      this.onMessage({ opcode, payload });
      return;
    }
    if (opcode !== WsOpcode.Continuation) this.#fragmentOpcode = opcode;
    if (this.o.stream) {
      this.onMessage({ opcode: this.#fragmentOpcode, payload });
      return;
    }
    if (opcode !== WsOpcode.Continuation) {
      this.#fragments = [];
      this.#fragmentBytes = 0;
    }
    if (this.#fragmentBytes < MAX_OBSERVED_MESSAGE) {
      const room = MAX_OBSERVED_MESSAGE - this.#fragmentBytes;
      const part = payload.length > room ? payload.subarray(0, room) : payload;
      this.#fragments.push(part);
      this.#fragmentBytes += part.length;
    }
    if (fin) {
      const whole = this.#fragments.length === 1 ? this.#fragments[0] : Buffer.concat(this.#fragments);
      this.#fragments = [];
      this.#fragmentBytes = 0;
      this.onMessage({ opcode: this.#fragmentOpcode, payload: whole });
    }
  }
}
