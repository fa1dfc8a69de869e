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
  /** When set, `record` rejects for these event types: simulates a store that cannot write. */
  failTypes: ReadonlySet<string> = new Set();

  constructor(sessionId: string, events: RecordedEvent[] = []) {
    this.sessionId = sessionId;
    this.#events = events;
  }

  async record(type: string, data: Record<string, unknown>): Promise<void> {
    if (this.failTypes.has(type)) throw new Error(`store unavailable (test): cannot record ${type}`);
    // Serialised as a durable store would be: later mutation of `data` must not change the record.
    this.#events.push({ sessionId: this.sessionId, type, data: JSON.parse(JSON.stringify(data)) as Record<string, unknown> });
  }
}
