import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { openTunnelSocket, spliceOverTunnel } from './tunnel-socket.js';
import { HoopError, errorMessage, isHoopError } from '../lib/errors.js';
import { CAN_CHECK_PEER_OWNER, peerSocketOwner, prepareOwnerChecks } from './peer-owner.js';

export interface LocalTunnelOptions {
  broker: string;
  connection: string;
  host?: string;
  port?: number;
  /** Called per accepted connection, so a long-running tunnel always presents a fresh token. */
  getToken(): Promise<string>;
  /**
   * Runs on each accepted socket before its tunnel opens: returns the stream to relay (e.g. the decrypted side of TLS
   * the client asked for), once the client proved it may use the tunnel where the listener asks for a secret. A
   * rejection ends that connection only: reported as 'peer-refused' when its code is PEER_REFUSED, else 'refused'.
   */
  prepareClient?(socket: Socket, via: ListenerKind): Promise<PreparedClient>;
  /** What to tell a client whose tunnel could not open, or who was refused here (e.g. a PostgreSQL ErrorResponse). */
  onRefused?(socket: Duplex, error: Error): void;
  /**
   * Refuse TCP peers whose socket belongs to another OS user (Linux; elsewhere the secret is the guard). Off only
   * for `--insecure-shared-port`.
   */
  ownerOnly?: boolean;
  /** Extra headers of every tunnel this listener opens (the SSH client key the broker must require). */
  tunnelHeaders?: Record<string, string>;
  /** Also listen on a Unix socket, at this path given the TCP port (in a directory only the owner may enter). */
  socketPath?(port: number): string;
  onEvent?(event: LocalTunnelEvent): void;
}

/** What `prepareClient` hands on: the client's stream, and how its tunnel is asked for (a PostgreSQL cancel: `kind=cancel`). */
export interface PreparedClient {
  stream: Duplex;
  tunnelQuery?: Record<string, string>;
}

/** Which listener a client came in on. */
export type ListenerKind = 'tcp' | 'unix';

export interface LocalTunnelEvent {
  /** `peer-refused`: a local client the tunnel turned away (another user, no or a wrong secret); the owner reports it. */
  type: 'accepted' | 'closed' | 'refused' | 'peer-refused';
  peer: string;
  error?: string;
  /** The OS user owning the refused peer's socket, where known. */
  uid?: number;
}

/** The code of an error `prepareClient` rejects with when the client may not use this tunnel. */
export const PEER_REFUSED = 'PEER_REFUSED';

/** The code of an error `prepareClient` rejects with when the client simply went away. */
export const CLIENT_GONE = 'CLIENT_GONE';

export interface LocalTunnel {
  host: string;
  port: number;
  /** The Unix socket path, when listening on one. */
  socketPath?: string;
  /** Stops listening; open connections get up to `drainMs` to finish (default: cut at once). */
  close(options?: { drainMs?: number }): Promise<void>;
}

/**
 * Listens on loopback (and a Unix socket, when asked) and carries each accepted connection over its own WebSocket to
 * the broker. Only the tunnel's owner rides it: a TCP peer owned by another OS user is refused before anything else,
 * then `prepareClient` checks the per-tunnel secret; the broker hears of nobody until then.
 */
