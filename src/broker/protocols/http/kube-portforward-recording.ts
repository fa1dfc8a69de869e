/**
 * A `kubectl port-forward` stream read for the audit trail: which pod ports were reached, when, how many bytes
 * each way, and what the kubelet reported on failure. The forwarded bytes themselves are arbitrary TCP (a database
 * protocol, HTTP, TLS) and are not recorded.
 *
 * kubectl 1.31+ carries SPDY/3.1 inside the WebSocket (`SPDY/3.1+portforward.k8s.io`); each local connection
 * becomes a pair of streams kubectl opens with headers `streamtype: error|data`, `port`, `requestid`. The data
 * stream carries the bytes; the kubelet writes a failure message on the error stream. kubectl resets both when
 * it is done. Events (type `port-forward`): `{ action: 'open', port, requestId, namespace, pod }` when the data
 * stream opens; `{ action: 'close', port, requestId, bytesToPod, bytesFromPod, durationMs, error? }` when it ends.
 *
 * A stream the broker cannot read (not SPDY/3, a header block that does not inflate) is reported through
 * `onUnreadable`: the proxy ends the connection rather than forward what it cannot account for.
 */
import type { SessionRecorder } from '../../recording/recorder.js';
import { errorMessage } from '../../../lib/errors.js';
import { controlStreamId, headerBlockOf, HeaderBlockInflater, SpdyFlag, SpdyFrameReader, SpdyType, type SpdyFrame } from './spdy.js';

export const PORT_FORWARD_TUNNEL_PROTOCOL = 'spdy/3.1+portforward.k8s.io';

/** The kubelet's error text kept per forwarded connection. */
const MAX_ERROR_TEXT = 1024;
/** Forwarded connections open at once on one port-forward stream; beyond it the stream is cut (kubectl opens one per local connection). */
export const MAX_OPEN_FORWARDS = 1000;

interface Forward {
  port: number;
  requestId: string;
  dataStream?: number;
  errorStream?: number;
  started: number;
  opened: boolean;
  bytesToPod: number;
  bytesFromPod: number;
  clientFin: boolean;
  podFin: boolean;
  errorFin: boolean;
  error: string;
  closed: boolean;
}

type Direction = 'client' | 'pod';

export class KubePortForwardRecording {
  readonly #recorder: SessionRecorder;
  readonly #where: { namespace?: string; pod?: string };
  readonly #onUnreadable: (reason: string) => void;
  readonly #readers = { client: new SpdyFrameReader(), pod: new SpdyFrameReader() };
  readonly #inflaters = { client: new HeaderBlockInflater(), pod: new HeaderBlockInflater() };
  /** Stream id → its forward (both the data and the error stream of a request point at the same one). */
  readonly #byStream = new Map<number, Forward>();
  readonly #byRequest = new Map<string, Forward>();
  /** Every stream a SYN_STREAM opened: data for any other one means the broker lost track of the stream. */
  readonly #opened = new Set<number>();
  /** Frames of both directions, handled one after another (header blocks inflate asynchronously, in order). */
  #chain: Promise<void> = Promise.resolve();
  #unreadable = false;

  constructor(recorder: SessionRecorder, where: { namespace?: string; pod?: string }, onUnreadable: (reason: string) => void) {
    this.#recorder = recorder;
    this.#where = where;
    this.#onUnreadable = onUnreadable;
  }

  /** SPDY bytes kubectl sent (a WebSocket binary message's payload, or a chunk of a plain upgraded connection). */
  fromClient(chunk: Buffer): void {
    this.#push('client', chunk);
  }

  /** SPDY bytes the API server sent. */
  fromServer(chunk: Buffer): void {
    this.#push('pod', chunk);
  }

  #push(from: Direction, chunk: Buffer): void {
    if (this.#unreadable || chunk.length === 0) return;
    const reader = this.#readers[from];
    for (const frame of reader.push(chunk)) {
      this.#chain = this.#chain.then(() => this.#frame(from, frame)).catch((e) => this.#fail(`recording failed: ${errorMessage(e)}`));
    }
    if (reader.broken) this.#fail(`the ${from === 'client' ? "client's" : "API server's"} port-forward stream is not SPDY/3.1: ${reader.broken.message}`);
  }

  #fail(reason: string): void {
    if (this.#unreadable) return;
    this.#unreadable = true;
    this.#chain = this.#chain.then(() => this.#record({ action: 'unreadable', error: reason })).catch(() => undefined);
    this.#onUnreadable(reason);
  }

