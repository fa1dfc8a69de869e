import type { StoredEvent } from './store.js';

/**
 * Keeps a stream without holes while its appends are pipelined (handed to the store before the one before them is
 * durable): once an event of a stream failed, the later events of that stream already handed over are refused too,
 * until the stream's writer starts again from that event or an earlier one (it rewinds to its last durable event).
 * Only streams with a failure are remembered, so a healthy store keeps nothing here.
 */
export class ChainGuard {
  /** stream → seq of its first event that could not be written. */
  readonly #broken = new Map<string, number>();

  /** The error a later event of a broken stream is refused with; undefined when it may be written. */
  refusal(e: StoredEvent): Error | undefined {
    const at = this.#broken.get(e.stream);
    if (at === undefined) return undefined;
    if (e.seq <= at) {
      this.#broken.delete(e.stream);
      return undefined;
    }
    return new Error(`event ${at} of ${e.stream} was not written, so neither is the one after it`);
  }

  failed(e: StoredEvent): void {
    const at = this.#broken.get(e.stream);
    if (at === undefined || e.seq < at) this.#broken.set(e.stream, e.seq);
  }
}
