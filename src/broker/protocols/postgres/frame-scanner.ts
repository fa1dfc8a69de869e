import { codeName } from '../../../lib/pg-wire/message-codes.js';

/** Largest frame accepted from a backend (PostgreSQL's own limit for a field is 1 GiB). */
export const MAX_BACKEND_FRAME = 1024 * 1024 * 1024;
/** Largest frame accepted from a client; a bigger one is refused as a protocol violation. */
export const MAX_CLIENT_FRAME = 256 * 1024 * 1024;

/** A complete frame someone asked for. `bytes` is the whole frame; `body` follows type and length. */
export interface ScannedFrame {
  code: number;
  bytes: Buffer;
  body: Buffer;
}

/**
 * What `split` returns, in stream order: untouched slices of the input, complete wanted frames, and runs (several
 * consecutive complete frames of one `runs` code that lie inside one chunk, as one view of it).
 */
export type StreamPiece = { kind: 'raw'; bytes: Buffer } | ({ kind: 'frame' } & ScannedFrame) | { kind: 'run'; code: number; bytes: Buffer };

/** The stream broke the framing rules (length below 4 or over the cap). */
export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

export interface FrameScannerOptions {
  /** Which type bytes the caller needs decoded; the rest only have their boundaries tracked. */
  wanted: ReadonlySet<number>;
  /** Largest acceptable length field (which counts itself). */
  maxLength: number;
  /**
   * Wanted codes whose consecutive frames `split` hands out as one `run` piece when they lie inside one chunk (the
   * DataRows of a result under a mask plan: one piece per chunk instead of one object and views per row). A frame
   * that spans chunks still comes as a `frame`.
   */
  runs?: ReadonlySet<number>;
}

/**
 * Finds frame boundaries (1-byte type + int32 length) across arbitrary chunks without copying frames
 * nobody asked for. Only wanted frames are accumulated, and only when they span chunks; a wanted frame
 * inside one chunk is returned as a view of that chunk.
 *
 * Two ways to use it:
 * - `observe(chunk)`: the caller forwards the chunk as it is and gets the wanted frames that completed.
 * - `split(chunk)`: the caller gets raw slices and wanted frames in stream order, so it can act on a
 *   frame before forwarding it. The bytes of a wanted frame that is still incomplete are held back
 *   until it completes.
 */
export class FrameScanner {
  readonly #wanted: ReadonlySet<number>;
  readonly #maxLength: number;
  readonly #runs: ReadonlySet<number> | undefined;
  readonly #header = Buffer.alloc(5);
  #headerLen = 0;
  #inFrame = false;
  #code = 0;
  #isWanted = false;
  /** Body bytes still to come for the current frame. */
  #remaining = 0;
  /** Bytes of the current frame seen so far (header included). */
  #consumed = 0;
  /** Earlier chunks' bytes of the current frame, when it is wanted. */
  #parts: Buffer[] = [];
  #failed: FrameError | undefined;

  constructor(options: FrameScannerOptions) {
    this.#wanted = options.wanted;
    this.#maxLength = options.maxLength;
    this.#runs = options.runs && options.runs.size > 0 ? options.runs : undefined;
  }

  /** True when the bytes seen so far end exactly on a frame boundary. */
  get atBoundary(): boolean {
    return !this.#inFrame;
  }

  /** True when an incomplete wanted frame is held back: what `split` handed out ends on a frame boundary. */
  get holding(): boolean {
    return this.#inFrame && this.#isWanted;
  }

