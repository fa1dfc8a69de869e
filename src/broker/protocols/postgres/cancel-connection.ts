import type { Duplex } from 'node:stream';
import type { CancelContext, ProtocolHost } from '../protocol.js';
import type { CancelRegistry, CancelSender } from './cancel-registry.js';
import type { PostgresConnection } from './config.js';
import { parseCancelRequest } from './messages.js';
import { StartupCode } from '../../../lib/pg-wire/message-codes.js';
import { StreamReader } from './stream-reader.js';

/** A client that opened a cancel connection and sends nothing is let go after this long (a hang guard). */
const CANCEL_READ_TIMEOUT_MS = 30_000;

/**
 * One connection that carries a CancelRequest only (psql's Ctrl-C, a driver's cancel, `hoopctl exec`'s): no session of
 * its own. The key finds the session (CancelRegistry.cancel judges the sender and records the cancel in that session's
 * recording); a key no session of this broker holds, a refused one, or anything but a CancelRequest is an audit event,
 * so every cancel leaves a trace somewhere a reviewer looks. PostgreSQL never answers a cancel: the connection closes.
 */
export async function serveCancelConnection(stream: Duplex, cancels: CancelRegistry, request: CancelContext<PostgresConnection>, host: ProtocolHost): Promise<void> {
  const reader = new StreamReader(stream);
  const timer = setTimeout(() => stream.destroy(), CANCEL_READ_TIMEOUT_MS);
  const sender: CancelSender = {
    via: request.via, clientAddr: request.clientAddr,
    ...(request.connection ? { connection: request.connection.name } : {}),
    ...(request.identity ? { identity: { subject: request.identity.subject, issuer: request.identity.issuer } } : {}),
  };
  const { identity, ...rest } = sender;
  const who = { ...rest, ...identity };
  const audit = (type: string, data: Record<string, unknown>) =>
    (host.audit?.(type, { ...who, ...data }) ?? Promise.resolve()).catch((e: unknown) => request.logger.error({ err: e instanceof Error ? e.message : String(e) }, 'could not record a cancel request'));
  try {
    let head: Buffer;
    try {
      head = await reader.read(16);
    } catch {
      await audit('cancel-request-invalid', { reason: 'the connection ended before a whole cancel request came' });
      return;
    }
    if (head.readInt32BE(0) !== 16 || head.readInt32BE(4) !== StartupCode.CancelRequest) {
      await audit('cancel-request-invalid', { reason: 'the connection was opened to cancel but carried another message' });
      return;
    }
    const key = parseCancelRequest(head.subarray(4));
    const result = await cancels.cancel(key, sender);
    request.logger.info({ ...who, outcome: result.outcome }, 'cancel request');
    if (!result.matched) {
      // With several replicas the session may live on another one: its keys are known to that process only.
      await audit('cancel-request-unmatched', { reason: 'no session of this broker process holds the key (with several replicas, it may be served by another one)' });
    } else if (result.outcome === 'refused') {
      await audit('cancel-request-refused', { reason: result.reason });
    }
  } finally {
    clearTimeout(timer);
    reader.release();
    stream.destroy();
  }
}
