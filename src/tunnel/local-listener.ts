import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { openTunnel } from './ws-transport.js';
import { errorMessage, isHoopError } from '../lib/errors.js';

export interface LocalTunnelOptions {
  broker: string;
  connection: string;
  host?: string;
  port?: number;
  /** Called per accepted connection, so a long-running tunnel always presents a fresh token. */
  getToken(): Promise<string>;
  /**
   * Runs on each accepted socket while its tunnel opens: returns the stream to relay (e.g. the decrypted side of TLS
   * the client asked for). A rejection ends that connection only and is reported as 'refused'.
   */
  prepareClient?(socket: Socket): Promise<Socket>;
  /** What to tell a client whose tunnel could not open (e.g. a PostgreSQL ErrorResponse). */
  onRefused?(socket: Socket, error: Error): void;
  onEvent?(event: { type: 'accepted' | 'closed' | 'refused'; peer: string; error?: string }): void;
}

/** The code of an error `prepareClient` rejects with when the client simply went away. */
export const CLIENT_GONE = 'CLIENT_GONE';

export interface LocalTunnel {
  host: string;
  port: number;
  /** Stops listening; open connections get up to `drainMs` to finish (default: cut at once). */
  close(options?: { drainMs?: number }): Promise<void>;
}

/** Pipes both ways with backpressure; ends each side when the other ends. */
export function splice(a: Duplex, b: Duplex, onClose: () => void): void {
  let closed = false;
  const done = () => {
    if (closed) return;
    closed = true;
    a.destroy();
    b.destroy();
    onClose();
  };
  a.pipe(b);
  b.pipe(a);
  for (const s of [a, b]) {
    s.on('error', done);
    s.on('close', done);
  }
}

/** Listens on loopback and carries each accepted TCP connection over its own WebSocket to the broker. */
export async function startLocalTunnel(o: LocalTunnelOptions): Promise<LocalTunnel> {
  const host = o.host ?? '127.0.0.1';
  const sockets = new Set<Duplex>();
  // No Nagle: a relay passes on what it gets at once. With it, a reply that arrives as two messages (HTTP headers,
  // then the body) waited for the client's delayed ACK: 40 ms per request.
  const server: Server = createServer({ noDelay: true }, (socket) => {
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.pause();
    // The tunnel opens while the client negotiates, so asking for TLS adds no round trip to the broker.
    const opening = (async () => openTunnel(o.broker, o.connection, await o.getToken(), peer))();
    // Handled below once negotiation is done; until then a refusal must not count as unhandled.
    opening.catch(noop);
    let client = socket;
    (async () => {
      if (o.prepareClient) {
        try {
          client = await o.prepareClient(socket);
        } catch (e) {
          void opening.then((remote) => remote.destroy(), noop);
          socket.destroy();
          // A client that leaves before saying anything (a port probe) is not a refusal worth reporting.
          if (isHoopError(e) && e.code === CLIENT_GONE) o.onEvent?.({ type: 'closed', peer });
          else o.onEvent?.({ type: 'refused', peer, error: describeError(e) });
          return;
        }
        sockets.add(client);
        client.on('close', () => sockets.delete(client));
        client.on('error', noop);
      }
      const remote = await opening;
      sockets.add(remote);
      o.onEvent?.({ type: 'accepted', peer });
      splice(client, remote, () => {
        sockets.delete(remote);
        o.onEvent?.({ type: 'closed', peer });
      });
      client.resume();
    })().catch((e: Error) => {
      o.onEvent?.({ type: 'refused', peer, error: errorMessage(e) });
      if (o.onRefused) o.onRefused(client, e);
      else client.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    host,
    port,
    close: async ({ drainMs = 0 } = {}) => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      const deadline = Date.now() + drainMs;
      while (sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

function noop(): void {}

function describeError(e: unknown): string {
  return isHoopError(e) && e.hint ? `${e.message}. ${e.hint}` : errorMessage(e);
}
