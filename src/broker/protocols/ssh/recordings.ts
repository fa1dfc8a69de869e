import { StringDecoder } from 'node:string_decoder';
import type { SessionRecorder } from '../../recording/recorder.js';
import { findSensitiveSpans, hashValue, maskText, partialMask, type DetectorName, type MaskKey, type MaskStrategy } from '../../../policy/masking.js';

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

/**
 * Masks text that arrived in several pieces as one string, so a value typed or printed a character at a time is
 * still found whole. A value's replacement goes into the piece where it starts; the rest of it is cut from the
 * pieces it spans (which keep their places, so timing survives).
 */
export function maskAcross(parts: readonly string[], mask: OutputMask | undefined): string[] {
  if (!mask || parts.length === 0) return [...parts];
  const whole = parts.join('');
  const spans = findSensitiveSpans(whole, mask.detectors);
  if (spans.length === 0) return [...parts];
  const replacement = (start: number, end: number, detector: string) => {
    const raw = whole.slice(start, end);
    if (mask.strategy === 'redact') return `[REDACTED:${detector}]`;
    if (mask.strategy === 'partial') return partialMask(raw);
    if (mask.strategy === 'hash') return hashValue(raw, mask.key);
    return '[MASKED]';
  };
  const out: string[] = [];
  let offset = 0;
  for (const part of parts) {
    const end = offset + part.length;
    let text = '';
    let pos = offset;
    for (const h of spans) {
      if (h.end <= offset || h.start >= end) continue;
      if (h.start > pos) text += whole.slice(pos, h.start);
      if (h.start >= offset) text += replacement(h.start, h.end, h.detector);
      pos = Math.min(h.end, end);
    }
    if (pos < end) text += whole.slice(pos, end);
    out.push(text);
    offset = end;
  }
  return out;
}

/** Batches are written every FLUSH_MS or once this much is pending, so a busy terminal is not one row per byte. */
export const FLUSH_MS = 100;
export const FLUSH_BYTES = 16 * 1024;
/**
 * With detectors, the line still being typed or printed is held back from a batch (so a value is never cut in
 * two between batches) — for at most this long, or FLUSH_BYTES, before it is written as it is.
 */
export const HOLD_OPEN_LINE_MS = 2_000;

type CastEvent = [number, 'o' | 'i' | 'r', string];

/**
 * Where the held part of a batch starts: the earliest point after which a kind ('o' or 'i') has no line break
 * yet. Everything from there on (any kind, to keep the order) waits for the next batch.
 */
function openLineStart(events: readonly CastEvent[]): { index: number; at: number } | undefined {
  let start: { index: number; at: number } | undefined;
  for (const kind of ['o', 'i'] as const) {
    let first: { index: number; at: number } | undefined;
    for (let i = events.length - 1; i >= 0; i--) {
      const [, k, d] = events[i];
      if (k !== kind) continue;
      const brk = Math.max(d.lastIndexOf('\n'), d.lastIndexOf('\r'));
      if (brk >= 0) {
        first = brk + 1 < d.length ? { index: i, at: brk + 1 } : first;
        break;
      }
      first = { index: i, at: 0 };
    }
    if (first && (!start || first.index < start.index || (first.index === start.index && first.at < start.at))) start = first;
  }
  return start;
}

/**
 * A terminal (a session channel with a PTY) recorded as asciicast v2: a `terminal` event carries the header
 * (width, height, start timestamp, TERM), then `cast` events carry `[seconds, "o"|"i"|"r", data]` triples
 * with the real timing, batched. Output and input are masked with the connection's detectors across events (a
 * value echoed a keystroke at a time is found whole) and across batches (the open line waits for its line break,
 * up to HOLD_OPEN_LINE_MS or FLUSH_BYTES; a value longer than that, or spread over lines, can still slip through).
 */
export class TerminalRecording {
  readonly #recorder: SessionRecorder;
  readonly #channel: number;
  readonly #mask?: OutputMask;
  readonly #started = performance.now();
  readonly #decoders = { o: new StringDecoder('utf8'), i: new StringDecoder('utf8') };
  #pending: CastEvent[] = [];
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

  /**
   * Writes what is pending (with detectors, all but the open line, unless `all` or it has waited long enough);
   * resolves when every batch so far is stored.
   */
  flush(all = false): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    let emit = this.#pending;
    let hold: CastEvent[] = [];
    const open = this.#mask && !all ? openLineStart(emit) : undefined;
    if (open && this.#pendingBytes < FLUSH_BYTES) {
      const [t, kind, data] = emit[open.index];
      const held = [...(open.at > 0 ? [[t, kind, data.slice(open.at)] as CastEvent] : [emit[open.index]]), ...emit.slice(open.index + 1)];
      if (this.#elapsed() - held[0][0] < HOLD_OPEN_LINE_MS / 1000) {
        hold = held;
        emit = [...emit.slice(0, open.index), ...(open.at > 0 ? [[t, kind, data.slice(0, open.at)] as CastEvent] : [])];
      }
    }
    if (emit.length > 0) {
      const masked = new Map<'o' | 'i', string[]>();
      for (const k of ['o', 'i'] as const) masked.set(k, maskAcross(emit.filter((e) => e[1] === k).map((e) => e[2]), this.#mask));
      const next = { o: 0, i: 0 };
      const events = emit.map(([t, k, d]) => [t, k, k === 'r' ? d : masked.get(k)![next[k]++]]);
      const write = this.#recorder.record('cast', { channel: this.#channel, events });
      this.#writes = this.#writes.then(() => write).catch(() => undefined);
    }
    this.#pending = hold;
    this.#pendingBytes = hold.reduce((n, e) => n + e[2].length, 0);
    if (hold.length > 0) this.#timer = setTimeout(() => void this.flush(), FLUSH_MS);
    return this.#writes;
  }

  async close(): Promise<void> {
    this.#push('o', this.#decoders.o.end(), 0);
    await this.flush(true);
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
