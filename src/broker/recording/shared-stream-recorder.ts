import type { Store, StoredEvent } from '../store/store.js';
import { GENESIS_HASH, hashEvent } from './event-chain.js';
import type { SessionRecorder } from './recorder.js';
import { CHECKPOINT_EVENT, type CheckpointSigner } from './checkpoints.js';

/**
 * Appends to a stream every broker replica writes (the broker-wide audit stream). Unlike StreamRecorder it keeps
 * no head of its own: each event is chained to the head the store holds, under the store's lock, so two replicas
 * recording at once extend one chain that `audit verify` checks end to end.
 */
export class SharedStreamRecorder implements SessionRecorder {
  readonly sessionId: string;
  readonly #store: Store;

  constructor(store: Store, stream: string) {
    this.#store = store;
    this.sessionId = stream;
  }

  async record(type: string, data: Record<string, unknown>): Promise<void> {
    const at = Date.now();
    await this.#store.appendToSharedStream(this.sessionId, (last) => chained(this.sessionId, last, type, data, at));
  }

  /**
   * Signs the stream's head as a `checkpoint` event, unless the head already is one (an idle stream is not signed
   * again, whichever replica signed it last).
   */
  async checkpoint(signer: CheckpointSigner): Promise<void> {
    const stream = this.sessionId;
    await this.#store.appendToSharedStream(stream, (last) => {
      if (!last || last.type === CHECKPOINT_EVENT) return undefined;
      const data = { seq: last.seq, hash: last.hash, keyId: signer.keyId, signature: signer.sign(stream, last.seq, last.hash) };
      return chained(stream, last, CHECKPOINT_EVENT, data, Date.now());
    });
  }
}

function chained(stream: string, last: StoredEvent | undefined, type: string, data: Record<string, unknown>, at: number): StoredEvent {
  const event: Omit<StoredEvent, 'hash'> = { stream, seq: (last?.seq ?? 0) + 1, at, type, data, prevHash: last?.hash ?? GENESIS_HASH };
  return { ...event, hash: hashEvent(event) };
}