export async function startLocalTunnel(o: LocalTunnelOptions): Promise<LocalTunnel> {
  const host = o.host ?? '127.0.0.1';
  const sockets = new Set<Duplex>();
  const ownUid = process.getuid?.();
  let port = 0;

  const refusePeer = (socket: Duplex, peer: string, reason: string, uid?: number) => {
    o.onEvent?.({ type: 'peer-refused', peer, error: reason, ...(uid !== undefined ? { uid } : {}) });
    if (o.onRefused && !socket.destroyed) o.onRefused(socket, new HoopError(reason, { code: PEER_REFUSED }));
    else socket.destroy();
  };

  /** Undefined when the peer may go on; otherwise why not, and who it is. */
  const checkOwner = async (socket: Socket): Promise<{ reason: string; uid?: number } | undefined> => {
    if (!o.ownerOnly || !CAN_CHECK_PEER_OWNER || ownUid === undefined) return undefined;
    const uid = await peerSocketOwner({ address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 }, { address: host, port });
    if (uid === ownUid) return undefined;
    if (uid === undefined) return { reason: 'cannot tell which OS user opened this connection; refused' };
    return { reason: `the connection belongs to OS user ${uid}, not to the tunnel's owner (${ownUid})`, uid };
  };

  const onConnection = (via: ListenerKind) => (socket: Socket) => {
    const peer = via === 'unix' ? 'unix socket' : `${socket.remoteAddress}:${socket.remotePort}`;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', noop);
    socket.pause();
    let client: Duplex = socket;
    let tunnelQuery: Record<string, string> | undefined;
    (async () => {
      if (via === 'tcp') {
        const refused = await checkOwner(socket);
        if (refused) return refusePeer(socket, peer, refused.reason, refused.uid);
      }
      if (o.prepareClient) {
        try {
          ({ stream: client, tunnelQuery } = await o.prepareClient(socket, via));
        } catch (e) {
          // A client that leaves before saying anything (a port probe) is not a refusal worth reporting.
          if (isHoopError(e) && e.code === CLIENT_GONE) {
            socket.destroy();
            o.onEvent?.({ type: 'closed', peer });
          } else if (isHoopError(e) && e.code === PEER_REFUSED) {
            // The greeter told the client in its own protocol already.
            socket.destroy();
            o.onEvent?.({ type: 'peer-refused', peer, error: e.message });
          } else {
            socket.destroy();
            o.onEvent?.({ type: 'refused', peer, error: describeError(e) });
          }
          return;
        }
        sockets.add(client);
        client.on('close', () => sockets.delete(client));
        // A greeter that follows the stream (the HTTP bearer on every request) may refuse a later request too.
        client.on('error', (e) => {
          if (isHoopError(e) && e.code === PEER_REFUSED) o.onEvent?.({ type: 'peer-refused', peer, error: e.message });
        });
      }
      const remote = await openTunnelSocket(o.broker, o.connection, await o.getToken(), peer, tunnelQuery, o.tunnelHeaders);
      sockets.add(remote.socket);
      o.onEvent?.({ type: 'accepted', peer });
      spliceOverTunnel(client, remote, () => {
        sockets.delete(remote.socket);
        o.onEvent?.({ type: 'closed', peer });
      });
      client.resume();
    })().catch((e: Error) => {
      o.onEvent?.({ type: 'refused', peer, error: errorMessage(e) });
      if (o.onRefused) o.onRefused(client, e);
      else client.destroy();
    });
  };

  // No Nagle: a relay passes on what it gets at once. With it, a reply that arrives as two messages (HTTP headers,
  // then the body) waited for the client's delayed ACK: 40 ms per request.
  const server: Server = createServer({ noDelay: true }, onConnection('tcp'));
  if (o.ownerOnly && CAN_CHECK_PEER_OWNER && ownUid !== undefined) prepareOwnerChecks();
  await listen(server, (done) => server.listen(o.port ?? 0, host, done));
  const addr = server.address();
  port = typeof addr === 'object' && addr ? addr.port : 0;
  const socketPath = o.socketPath?.(port);
  const unix = socketPath ? createServer(onConnection('unix')) : undefined;
  if (unix) {
    await listen(unix, (done) => unix.listen(socketPath, done)).catch(async (e: unknown) => {
      await new Promise((r) => server.close(r));
      throw e;
    });
  }
  return {
    host,
    port,
    ...(socketPath ? { socketPath } : {}),
    close: async ({ drainMs = 0 } = {}) => {
      const closed = Promise.all([server, ...(unix ? [unix] : [])].map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      const deadline = Date.now() + drainMs;
      while (sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

function listen(server: Server, start: (done: () => void) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    start(() => {
      server.off('error', reject);
      resolve();
    });
  });
}

function noop(): void {}

function describeError(e: unknown): string {
  return isHoopError(e) && e.hint ? `${e.message}. ${e.hint}` : errorMessage(e);
}
