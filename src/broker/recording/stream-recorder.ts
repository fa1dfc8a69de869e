import type { Store, StoredEvent } from '../store/store.js';
import { GENESIS_HASH, hashEvent } from './event-chain.js';
import type { SessionRecorder } from './recorder.js';

/**
 * Appends events to one stream, chaining each to the one before. Appends are serialised so the chain
 * never forks even when callers do not await one another.
 */
export class StreamRecorder implements SessionRecorder {
  readonly sessionId: string;
  readonly #store: Store;
  #seq: number;
  #prevHash: string;
  #tail: Promise<void> = Promise.resolve();

  private constructor(store: Store, stream: string, last?: StoredEvent) {
    this.#store = store;
    this.sessionId = stream;
    this.#seq = last?.seq ?? 0;
    this.#prevHash = last?.hash ?? GENESIS_HASH;
  }

  /** A recorder that continues the stream where the store left it (the audit stream outlives restarts). */
  static async open(store: Store, stream: string): Promise<StreamRecorder> {
    return new StreamRecorder(store, stream, await store.lastEvent(stream));
  }

  /** A recorder for a stream known to be new (a fresh session id). */
  static fresh(store: Store, stream: string): StreamRecorder {
    return new StreamRecorder(store, stream);
  }

  record(type: string, data: Record<string, unknown>): Promise<void> {
    const event: Omit<StoredEvent, 'hash'> = { stream: this.sessionId, seq: ++this.#seq, at: Date.now(), type, data, prevHash: this.#prevHash };
    const hash = hashEvent(event);
    this.#prevHash = hash;
    const write = this.#tail.then(() => this.#store.appendEvent({ ...event, hash }));
    this.#tail = write.catch(() => undefined);
    return write;
  }
}
