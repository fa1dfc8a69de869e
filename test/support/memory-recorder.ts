import type { SessionRecorder } from '../../src/broker/recording/recorder.js';

export interface RecordedEvent {
  sessionId: string;
  type: string;
  data: Record<string, unknown>;
}

/** A SessionRecorder that appends to an array, shared by every session a test opens. */
export class MemoryRecorder implements SessionRecorder {
  readonly sessionId: string;
  readonly #events: RecordedEvent[];
  /** When set, `record` rejects: simulates a store that cannot write. */
  failWith: Error | undefined;

  constructor(sessionId: string, events: RecordedEvent[] = []) {
    this.sessionId = sessionId;
    this.#events = events;
  }

  async record(type: string, data: Record<string, unknown>): Promise<void> {
    if (this.failWith) throw this.failWith;
    // Serialised as a durable store would be: later mutation of `data` must not change the record.
    this.#events.push({ sessionId: this.sessionId, type, data: JSON.parse(JSON.stringify(data)) as Record<string, unknown> });
  }
}
