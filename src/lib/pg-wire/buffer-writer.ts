/**
 * Builds one protocol message at a time. The first five bytes are reserved for the type byte and the
 * int32 length, which `frame()` (typed messages) or `untyped()` (startup-phase messages) back-fill,
 * so callers chain field writes and never count bytes themselves:
 *
 *     new Writer().addCString(sql).frame('Q')
 */
export class Writer {
  #buf: Buffer;
  #offset = HEADER;

  constructor(initialSize = 256) {
    this.#buf = Buffer.allocUnsafe(Math.max(initialSize, HEADER + 16));
  }

  #ensure(extra: number): void {
    const need = this.#offset + extra;
    if (need <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < need) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.#buf.copy(next, 0, 0, this.#offset);
    this.#buf = next;
  }

  addByte(value: number): this {
    this.#ensure(1);
    this.#buf[this.#offset++] = value & 0xff;
    return this;
  }

  addInt16(value: number): this {
    this.#ensure(2);
    this.#offset = this.#buf.writeInt16BE(value, this.#offset);
    return this;
  }

  addInt32(value: number): this {
    this.#ensure(4);
    this.#offset = this.#buf.writeInt32BE(value, this.#offset);
    return this;
  }

  /** A UTF-8 string followed by its NUL terminator. */
  addCString(value: string): this {
    const len = Buffer.byteLength(value, 'utf8');
    this.#ensure(len + 1);
    this.#offset += this.#buf.write(value, this.#offset, 'utf8');
    this.#buf[this.#offset++] = 0;
    return this;
  }

  /** A UTF-8 string without terminator (its length is implied by the frame or a preceding field). */
  addString(value: string): this {
    const len = Buffer.byteLength(value, 'utf8');
    this.#ensure(len);
    this.#offset += this.#buf.write(value, this.#offset, 'utf8');
    return this;
  }

  addBytes(value: Uint8Array): this {
    this.#ensure(value.length);
    this.#buf.set(value, this.#offset);
    this.#offset += value.length;
    return this;
  }

  /** Finishes a typed message: type byte, int32 length (which counts itself, not the type), body. */
  frame(code: string | number): Buffer {
    const buf = this.#buf;
    buf[0] = typeof code === 'string' ? code.charCodeAt(0) : code;
    buf.writeInt32BE(this.#offset - 1, 1);
    const out = Buffer.from(buf.subarray(0, this.#offset));
    this.#offset = HEADER;
    return out;
  }

  /** Finishes a startup-phase message, which has no type byte: int32 length then body. */
  untyped(): Buffer {
    const buf = this.#buf;
    buf.writeInt32BE(this.#offset - 1, 1);
    const out = Buffer.from(buf.subarray(1, this.#offset));
    this.#offset = HEADER;
    return out;
  }
}

const HEADER = 5;
