import type { AppendOptions, Store, StoredEvent } from '../store/store.js';
import { GENESIS_HASH, hashEventWithData } from './event-chain.js';
import type { SessionRecorder } from './recorder.js';
import { CHECKPOINT_EVENT, type CheckpointSigner } from './checkpoints.js';

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
  /** The seq of the last checkpoint written (0: none), so an idle stream is not signed again and again. */
  #checkpointed: number;
  /** The last event the store confirmed. */
  #durable: { seq: number; hash: string };

  private constructor(store: Store, stream: string, last?: StoredEvent) {
    this.#store = store;
    this.sessionId = stream;
    this.#seq = last?.seq ?? 0;
    this.#prevHash = last?.hash ?? GENESIS_HASH;
    this.#checkpointed = last?.type === CHECKPOINT_EVENT ? last.seq : 0;
    this.#durable = { seq: this.#seq, hash: this.#prevHash };
  }

  /** A recorder that continues the stream where the store left it (the audit stream outlives restarts). */
  static async open(store: Store, stream: string): Promise<StreamRecorder> {
    return new StreamRecorder(store, stream, await store.lastEvent(stream));
  }

  /** A recorder for a stream known to be new (a fresh session id). */
  static fresh(store: Store, stream: string): StreamRecorder {
    return new StreamRecorder(store, stream);
  }

  /**
   * Hands the event to the store at once, without waiting for the one before it to be durable: the store commits
   * appends in the order they are made, so a statement and its verdict share one commit. A write the store refused
   * (a full disk) must not leave a hole: the events already chained on top of it are refused too (the store's
   * ChainGuard), and the stream goes on from its last durable event, so the chain still verifies once the store
   * takes writes again.
   */
  record(type: string, data: Record<string, unknown>, options?: AppendOptions): Promise<void> {
    const event: Omit<StoredEvent, 'hash'> = { stream: this.sessionId, seq: this.#seq + 1, at: Date.now(), type, data, prevHash: this.#prevHash };
    // Serialised once, for the hash and for the store; before the head moves, so data that cannot be serialised
    // throws here and leaves no gap in the seqs.
    const dataJson = JSON.stringify(data);
    const hash = hashEventWithData(event, dataJson);
    this.#seq = event.seq;
    this.#prevHash = hash;
    const write = this.#store.appendEvent({ ...event, hash }, { ...options, dataJson }).then(
      () => {
        if (event.seq > this.#durable.seq) this.#durable = { seq: event.seq, hash };
      },
      (e: unknown) => {
        const lost = this.#durable.seq + 1;
        // The newest event failing means every one after the durable head did: the stream goes on from there.
        if (this.#seq === event.seq) {
          this.#seq = this.#durable.seq;
          this.#prevHash = this.#durable.hash;
          if (this.#checkpointed > this.#seq) this.#checkpointed = 0;
        }
        throw lost < event.seq ? new Error(`event ${lost} of ${this.sessionId} was not written, so neither is the one after it`) : e;
      },
    );
    this.#tail = write.catch(() => undefined);
    return write;
  }

  /**
   * Signs the stream's head as a `checkpoint` event (see checkpoints.ts); nothing when no event came since the
   * last one. The head is taken synchronously, so the checkpoint always signs the event right before it.
   */
  checkpoint(signer: CheckpointSigner): Promise<void> {
    if (this.#seq === 0 || this.#seq === this.#checkpointed) return this.#tail;
    const seq = this.#seq;
    const hash = this.#prevHash;
    const write = this.record(CHECKPOINT_EVENT, { seq, hash, keyId: signer.keyId, signature: signer.sign(this.sessionId, seq, hash) });
    this.#checkpointed = this.#seq;
    return write;
  }
}
