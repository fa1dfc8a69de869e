import { protocolViolation } from './errors.js';

/**
 * Reads the fields of one message body. Reading past the end or a string without its NUL terminator
 * raises a protocol violation rather than returning garbage.
 */
export class Reader {
  readonly #buf: Buffer;
  #offset: number;

  constructor(buf: Buffer, offset = 0) {
    this.#buf = buf;
    this.#offset = offset;
  }

  get remaining(): number {
    return this.#buf.length - this.#offset;
  }

  #need(n: number, what: string): void {
    if (n < 0 || this.#offset + n > this.#buf.length) throw protocolViolation(`message too short for ${what}`);
  }

  byte(): number {
    this.#need(1, 'a byte');
    return this.#buf[this.#offset++];
  }

  int16(): number {
    this.#need(2, 'an int16');
    const v = this.#buf.readInt16BE(this.#offset);
    this.#offset += 2;
    return v;
  }

  int32(): number {
    this.#need(4, 'an int32');
    const v = this.#buf.readInt32BE(this.#offset);
    this.#offset += 4;
    return v;
  }

  uint32(): number {
    this.#need(4, 'an int32');
    const v = this.#buf.readUInt32BE(this.#offset);
    this.#offset += 4;
    return v;
  }

  /** A NUL-terminated UTF-8 string. */
  cstring(): string {
    const end = this.#buf.indexOf(0, this.#offset);
    if (end < 0) throw protocolViolation('string without terminator');
    const s = this.#buf.toString('utf8', this.#offset, end);
    this.#offset = end + 1;
    return s;
  }

  /** `n` raw bytes, as a view (not a copy). */
  bytes(n: number): Buffer {
    this.#need(n, `${n} bytes`);
    const v = this.#buf.subarray(this.#offset, this.#offset + n);
    this.#offset += n;
    return v;
  }

  /** Everything left, as a view. */
  rest(): Buffer {
    const v = this.#buf.subarray(this.#offset);
    this.#offset = this.#buf.length;
    return v;
  }

  string(n: number): string {
    return this.bytes(n).toString('utf8');
  }
}
