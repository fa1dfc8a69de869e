import type { AppendOptions, Store, StoredEvent } from '../store/store.js';
import { GENESIS_HASH, hashEventText, hashJson } from './event-chain.js';
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
  /** The same as JSON, for the hashed text of the next event. */
  #prevHashJson: string;
  /** The stream's name as JSON, for the hashed text of each event. */
  readonly #streamJson: string;
  #tail: Promise<void> = Promise.resolve();
  /** The seq of the last checkpoint written (0: none), so an idle stream is not signed again and again. */
  #checkpointed: number;
  /** The last event the store confirmed. */
  #durable: { seq: number; hash: string };

  private constructor(store: Store, stream: string, last?: StoredEvent) {
    this.#store = store;
    this.sessionId = stream;
    this.#streamJson = JSON.stringify(stream);
    this.#seq = last?.seq ?? 0;
    this.#prevHash = last?.hash ?? GENESIS_HASH;
    this.#prevHashJson = hashJson(this.#prevHash);
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
    const seq = this.#seq + 1;
    const at = Date.now();
    const prevHash = this.#prevHash;
    // Serialised once, for the hash and for the store; before the head moves, so data that cannot be serialised
    // throws here and leaves no gap in the seqs.
    const dataJson = JSON.stringify(data);
    const hash = hashEventText(this.#streamJson, seq, at, typeJson(type), dataJson, this.#prevHashJson);
    this.#seq = seq;
    this.#prevHash = hash;
    // A SHA-256 in hex needs no escaping.
    this.#prevHashJson = `"${hash}"`;
    const event: StoredEvent = { stream: this.sessionId, seq, at, type, data, prevHash, hash };
    const write = this.#store.appendEvent(event, appendOptions(options, dataJson)).then(
      () => {
        if (seq > this.#durable.seq) this.#durable = { seq, hash };
      },
      (e: unknown) => {
        const lost = this.#durable.seq + 1;
        // The newest event failing means every one after the durable head did: the stream goes on from there.
        if (this.#seq === seq) {
          this.#seq = this.#durable.seq;
          this.#prevHash = this.#durable.hash;
          this.#prevHashJson = hashJson(this.#prevHash);
          if (this.#checkpointed > this.#seq) this.#checkpointed = 0;
        }
        throw lost < seq ? new Error(`event ${lost} of ${this.sessionId} was not written, so neither is the one after it`) : e;
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

/**
 * The options with the data's JSON, as a literal: `{ ...options, dataJson }` took V8's slow path at every event
 * (2 % of the broker's CPU under pgbench). Every field of AppendOptions is listed here.
 */
function appendOptions(options: AppendOptions | undefined, dataJson: string): AppendOptions {
  return options?.urgent === undefined ? { dataJson } : { urgent: options.urgent, dataJson };
}

/** Event types as JSON: a handful of names, serialised once each. */
const typeJsons = new Map<string, string>();

function typeJson(type: string): string {
  let json = typeJsons.get(type);
  if (json === undefined) {
    json = JSON.stringify(type);
    if (typeJsons.size < 256) typeJsons.set(type, json);
  }
  return json;
}