  async #frame(from: Direction, f: SpdyFrame): Promise<void> {
    if (this.#unreadable) return;
    if (!f.control) {
      if (!this.#opened.has(f.streamId)) return this.#fail(`port-forward data for stream ${f.streamId}, which was never opened`);
      return this.#data(from, f.streamId, f.flags, f.payload);
    }
    const block = headerBlockOf(f);
    let headers: Map<string, string[]> | undefined;
    if (block) {
      // Every block is inflated, even the replies nobody needs: each side's blocks share one zlib stream.
      try {
        headers = await this.#inflaters[from].inflate(block);
      } catch (e) {
        return this.#fail(`a port-forward header block does not inflate: ${errorMessage(e)}`);
      }
    }
    const id = controlStreamId(f);
    if (f.type === SpdyType.SynStream && id !== undefined) this.#opened.add(id);
    if (f.type === SpdyType.SynStream && from === 'client' && headers && id !== undefined) return this.#streamOpened(id, headers, f.flags);
    if (f.type === SpdyType.RstStream && id !== undefined) {
      const fwd = this.#byStream.get(id);
      if (fwd) await this.#finish(fwd);
    }
  }

  async #streamOpened(id: number, headers: Map<string, string[]>, flags: number): Promise<void> {
    const type = headers.get('streamtype')?.[0];
    const requestId = headers.get('requestid')?.[0] ?? String(id);
    const port = Number(headers.get('port')?.[0]);
    if (type !== 'data' && type !== 'error') return;
    let fwd = this.#byRequest.get(requestId);
    if (!fwd && this.#byRequest.size >= MAX_OPEN_FORWARDS) return this.#fail(`more than ${MAX_OPEN_FORWARDS} forwarded connections open at once`);
    if (!fwd) {
      fwd = { port, requestId, started: performance.now(), opened: false, bytesToPod: 0, bytesFromPod: 0, clientFin: false, podFin: false, errorFin: false, error: '', closed: false };
      this.#byRequest.set(requestId, fwd);
    }
    this.#byStream.set(id, fwd);
    if (type === 'error') {
      fwd.errorStream = id;
      return;
    }
    fwd.dataStream = id;
    if (flags & SpdyFlag.Fin) fwd.clientFin = true;
    fwd.opened = true;
    await this.#record({ action: 'open', port, requestId, ...this.#where });
  }

  async #data(from: Direction, streamId: number, flags: number, payload: Buffer): Promise<void> {
    const fwd = this.#byStream.get(streamId);
    if (!fwd || fwd.closed) return;
    const fin = (flags & SpdyFlag.Fin) !== 0;
    if (streamId === fwd.dataStream) {
      if (from === 'client') {
        fwd.bytesToPod += payload.length;
        fwd.clientFin ||= fin;
      } else {
        fwd.bytesFromPod += payload.length;
        fwd.podFin ||= fin;
      }
    } else if (from === 'pod') {
      if (fwd.error.length < MAX_ERROR_TEXT) fwd.error += payload.toString('utf8', 0, Math.min(payload.length, MAX_ERROR_TEXT - fwd.error.length));
      fwd.errorFin ||= fin;
    }
    if (fwd.clientFin && fwd.podFin && (fwd.errorFin || fwd.errorStream === undefined)) await this.#finish(fwd);
  }

  async #finish(fwd: Forward): Promise<void> {
    if (fwd.closed) return;
    fwd.closed = true;
    for (const id of [fwd.dataStream, fwd.errorStream]) if (id !== undefined) this.#byStream.delete(id);
    this.#byRequest.delete(fwd.requestId);
    if (!fwd.opened) return;
    await this.#record({
      action: 'close',
      port: fwd.port,
      requestId: fwd.requestId,
      bytesToPod: fwd.bytesToPod,
      bytesFromPod: fwd.bytesFromPod,
      durationMs: Math.round((performance.now() - fwd.started) * 10) / 10,
      ...(fwd.error.trim() ? { error: fwd.error.trim() } : {}),
    });
  }

  async #record(data: Record<string, unknown>): Promise<void> {
    await this.#recorder.record('port-forward', data);
  }

  /** The connection is gone: forwards still open are recorded as closed, with what crossed so far. */
  async close(): Promise<void> {
    await this.#chain;
    for (const fwd of [...this.#byRequest.values()]) await this.#finish(fwd);
    this.#inflaters.client.close();
    this.#inflaters.pod.close();
  }
}
