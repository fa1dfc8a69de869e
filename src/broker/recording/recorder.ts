/**
 * What a protocol proxy sees of recording: append an event to this session's stream. The promise
 * resolves once the event is durable, so a proxy awaits it before forwarding the action it records.
 */
export interface SessionRecorder {
  readonly sessionId: string;
  /** `urgent: false`: nothing waits on this event before acting, so it may join a later commit (see the Store's AppendOptions). */
  record(type: string, data: Record<string, unknown>, options?: { urgent?: boolean }): Promise<void>;
}
