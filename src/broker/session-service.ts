import { randomBytes } from 'node:crypto';
import type { Connection } from './config.js';
import { protocolOf } from './protocols/registry.js';
import type { Identity } from '../api/identity.js';
import type { SessionRow, Store } from './store/store.js';
import { StreamRecorder } from './recording/stream-recorder.js';
import { SharedStreamRecorder } from './recording/shared-stream-recorder.js';
import type { CheckpointSigner } from './recording/checkpoints.js';

import { AUDIT_STREAM } from '../api/session.js';

export { AUDIT_STREAM };

export interface EndedSession {
  connection: string;
  connectionType: string;
  outcome: 'closed' | 'failed' | 'refused';
  statementCount: number;
  errorCount: number;
}

export function newSessionId(): string {
  return `ses_${Date.now().toString(36)}${randomBytes(6).toString('hex')}`;
}

/**
 * Opens, refuses and closes sessions: the session row plus the first and last events of its stream.
 * Events outside any session (rejected tokens) go to the audit stream. With a signer, every stream that ends is
 * sealed with a signed checkpoint, and `checkpointAll` signs the heads of the streams still growing.
 */
export class SessionService {
  readonly #store: Store;
  readonly #audit: SharedStreamRecorder;
  readonly #signer?: CheckpointSigner;
  /** Streams of sessions running now → their connection. */
  readonly #live = new Map<StreamRecorder, { name: string; type: string }>();
  readonly #onEnded?: (s: EndedSession) => void;

  private constructor(store: Store, audit: SharedStreamRecorder, signer?: CheckpointSigner, onEnded?: (s: EndedSession) => void) {
    this.#store = store;
    this.#audit = audit;
    this.#signer = signer;
    this.#onEnded = onEnded;
  }

  /** `onEnded` hears of every session that ends or is refused (for metrics). */
  static async create(store: Store, signer?: CheckpointSigner, onEnded?: (s: EndedSession) => void): Promise<SessionService> {
    // Every replica appends to the one audit stream: chained to the head the store holds, not one this process keeps.
    return new SessionService(store, new SharedStreamRecorder(store, AUDIT_STREAM), signer, onEnded);
  }

  /** Signs the head of the audit stream and of every open session that recorded something since its last checkpoint. */
  async checkpointAll(): Promise<void> {
    const signer = this.#signer;
    if (!signer) return;
    await Promise.all([this.#audit, ...this.#live.keys()].map((r) => r.checkpoint(signer)));
  }

  audit(type: string, data: Record<string, unknown>): Promise<void> {
    return this.#audit.record(type, data);
  }

  async open(identity: Identity, connection: Connection, clientAddr: string, client: Record<string, unknown>): Promise<{ row: SessionRow; recorder: StreamRecorder }> {
    const row: SessionRow = {
      id: newSessionId(), connection: connection.name, connectionType: connection.type, identity, clientAddr,
      status: 'open', startedAt: Date.now(), statementCount: 0, errorCount: 0,
    };
    await this.#store.createSession(row);
    const recorder = StreamRecorder.fresh(this.#store, row.id);
    try {
      await recorder.record('open', { identity, connection: connection.name, type: connection.type, target: protocolOf(connection.type).target(connection), clientAddr, client });
    } catch (e) {
      // Not opened after all (the store stopped taking writes): the row must not stay "open"; if this write fails
      // too, the next start marks it failed.
      await this.#store.updateSession(row.id, { status: 'failed', endedAt: Date.now() }).catch(() => undefined);
      throw e;
    }
    this.#live.set(recorder, { name: connection.name, type: connection.type });
    return { row, recorder };
  }

  /** A refused attempt is a session of its own, so `hoopctl sessions` shows who knocked and why they were turned away. */
  async refuse(identity: Identity, connectionName: string, connectionType: string, clientAddr: string, reason: string): Promise<string> {
    const row: SessionRow = {
      id: newSessionId(), connection: connectionName, connectionType, identity, clientAddr,
      status: 'refused', startedAt: Date.now(), endedAt: Date.now(), statementCount: 0, errorCount: 0,
    };
    await this.#store.createSession(row);
    const recorder = StreamRecorder.fresh(this.#store, row.id);
    this.#onEnded?.({ connection: connectionName, connectionType, outcome: 'refused', statementCount: 0, errorCount: 0 });
    await recorder.record('access-denied', { identity, connection: connectionName, clientAddr, reason });
    if (this.#signer) await recorder.checkpoint(this.#signer);
    return row.id;
  }

  async close(id: string, recorder: StreamRecorder, outcome: { status: 'closed' | 'failed' | 'refused'; statementCount: number; errorCount: number; error?: string; durationMs: number }): Promise<void> {
    const connection = this.#live.get(recorder);
    this.#live.delete(recorder);
    if (connection) this.#onEnded?.({ connection: connection.name, connectionType: connection.type, outcome: outcome.status, statementCount: outcome.statementCount, errorCount: outcome.errorCount });
    await recorder.record('close', outcome);
    if (this.#signer) await recorder.checkpoint(this.#signer);
    await this.#store.updateSession(id, { status: outcome.status, endedAt: Date.now(), statementCount: outcome.statementCount, errorCount: outcome.errorCount });
  }
}
