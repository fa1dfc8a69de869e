import type { Duplex } from 'node:stream';
import pg from 'pg';
import { UserError } from '../lib/errors.js';
import { openTunnel } from './ws-transport.js';

/** A node-postgres client over a tunnel, with what it takes to cancel its running statement. */
export interface PgTunnelClient {
  client: pg.Client;
  /**
   * Asks the server to stop the statement running now: a CancelRequest with the key the broker handed out, sent on a
   * new tunnel connection as PostgreSQL wants. Resolves once the broker has taken it (closed that connection); the
   * answer comes on the query itself, which fails with SQLSTATE 57014 if the server stopped it.
   */
  cancel(): Promise<void>;
}

/**
 * A node-postgres client whose socket is a tunnel to the broker: `hoopctl exec` speaks PostgreSQL
 * without a local listener. pg expects a net.Socket-like stream, so the tunnel gets the few
 * socket methods pg calls.
 */
export async function connectPgOverTunnel(broker: string, connection: string, token: string, options: { detachReviews?: boolean; database?: string; headers?: Record<string, string>; peer?: string } = {}): Promise<PgTunnelClient> {
  const query = options.detachReviews ? { review: 'detach' } : undefined;
  const stream = (await openTunnel(broker, connection, token, options.peer ?? 'hoopctl-exec', query, options.headers)) as Duplex & Record<string, unknown>;
  stream.setNoDelay = () => stream;
  stream.setKeepAlive = () => stream;
  stream.connect = () => {
    process.nextTick(() => stream.emit('connect'));
    return stream;
  };
  // database = user is libpq's "none given": the broker routes it to the connection's default database.
  const client = new pg.Client({ stream: () => stream as never, user: 'hoopctl', database: options.database ?? 'hoopctl', password: undefined });
  await client.connect();
  return {
    client,
    cancel: async () => {
      const key = backendKey(client);
      if (!key) throw new UserError('the broker handed out no cancel key for this connection', { code: 'CANCEL_UNAVAILABLE' });
      await sendCancelRequest(await openTunnel(broker, connection, token, 'hoopctl-exec-cancel', { kind: 'cancel' }), key);
    },
  };
}

/** pg keeps BackendKeyData on the client without typing it. */
function backendKey(client: pg.Client): { pid: number; secret: number } | undefined {
  const { processID, secretKey } = client as unknown as { processID: number | null; secretKey: number | null };
  return processID === null || secretKey === null ? undefined : { pid: processID, secret: secretKey };
}

/** The CancelRequest code (1234 << 16 | 5678). */
const CANCEL_REQUEST_CODE = 80877102;

/**
 * A CancelRequest: no type byte, length 16, the code, then the key from BackendKeyData.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-CANCELREQUEST
 */
export function createCancelRequest(key: { pid: number; secret: number }): Buffer {
  const b = Buffer.alloc(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  b.writeInt32BE(key.pid | 0, 8);
  b.writeInt32BE(key.secret | 0, 12);
  return b;
}

/** Writes the request and waits for the other side to close, as a server does once it has read it. */
function sendCancelRequest(stream: Duplex, key: { pid: number; secret: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      stream.destroy();
      if (err) reject(err);
      else resolve();
    };
    stream.once('error', done);
    stream.once('close', () => done());
    stream.once('end', () => done());
    stream.resume();
    stream.end(createCancelRequest(key));
  });
}
