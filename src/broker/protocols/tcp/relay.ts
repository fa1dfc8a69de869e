import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { errorMessage } from '../../../lib/errors.js';
import type { SessionContext, SessionSummary } from '../protocol.js';
import type { TcpConnection } from './config.js';

type Side = 'client' | 'target';

/**
 * Relays one tunnel stream to the connection's TCP target, with backpressure both ways (each side's pipe pauses the
 * other), and records the traffic: `bytes` events summing what crossed each way per `recording.interval`, optional
 * `capture` events with the bytes themselves, and a `tcp-closed` event with the totals and which side ended it.
 * A recording that fails ends the session (nothing crosses unrecorded for long). Never throws.
 */
export async function relayTcpSession(client: Duplex, s: SessionContext<TcpConnection>): Promise<SessionSummary> {
  const { connection, recorder, logger } = s;
  const { host, port, connectTimeout } = connection.target;
  client.on('error', (err) => logger.debug({ err: errorMessage(err) }, 'client stream error'));

  let target: Socket;
  try {
    target = await connectTarget(host, port, connectTimeout);
  } catch (e) {
    const message = `cannot reach ${host}:${port}: ${errorMessage(e)}`;
    await recorder.record('backend-error', { phase: 'connect', message }).catch(() => undefined);
    client.destroy();
    return { outcome: 'failed', statementCount: 0, errorCount: 1, error: message };
  }
  target.setNoDelay(true);

  const started = Date.now();
  const ledger = new TrafficLedger(connection.recording.interval, started);
  let captureLeft = connection.recording.capture ? connection.recording.maxCaptureBytes : 0;
  let failure: string | undefined;
  let closedBy: Side | 'broker' | undefined;
  const pending = new Set<Promise<void>>();

  const stop = (side: Side | 'broker', error?: string) => {
    closedBy ??= side;
    if (error) failure ??= error;
    client.destroy();
    target.destroy();
  };
  const record = (type: string, data: Record<string, unknown>) => {
    const p = recorder.record(type, data).catch((e: unknown) => {
      logger.error({ err: errorMessage(e) }, 'could not record tcp traffic');
      stop('broker', 'the broker could not record the session, so it was ended');
    });
    pending.add(p);
    void p.finally(() => pending.delete(p));
  };
  const flush = (final: boolean) => {
    for (const window of ledger.take(final)) record('bytes', window);
  };
  const timer = setInterval(() => flush(false), connection.recording.interval);
  timer.unref();

  const watch = (from: Side, stream: Duplex) =>
    stream.on('data', (chunk: Buffer) => {
      ledger.add(from, chunk.length);
      if (captureLeft > 0) {
        const kept = chunk.subarray(0, captureLeft);
        captureLeft -= kept.length;
        record('capture', { from, at: Date.now() - started, data: kept.toString('base64'), ...(kept.length < chunk.length ? { truncated: true } : {}) });
      }
    });
  watch('client', client);
  watch('target', target);

  const onAbort = () => stop('broker', undefined);
  if (s.signal.aborted) onAbort();
  s.signal.addEventListener('abort', onAbort, { once: true });

  const ended = (side: Side) => () => (closedBy ??= side);
  client.once('end', ended('client'));
  target.once('end', ended('target'));
  target.on('error', (err) => {
    closedBy ??= 'target';
    failure ??= `connection to the target failed: ${errorMessage(err)}`;
  });
  // Each side's end half-closes the other; a destroyed side takes the other with it.
  client.pipe(target);
  target.pipe(client);
  await Promise.all([closed(client), closed(target)]);
  client.destroy();
  target.destroy();
  s.signal.removeEventListener('abort', onAbort);
  clearInterval(timer);
  flush(true);
  const totals = ledger.totals();
  record('tcp-closed', { fromClient: totals.client, fromTarget: totals.target, closedBy: closedBy ?? 'client', durationMs: Date.now() - started });
  await Promise.allSettled([...pending]);
  logger.debug({ ...totals, closedBy }, 'tcp session ended');
  return { outcome: failure ? 'failed' : 'closed', statementCount: 0, errorCount: failure ? 1 : 0, ...(failure ? { error: failure } : {}) };
}

function connectTarget(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port });
    const timer = setTimeout(() => socket.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function closed(stream: Duplex): Promise<void> {
  if (stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => stream.once('close', () => resolve()));
}

/** Bytes each way, summed per window of `intervalMs`; windows with no traffic are not kept. */
export class TrafficLedger {
  readonly #intervalMs: number;
  readonly #started: number;
  #window: { start: number; client: number; target: number } | undefined;
  readonly #done: Array<{ from: number; to: number; fromClient: number; fromTarget: number }> = [];
  readonly #totals = { client: 0, target: 0 };

  constructor(intervalMs: number, started: number) {
    this.#intervalMs = intervalMs;
    this.#started = started;
  }

  add(from: Side, bytes: number, now = Date.now()): void {
    this.#totals[from] += bytes;
    const offset = now - this.#started;
    const start = offset - (offset % this.#intervalMs);
    if (this.#window && this.#window.start !== start) this.#close();
    this.#window ??= { start, client: 0, target: 0 };
    this.#window[from] += bytes;
  }

  /**
   * The windows that ended by `now` (all of them when `final`), as events: `from`/`to` are ms since the session
   * began. A window still open is kept, so each window is one event.
   */
  take(final: boolean, now = Date.now()): Array<{ from: number; to: number; fromClient: number; fromTarget: number }> {
    if (this.#window && (final || this.#window.start + this.#intervalMs <= now - this.#started)) this.#close();
    return this.#done.splice(0);
  }

  totals(): { client: number; target: number } {
    return { ...this.#totals };
  }

  #close(): void {
    const w = this.#window!;
    this.#done.push({ from: w.start, to: w.start + this.#intervalMs, fromClient: w.client, fromTarget: w.target });
    this.#window = undefined;
  }
}
