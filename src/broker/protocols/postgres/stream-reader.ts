import type { Readable } from 'node:stream';

/** Buffered bytes above which the reader pauses its stream until a read consumes them. */
const PAUSE_ABOVE = 64 * 1024;

/**
 * Awaitable reads over a stream for the handshake phases (client startup, backend authentication),
 * where messages are few and strictly alternate. `release()` hands the stream back, paused, with the
 * bytes that arrived beyond what was read, so the relay can take over without losing any.
 */
export class StreamReader {
  readonly #stream: Readable;
  #buf: Buffer = Buffer.alloc(0);
  #ended = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;
  readonly #onData = (chunk: Buffer): void => {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    if (this.#buf.length > PAUSE_ABOVE) this.#stream.pause();
    this.#notify();
  };
  readonly #onEnd = (): void => {
    this.#ended = true;
    this.#notify();
  };
  readonly #onError = (err: Error): void => {
    this.#error = err;
    this.#notify();
  };

  constructor(stream: Readable) {
    this.#stream = stream;
    stream.on('data', this.#onData);
    stream.on('end', this.#onEnd);
    stream.on('close', this.#onEnd);
    stream.on('error', this.#onError);
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Waits until `n` bytes are buffered; rejects if the stream ends or fails first. */
  async #fill(n: number): Promise<void> {
    while (this.#buf.length < n) {
      if (this.#error) throw this.#error;
      if (this.#ended) throw new StreamEndedError(this.#buf.length);
      this.#stream.resume();
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /** Exactly `n` bytes. */
  async read(n: number): Promise<Buffer> {
    await this.#fill(n);
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** Bytes buffered but not yet read. */
  get buffered(): number {
    return this.#buf.length;
  }

  /** Stops listening, pauses the stream and returns the unread bytes. */
  release(): Buffer {
    this.#stream.off('data', this.#onData);
    this.#stream.off('end', this.#onEnd);
    this.#stream.off('close', this.#onEnd);
    this.#stream.off('error', this.#onError);
    this.#stream.pause();
    const rest = this.#buf;
    this.#buf = Buffer.alloc(0);
    return rest;
  }
}

/** The stream ended before a whole message arrived. */
export class StreamEndedError extends Error {
  readonly buffered: number;
  constructor(buffered: number) {
    super(buffered === 0 ? 'connection closed' : 'connection closed in the middle of a message');
    this.name = new.target.name;
    this.buffered = buffered;
  }
}
