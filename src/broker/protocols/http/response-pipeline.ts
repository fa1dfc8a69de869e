/**
 * A backend's response on its way to the client: headers cleaned (hop-by-hop dropped, redirects to the backend made
 * relative), the body passed as it is, masked whole (JSON, up to `mask.maxBytes`: larger is withheld, never passed
 * unmasked) or line by line (watches, logs, text), counted and sampled for the recording.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { BodySample, bodyMode, decoderFor, isJsonType, isTextType, LineMasker, maskJsonDocument, maskPlainText, type BodyMask } from './body-masking.js';
import { sendRefusal } from './refusals.js';

/** Headers that describe one hop, never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authenticate']);

/** What a request's recording learns from its response. */
export interface ResponseState {
  /** A watch (`?watch=1`): its JSON arrives line by line. */
  watch: boolean;
  status?: number;
  responseType?: string;
  responseBytes: number;
  responseSample?: BodySample;
  maskHits?: Record<string, number>;
  error?: string;
}

export interface ResponseSettings {
  mask?: BodyMask;
  /** Bodies are sampled up to this many bytes for the recording; absent, not at all. */
  recordMax?: number;
  kind: 'http' | 'kubernetes';
  /** The backend's origin: a redirect there becomes relative, so the client follows it through the gate. */
  origin: string;
  /** A response the broker withheld (it could not be masked): counted as an error of the session. */
  onWithheld(): void;
}

export function responseHeaders(origin: string, proxyRes: IncomingMessage, drop: readonly string[]): OutgoingHttpHeaders {
  const listed = new Set(
    String(proxyRes.headers.connection ?? '')
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(proxyRes.headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || listed.has(k) || drop.includes(k)) continue;
    out[k] = v;
  }
  const loc = out.location;
  if (typeof loc === 'string' && loc.startsWith(origin)) out.location = loc.slice(origin.length) || '/';
  return out;
}

export function relayResponse(proxyRes: IncomingMessage, res: ServerResponse, state: ResponseState, o: ResponseSettings): void {
  const status = proxyRes.statusCode ?? 502;
  state.status = status;
  const contentType = proxyRes.headers['content-type'];
  state.responseType = contentType;
  const mode = bodyMode(contentType, state.watch, o.mask);
  res.once('close', () => {
    if (!proxyRes.complete) proxyRes.destroy();
  });
  if (o.recordMax !== undefined && contentType !== undefined && isTextType(contentType)) state.responseSample = new BodySample(o.recordMax);
  const tap = (c: Buffer) => {
    state.responseBytes += c.length;
    state.responseSample?.add(c);
  };
  const withhold = (error: string, message: string) => {
    o.onWithheld();
    state.status = 502;
    state.error = error;
    state.responseBytes += sendRefusal(res, o.kind, { status: 502, message, reason: 'InternalError' });
  };

  if (mode === 'pass') {
    res.writeHead(status, proxyRes.statusMessage, responseHeaders(o.origin, proxyRes, []));
    proxyRes.on('data', tap);
    proxyRes.pipe(res);
    return;
  }
  const mask = o.mask!;
  const encoding = proxyRes.headers['content-encoding'] as string | undefined;
  const decoder = decoderFor(encoding);
  if (decoder === undefined) {
    proxyRes.resume();
    return withhold(`unmaskable content-encoding ${String(encoding)}`, `hoopctl: the response is encoded as "${String(encoding)}", which the broker cannot read to mask`);
  }
  const source: Readable = decoder ? proxyRes.pipe(decoder) : proxyRes;
  decoder?.on('error', (e) => {
    state.error = `decompression: ${e.message}`;
    res.destroy();
  });
  const headers = responseHeaders(o.origin, proxyRes, ['content-length', 'content-encoding', 'content-md5', 'etag']);
  if (mode === 'json') {
    const parts: Buffer[] = [];
    let size = 0;
    let over = false;
    source.on('data', (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > mask.maxBytes) {
        over = true;
        proxyRes.destroy();
        return withhold(`response over mask.maxBytes (${mask.maxBytes})`, `hoopctl: the response is larger than the masking limit (${mask.maxBytes} bytes), so it was withheld`);
      }
      parts.push(c);
    });
    source.on('end', () => {
      if (over) return;
      const r = maskJsonDocument(new TextDecoder('utf-8').decode(Buffer.concat(parts)), mask);
      if (Object.keys(r.hits).length > 0) state.maskHits = r.hits;
      const body = Buffer.from(r.text, 'utf8');
      headers['content-length'] = body.length;
      res.writeHead(status, proxyRes.statusMessage, headers);
      tap(body);
      res.end(body);
    });
    return;
  }
  const masker = new LineMasker(mask, mode === 'json-lines');
  res.writeHead(status, proxyRes.statusMessage, headers);
  masker.on('data', tap);
  masker.on('end', () => {
    if (Object.keys(masker.hits).length > 0) state.maskHits = masker.hits;
  });
  source.pipe(masker).pipe(res);
}

/** A captured body as it may be stored: masked (JSON by path and detectors, text by detectors), capped. */
export function recordedBody(sample: BodySample | undefined, contentType: string | undefined, mask: BodyMask | undefined): { text: string; truncated?: true } | undefined {
  if (!sample || sample.total === 0 || !contentType || !isTextType(contentType)) return undefined;
  let text = sample.text();
  if (mask) text = isJsonType(contentType) && !sample.truncated ? maskJsonDocument(text, mask).text : maskPlainText(text, mask);
  return { text, ...(sample.truncated ? { truncated: true as const } : {}) };
}