  /** Returns the wanted frames that completed in this chunk. Throws FrameError on a bad length. */
  observe(chunk: Buffer): ScannedFrame[] {
    const frames: ScannedFrame[] = [];
    this.#scan(chunk, (code, assembled, start, end) => {
      const bytes = assembled ?? chunk.subarray(start, end);
      frames.push({ code, bytes, body: bytes.subarray(5) });
    });
    return frames;
  }

  /**
   * Returns the chunk cut into raw slices (never copied) and complete wanted frames, in order. On a bad
   * length it throws FrameError; the pieces before the bad frame are lost with it, as the session ends.
   */
  split(chunk: Buffer): StreamPiece[] {
    const pieces: StreamPiece[] = [];
    let rawFrom = 0;
    // The run being gathered: frames of `runCode` from runStart to rawFrom, handed out when something else comes.
    let runCode = -1;
    let runStart = 0;
    const runs = this.#runs;
    const endRun = () => {
      pieces.push({ kind: 'run', code: runCode, bytes: chunk.subarray(runStart, rawFrom) });
      runCode = -1;
    };
    const pendingStart = this.#scan(chunk, (code, bytes, start, end) => {
      if (runCode !== -1 && (code !== runCode || start !== rawFrom)) endRun();
      if (start > rawFrom) pieces.push({ kind: 'raw', bytes: chunk.subarray(rawFrom, start) });
      if (runs?.has(code) && bytes === undefined) {
        if (runCode === -1) {
          runCode = code;
          runStart = start;
        }
      } else {
        bytes ??= chunk.subarray(start, end);
        pieces.push({ kind: 'frame', code, bytes, body: bytes.subarray(5) });
      }
      rawFrom = end;
    });
    if (runCode !== -1) endRun();
    // A wanted frame still incomplete at the end is held back from its start; anything else goes now.
    const rawTo = pendingStart ?? chunk.length;
    if (rawTo > rawFrom) pieces.push({ kind: 'raw', bytes: chunk.subarray(rawFrom, rawTo) });
    return pieces;
  }

  /**
   * Walks the chunk. Calls `onFrame` for each wanted frame that completes, with its start (0 when it
   * began in an earlier chunk) and end offsets in this chunk, and its bytes only when they had to be put
   * together from several chunks (otherwise they are chunk[start, end)). Returns the offset where an
   * incomplete wanted frame starts in this chunk, if one is pending at the end.
   */
  #scan(chunk: Buffer, onFrame: (code: number, bytes: Buffer | undefined, start: number, end: number) => void): number | undefined {
    if (this.#failed) throw this.#failed;
    const n = chunk.length;
    let pos = 0;
    let start = 0;
    while (pos < n) {
      if (!this.#inFrame && pos + 5 <= n) {
        // The common case, a whole header in this chunk: read it in place.
        const length = chunk.readInt32BE(pos + 1);
        const code = chunk[pos];
        if (length < 4 || length > this.#maxLength) {
          this.#code = code;
          this.#failed = new FrameError(`invalid length ${length} in message of type ${codeName(code)}`);
          throw this.#failed;
        }
        const end = pos + 1 + length;
        const wanted = this.#wanted.has(code);
        if (end <= n) {
          if (wanted) onFrame(code, undefined, pos, end);
          pos = end;
          continue;
        }
        start = pos;
        this.#inFrame = true;
        this.#headerLen = 5;
        this.#code = code;
        this.#isWanted = wanted;
        this.#remaining = end - n;
        this.#consumed = n - pos;
        pos = n;
        break;
      }
      if (!this.#inFrame) {
        start = pos;
        this.#inFrame = true;
        this.#headerLen = 0;
        this.#consumed = 0;
        this.#code = chunk[pos];
        this.#isWanted = this.#wanted.has(this.#code);
      }
      if (this.#headerLen < 5) {
        const take = Math.min(5 - this.#headerLen, n - pos);
        chunk.copy(this.#header, this.#headerLen, pos, pos + take);
        this.#headerLen += take;
        this.#consumed += take;
        pos += take;
        if (this.#headerLen < 5) break;
        const length = this.#header.readInt32BE(1);
        if (length < 4 || length > this.#maxLength) {
          this.#failed = new FrameError(`invalid length ${length} in message of type ${codeName(this.#code)}`);
          throw this.#failed;
        }
        this.#remaining = length - 4;
      }
      const take = Math.min(this.#remaining, n - pos);
      this.#remaining -= take;
      this.#consumed += take;
      pos += take;
      if (this.#remaining > 0) break;
      this.#inFrame = false;
      if (this.#isWanted) {
        let bytes: Buffer | undefined;
        if (this.#parts.length > 0) {
          this.#parts.push(chunk.subarray(0, pos));
          bytes = Buffer.concat(this.#parts, this.#consumed);
          this.#parts = [];
        }
        onFrame(this.#code, bytes, start, pos);
      }
    }
    if (this.#inFrame && this.#isWanted) {
      // Copied because the chunk's memory may be reused by whoever handed it over.
      this.#parts.push(Buffer.from(chunk.subarray(start, n)));
      return start;
    }
    return undefined;
  }
}
