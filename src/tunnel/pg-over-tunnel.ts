import type { Duplex } from 'node:stream';
import pg from 'pg';
import { openTunnel } from './ws-transport.js';

/**
 * A node-postgres client whose socket is a tunnel to the broker: `hoopctl exec` speaks PostgreSQL
 * without a local listener. pg expects a net.Socket-like stream, so the tunnel gets the few
 * socket methods pg calls.
 */
export async function connectPgOverTunnel(broker: string, connection: string, token: string, options: { detachReviews?: boolean } = {}): Promise<pg.Client> {
  const query = options.detachReviews ? { review: 'detach' } : undefined;
  const stream = (await openTunnel(broker, connection, token, 'hoopctl-exec', query)) as Duplex & Record<string, unknown>;
  stream.setNoDelay = () => stream;
  stream.setKeepAlive = () => stream;
  stream.connect = () => {
    process.nextTick(() => stream.emit('connect'));
    return stream;
  };
  // database = user is libpq's "none given": the broker routes it to the connection's default database.
  const client = new pg.Client({ stream: () => stream as never, user: 'hoopctl', database: 'hoopctl', password: undefined });
  await client.connect();
  return client;
}
