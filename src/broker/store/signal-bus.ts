/**
 * Live signals between broker replicas: what one replica decided that another may have to act on at once. A signal
 * only says *what changed*; the receiver re-reads the store (the source of truth), so a signal carries no authority
 * and a missed one is recovered by `resync` (re-reading pending reviews, grants and locks) after a reconnect.
 */
export type Signal =
  /** A review changed (decided, expired, withdrawn, orphaned, revoked): whoever waits on it re-reads it. */
  | { kind: 'review'; id: string }
  /** An access grant stopped holding: sessions opened under it end wherever they run. */
  | { kind: 'grant-ended'; id: string }
  /** A lock was created: the sessions it covers end wherever they run. */
  | { kind: 'lock'; id: string }
  /** An admin ended a session (`hoopctl sessions end`) through a replica that does not serve it. */
  | { kind: 'end-session'; id: string; reason: string; by: string };

export interface SignalHandlers {
  /** A signal another replica published (never this replica's own). */
  signal(s: Signal): void;
  /** The listener (re)connected: signals may have been missed, re-read what they would have said. */
  resync(): void;
}

export interface SignalBus {
  publish(s: Signal): Promise<void>;
  /** Starts delivering; resolves once listening (the PostgreSQL bus: after LISTEN). */
  listen(handlers: SignalHandlers): Promise<void>;
  close(): Promise<void>;
}

/**
 * One broker owns the store (SQLite): every signal is already acted on in this process, so there is nobody to tell.
 */
export class InProcessSignalBus implements SignalBus {
  async publish(): Promise<void> {}
  async listen(): Promise<void> {}
  async close(): Promise<void> {}
}
