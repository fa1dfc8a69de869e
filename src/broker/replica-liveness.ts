import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { errorMessage } from '../lib/errors.js';
import type { LostSession, Store } from './store/store.js';

/** The reason a session of a replica that stopped heartbeating ends with (in its stream and `hoopctl sessions`). */
export const BROKER_LOST = 'broker lost';

export function newReplicaId(): string {
  return `rep_${randomBytes(6).toString('hex')}`;
}

export interface ReplicaLivenessOptions {
  store: Store;
  /** This broker process (random per process: a restarted broker is a new replica, its old one is swept). */
  replica: string;
  heartbeatMs: number;
  lostAfterMs: number;
  logger: Logger;
  /** Records and settles what a lost replica left: its sessions (already marked failed) and their held statements. */
  onLost(lost: LostSession[]): Promise<void>;
  /**
   * The others declared this replica lost (it could not beat in time): its sessions are failed in the store and their
   * held statements orphaned, so the ones still running here must end too (fail closed) before it beats again.
   */
  onDeclaredLost(): void;
}

/**
 * Heartbeats into the store and, on each beat, sweeps replicas whose last beat is older than `lostAfterMs`. With the
 * PostgreSQL store this is what lets a starting or surviving replica end only the sessions of a dead one; with SQLite
 * the store keeps no replicas and every call is a no-op.
 */
export class ReplicaLiveness {
  readonly #o: ReplicaLivenessOptions;
  #timer: NodeJS.Timeout | undefined;
  #beating: Promise<void> | undefined;

  constructor(options: ReplicaLivenessOptions) {
    this.#o = options;
  }

  /** Registers this replica and sweeps once (the start-up sweep), then beats on a timer. */
  async start(): Promise<void> {
    await this.#o.store.registerReplica(this.#o.replica, Date.now());
    await this.#sweep();
    this.#timer = setInterval(() => {
      if (this.#beating) return; // a slow store: never two beats at once
      this.#beating = this.#beat().finally(() => (this.#beating = undefined));
    }, this.#o.heartbeatMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#beating;
  }

  async #beat(): Promise<void> {
    const { store, replica, logger } = this.#o;
    try {
      if (!(await store.heartbeat(replica, Date.now()))) {
        logger.error({ replica }, 'this broker was declared lost by another replica (no heartbeat in time): ending its sessions');
        this.#o.onDeclaredLost();
        await store.registerReplica(replica, Date.now());
      }
      await this.#sweep();
    } catch (e) {
      // The store is unreachable: the next beat tries again; sessions meanwhile fail closed on their own writes.
      logger.error({ err: errorMessage(e) }, 'replica heartbeat failed');
    }
  }

  async #sweep(): Promise<void> {
    const now = Date.now();
    const lost = await this.#o.store.sweepLostReplicas(this.#o.replica, now - this.#o.lostAfterMs, now);
    if (lost.length === 0) return;
    this.#o.logger.warn({ sessions: lost.length, replicas: [...new Set(lost.map((l) => l.replica))] }, 'ended the sessions of lost broker replicas');
    await this.#o.onLost(lost);
  }
}
