import type { Readable } from 'node:stream';

/** The stream closed without ending (destroyed, or its connection cut) and without an error of its own. */
export class PrematureCloseError extends Error {
  constructor() {
    super('Premature close');
    this.name = new.target.name;
  }
}

/**
 * Hands a stream's chunks to `onChunk` one at a time, in order, from its 'data' events. A chunk handled synchronously
 * costs nothing more; when `onChunk` returns a promise the stream is paused until it settles, so the next chunk is
 * never handled before the one before it is done. This is what `for await (const chunk of stream)` does, without its
 * promise, 'readable' event, read() and nextTick per chunk (a large share of the proxy's cost per message in profiles).
 *
 * Resolves when the stream ends, when `stop()` is true after a chunk, or at once when `detach` aborts (a pooled
 * backend handed back while the relay waits for bytes: its socket stays open); rejects with the stream's error, with
 * what `onChunk` threw or rejected with, or with PrematureCloseError. The stream is left paused, its listeners off,
 * and what arrived unread stays in it for whoever reads next.
 */
export function pumpChunks(stream: Readable, onChunk: (chunk: Buffer) => void | Promise<void>, stop: () => boolean, detach?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let done = false;
    /** A chunk's handling is under way: how the stream ended waits for it, as it would in a `for await` loop. */
    let busy = false;
    let ended: { err?: unknown } | undefined;
    const finish = (err?: unknown): void => {
      if (done) return;
      done = true;
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.off('close', onClose);
      detach?.removeEventListener('abort', onDetach);
      stream.pause();
      if (err === undefined) resolve();
      else reject(err);
    };
    const next = (): void => {
      busy = false;
      if (done) return;
      if (ended) finish(ended.err);
      else if (stop()) finish();
      else stream.resume();
    };
    const onData = (chunk: Buffer): void => {
      if (done) return;
      let handled: void | Promise<void>;
      try {
        handled = onChunk(chunk);
      } catch (e) {
        finish(e);
        return;
      }
      if (handled === undefined) {
        if (stop()) finish();
        return;
      }
      busy = true;
      stream.pause();
      handled.then(next, failed);
    };
    const failed = (e: unknown): void => {
      busy = false;
      finish(e);
    };
    const over = (err?: unknown): void => {
      if (busy) ended ??= { err };
      else finish(err);
    };
    const onEnd = (): void => over();
    const onError = (err: Error): void => over(err);
    // 'end' comes before 'close' when the stream ended; a close without either is a cut connection.
    const onClose = (): void => over(new PrematureCloseError());
    const onDetach = (): void => finish();
    if (detach?.aborted) return resolve();
    if (stream.readableEnded) return resolve();
    if (stream.destroyed) return reject(stream.errored ?? new PrematureCloseError());
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', onError);
    stream.on('close', onClose);
    detach?.addEventListener('abort', onDetach);
    stream.resume();
  });
}
