/**
 * What a protocol proxy sees of recording: append an event to this session's stream. The promise
 * resolves once the event is durable, so a proxy awaits it before forwarding the action it records.
 */
export interface SessionRecorder {
  readonly sessionId: string;
  record(type: string, data: Record<string, unknown>): Promise<void>;
}
