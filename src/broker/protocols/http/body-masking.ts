/**
 * Response bodies on their way to the client: which ones are masked and how. A JSON document is buffered (up to
 * the mask's `maxBytes`) and masked whole; a stream of JSON lines (a Kubernetes watch, NDJSON) and text
 * (`kubectl logs -f`) are masked line by line as they flow, so a watch never waits for its end.
 * Compressed bodies that must be masked are decompressed here (the proxy already asks for `identity`).
 */
import { Transform, type TransformCallback } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import { maskText, type DetectorName, type MaskKey, type MaskStrategy } from '../../../policy/masking.js';
import { maskJsonBody, type JsonPath } from '../../../policy/http-json-mask.js';

export interface BodyMask {
  paths: JsonPath[];
  detectors: DetectorName[];
  strategy: MaskStrategy;
  key: MaskKey;
  maxBytes: number;
}

export type BodyMode = 'pass' | 'json' | 'json-lines' | 'text-lines';

export function isJsonType(contentType: string): boolean {
  const t = contentType.split(';')[0].trim().toLowerCase();
  return t === 'application/json' || t.endsWith('+json') || t === 'application/x-ndjson' || t === 'application/jsonl' || t === 'application/json-seq';
}

export function isTextType(contentType: string): boolean {
  const t = contentType.split(';')[0].trim().toLowerCase();
  return t.startsWith('text/') || isJsonType(t) || t === 'application/xml' || t.endsWith('+xml') || t === 'application/x-www-form-urlencoded' || t === 'application/yaml';
}

/** How a response body is treated, given its content type, whether the request was a watch, and the mask. */
export function bodyMode(contentType: string | undefined, watch: boolean, mask: BodyMask | undefined): BodyMode {
  if (!mask || !contentType) return 'pass';
  const lower = contentType.toLowerCase();
  if (isJsonType(lower)) {
    const streaming = watch || lower.includes('stream=watch') || /ndjson|jsonl|json-seq/.test(lower);
    return streaming ? 'json-lines' : 'json';
  }
  if (mask.detectors.length > 0 && isTextType(lower)) return 'text-lines';
  return 'pass';
}

/** A decompressor for a Content-Encoding, `null` for identity, `undefined` for one the broker cannot read. */
export function decoderFor(encoding: string | undefined): Transform | null | undefined {
  const e = (encoding ?? '').trim().toLowerCase();
  if (e === '' || e === 'identity') return null;
  if (e === 'gzip' || e === 'x-gzip') return createGunzip();
  if (e === 'deflate') return createInflate();
  if (e === 'br') return createBrotliDecompress();
  return undefined;
}

export function maskJsonDocument(text: string, mask: BodyMask): { text: string; hits: Record<string, number> } {
  return maskJsonBody(text, { paths: mask.paths, detectors: mask.detectors, strategy: mask.strategy }, mask.key);
}

export function maskPlainText(text: string, mask: BodyMask): string {
  if (mask.detectors.length === 0) return text;
  return maskText(text, mask.detectors, mask.strategy, mask.key).text ?? '[MASKED]';
}

/**
 * Masks a body line by line as it flows. A line longer than `maxBytes` is masked as it stands (JSON paths need the
 * whole line, so such a line gets the detectors only).
 */
export class LineMasker extends Transform {
  #pending = '';
  readonly #mask: BodyMask;
  readonly #json: boolean;
  readonly #decoder = new TextDecoder('utf-8');
  hits: Record<string, number> = {};

  constructor(mask: BodyMask, json: boolean) {
    super();
    this.#mask = mask;
    this.#json = json;
  }

  #line(line: string): string {
    if (line.trim().length === 0) return line;
    if (!this.#json) return maskPlainText(line, this.#mask);
    const r = maskJsonDocument(line, this.#mask);
    for (const [k, n] of Object.entries(r.hits)) this.hits[k] = (this.hits[k] ?? 0) + n;
    return r.text;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.#pending += this.#decoder.decode(chunk, { stream: true });
    let out = '';
    let nl: number;
    while ((nl = this.#pending.indexOf('\n')) >= 0) {
      out += `${this.#line(this.#pending.slice(0, nl))}\n`;
      this.#pending = this.#pending.slice(nl + 1);
    }
    if (this.#pending.length > this.#mask.maxBytes) {
      out += this.#json ? maskPlainText(this.#pending, this.#mask) : this.#line(this.#pending);
      this.#pending = '';
    }
    done(null, out.length > 0 ? Buffer.from(out, 'utf8') : undefined);
  }

  override _flush(done: TransformCallback): void {
    this.#pending += this.#decoder.decode();
    done(null, this.#pending.length > 0 ? Buffer.from(this.#line(this.#pending), 'utf8') : undefined);
  }
}

/** Keeps the first `max` bytes of a body for the recording. */
export class BodySample {
  #parts: Buffer[] = [];
  #kept = 0;
  total = 0;
  constructor(readonly max: number) {}
  add(chunk: Buffer): void {
    this.total += chunk.length;
    if (this.#kept >= this.max) return;
    const part = chunk.length > this.max - this.#kept ? chunk.subarray(0, this.max - this.#kept) : chunk;
    this.#parts.push(Buffer.from(part));
    this.#kept += part.length;
  }
  get truncated(): boolean {
    return this.total > this.#kept;
  }
  text(): string {
    return new TextDecoder('utf-8').decode(Buffer.concat(this.#parts));
  }
}
