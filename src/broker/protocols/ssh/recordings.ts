import { StringDecoder } from 'node:string_decoder';
import type { SessionRecorder } from '../../recording/recorder.js';
import { maskText, type DetectorName, type MaskKey, type MaskStrategy } from '../../../policy/masking.js';

/** Masking of recorded (and exec) output: the connection's detectors. */
export interface OutputMask {
  detectors: readonly DetectorName[];
  strategy: MaskStrategy;
  key: MaskKey;
}

export function applyMask(text: string, mask: OutputMask | undefined): string {
  if (!mask || text.length === 0) return text;
  const r = maskText(text, mask.detectors, mask.strategy, mask.key);
  return r.text ?? '[MASKED]';
}

/** Batches are written every FLUSH_MS or once this much is pending, so a busy terminal is not one row per byte. */
export const FLUSH_MS = 100;
export const FLUSH_BYTES = 16 * 1024;

/**
 * A terminal (a session channel with a PTY) recorded as asciicast v2: a `terminal` event carries the header
 * (width, height, start timestamp, TERM), then `cast` events carry `[seconds, "o"|"i"|"r", data]` triples
 * with the real timing, batched. Output and input are masked batch by batch with the connection's detectors
 * (a value split across two batches can slip through: terminals are recorded best effort, exec output by line).
 */
export class TerminalRecording {
  readonly #recorder: SessionRecorder;
  readonly #channel: number;
  readonly #mask?: OutputMask;
  readonly #started = performance.now();
  readonly #decoders = { o: new StringDecoder('utf8'), i: new StringDecoder('utf8') };
  #pending: Array<[number, 'o' | 'i' | 'r', string]> = [];
  #pendingBytes = 0;
  #timer?: NodeJS.Timeout;
  #writes: Promise<void> = Promise.resolve();

  private constructor(recorder: SessionRecorder, channel: number, mask?: OutputMask) {
    this.#recorder = recorder;
    this.#channel = channel;
    this.#mask = mask;
  }

  static async start(recorder: SessionRecorder, channel: number, o: { width: number; height: number; term?: string; command?: string; mask?: OutputMask }): Promise<TerminalRecording> {
    await recorder.record('terminal', {
      channel, version: 2, width: o.width, height: o.height, timestamp: Math.floor(Date.now() / 1000),
      ...(o.term ? { term: o.term } : {}), ...(o.command ? { command: o.command } : {}),
    });
    return new TerminalRecording(recorder, channel, o.mask);
  }

  #elapsed(): number {
    return Math.round(performance.now() - this.#started) / 1000;
  }

  output(chunk: Buffer): void {
    this.#push('o', this.#decoders.o.write(chunk), chunk.length);
  }

  input(chunk: Buffer): void {
    this.#push('i', this.#decoders.i.write(chunk), chunk.length);
  }

  resize(cols: number, rows: number): void {
    this.#push('r', `${cols}x${rows}`, 8);
  }

  #push(kind: 'o' | 'i' | 'r', data: string, bytes: number): void {
    if (data.length === 0) return;
    const last = this.#pending.at(-1);
    const t = this.#elapsed();
    // Chunks of one kind within a few milliseconds are one event: timing stays true, rows stay few.
    if (last && last[1] === kind && kind !== 'r' && t - last[0] < 0.005) last[2] += data;
    else this.#pending.push([t, kind, data]);
    this.#pendingBytes += bytes;
    if (this.#pendingBytes >= FLUSH_BYTES) this.flush();
    else this.#timer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }

  /** Writes what is pending; resolves when every batch so far is stored. */
  flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#pending.length > 0) {
      const events = this.#pending.map(([t, k, d]) => [t, k, k === 'r' ? d : applyMask(d, this.#mask)]);
      this.#pending = [];
      this.#pendingBytes = 0;
      const write = this.#recorder.record('cast', { channel: this.#channel, events });
      this.#writes = this.#writes.then(() => write).catch(() => undefined);
    }
    return this.#writes;
  }

  async close(): Promise<void> {
    this.#push('o', this.#decoders.o.end(), 0);
    await this.flush();
  }
}

/** Most output an exec request keeps in its recording; the `exit` event says how much was dropped. */
export const EXEC_OUTPUT_CAP = 256 * 1024;

/**
 * Exec output recorded as `output` events (`{ channel, stream, data }`), masked line by line and batched.
 * A line is held until its newline (or 16 KB) so a detector sees whole values.
 */
export class ExecOutputRecording {
  readonly #recorder: SessionRecorder;
  readonly #channel: number;
  readonly #mask?: OutputMask;
  readonly #streams = {
    stdout: { decoder: new StringDecoder('utf8'), partial: '' },
    stderr: { decoder: new StringDecoder('utf8'), partial: '' },
  };
  #pending: Array<{ stream: 'stdout' | 'stderr'; data: string }> = [];
  #pendingBytes = 0;
  #timer?: NodeJS.Timeout;
  #writes: Promise<void> = Promise.resolve();
  bytes = 0;
  recordedBytes = 0;
  binary = false;

  constructor(recorder: SessionRecorder, channel: number, mask?: OutputMask) {
    this.#recorder = recorder;
    this.#channel = channel;
    this.#mask = mask;
  }

  get truncated(): boolean {
    return this.bytes > this.recordedBytes;
  }

  write(stream: 'stdout' | 'stderr', chunk: Buffer): void {
    this.bytes += chunk.length;
    if (this.binary || this.recordedBytes >= EXEC_OUTPUT_CAP) return;
    // Binary output (rsync, tar) is not text: recording it as text would garble it; note it and stop.
    if (chunk.includes(0)) {
      this.binary = true;
      return;
    }
    const s = this.#streams[stream];
    const text = s.partial + s.decoder.write(chunk.subarray(0, EXEC_OUTPUT_CAP - this.recordedBytes));
    this.recordedBytes += Math.min(chunk.length, EXEC_OUTPUT_CAP - this.recordedBytes);
    const cut = text.length > FLUSH_BYTES ? text.length : text.lastIndexOf('\n') + 1;
    s.partial = text.slice(cut);
    if (cut > 0) this.#queue(stream, text.slice(0, cut));
  }

  #queue(stream: 'stdout' | 'stderr', data: string): void {
    const last = this.#pending.at(-1);
    if (last && last.stream === stream) last.data += data;
    else this.#pending.push({ stream, data });
    this.#pendingBytes += data.length;
    if (this.#pendingBytes >= FLUSH_BYTES) void this.flush();
    else this.#timer ??= setTimeout(() => void this.flush(), FLUSH_MS);
  }

  flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const item of this.#pending.splice(0)) {
      const write = this.#recorder.record('output', { channel: this.#channel, stream: item.stream, data: applyMask(item.data, this.#mask) });
      this.#writes = this.#writes.then(() => write).catch(() => undefined);
    }
    this.#pendingBytes = 0;
    return this.#writes;
  }

  async close(): Promise<void> {
    for (const stream of ['stdout', 'stderr'] as const) {
      const s = this.#streams[stream];
      const rest = s.partial + s.decoder.end();
      s.partial = '';
      if (rest) this.#queue(stream, rest);
    }
    await this.flush();
  }
}
