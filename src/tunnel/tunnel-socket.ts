/**
 * The local listener's data path to the broker: the same WebSocket tunnel `openTunnel` opens (same URL, headers,
 * refusals), but once upgraded the socket is framed here, not by `ws` and a stream wrapper around it. Profiles of
 * `hoopctl connect` under pgbench put half of its CPU in those layers (a Writable parser, an EventEmitter per
 * message, a Duplex, pipe, and a writev of header and payload per frame): here a chunk from the local client is one
 * frame and one write(), and the frames of one chunk from the broker are one write() to the client.
 */
import { randomBytes } from 'node:crypto';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { UserError } from '../lib/errors.js';
import { WsFrameDecoder, WsFrameError, WsOp, closePayload, encodeFrame, webSocketAccept } from '../lib/ws-frame-codec.js';
import { USER_AGENT, brokerRefusal, tunnelUrl } from './ws-transport.js';

const HANDSHAKE_TIMEOUT_MS = 15_000;
const MAX_PAYLOAD = 16 * 1024 * 1024;

/** An upgraded tunnel: the broker's socket and what it sent right after its 101 answer. */
export interface TunnelSocket {
  socket: Socket;
  head: Buffer;
}

/**
 * Opens one tunnel as `openTunnel` does, and resolves with the upgraded socket itself. Rejects with the broker's
 * own reason (401 token, 403 access, 404 connection) or BROKER_UNREACHABLE.
 */
export function openTunnelSocket(broker: string, connection: string, token: string, peer?: string, query?: Record<string, string>, headers: Record<string, string> = {}): Promise<TunnelSocket> {
  const url = new URL(tunnelUrl(broker, connection, query));
  const key = randomBytes(16).toString('base64');
  const request = url.protocol === 'wss:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request({
      protocol: url.protocol === 'wss:' ? 'https:' : 'http:',
      hostname: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port || (url.protocol === 'wss:' ? 443 : 80),
      path: url.pathname + url.search,
      timeout: HANDSHAKE_TIMEOUT_MS,
      headers: {
        ...headers,
        authorization: `Bearer ${token}`,
        'user-agent': USER_AGENT,
        ...(peer ? { 'x-hoopctl-peer': peer } : {}),
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-key': key,
        'sec-websocket-version': '13',
      },
    });
    const unreachable = (message: string) => new UserError(`cannot reach the broker at ${broker}: ${message}`, { code: 'BROKER_UNREACHABLE', hint: 'check the broker URL and that it is running' });
    req.once('timeout', () => req.destroy(new Error('opening the tunnel timed out')));
    req.once('error', (e: Error) => reject(unreachable(e.message)));
    req.once('response', (res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d.slice(0, 4096)));
      res.on('end', () => reject(brokerRefusal(res.statusCode ?? 0, body)));
      res.on('error', (e: Error) => reject(unreachable(e.message)));
    });
    req.once('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
      const expected = webSocketAccept(key);
      if (String(res.headers.upgrade).toLowerCase() !== 'websocket' || res.headers['sec-websocket-accept'] !== expected) {
        socket.destroy();
        return reject(unreachable('the answer to the tunnel request was not a WebSocket upgrade'));
      }
      socket.setTimeout(0);
      socket.setNoDelay(true);
      resolve({ socket, head });
    });
    req.end();
  });
}

/**
 * Carries `client`'s bytes over the tunnel both ways, with backpressure each way, until either side ends; then both
 * are destroyed and `onClose` runs once. The broker's pings are answered, its close is echoed; a frame against the
 * rules ends the tunnel with the close code that says why.
 */
export function spliceOverTunnel(client: Duplex, tunnel: TunnelSocket, onClose: () => void): void {
  const { socket } = tunnel;
  const decoder = new WsFrameDecoder({ expectMasked: false, maxPayload: MAX_PAYLOAD });
  let closed = false;
  let closeSent = false;
  const done = () => {
    if (closed) return;
    closed = true;
    socket.destroy();
    // What the broker sent last (a FATAL before it closed) may still be on its way to the client: let it out.
    if (client.writableLength > 0 && !client.destroyed) {
      client.end();
      client.once('finish', () => client.destroy());
      setTimeout(() => client.destroy(), 2_000).unref();
    } else client.destroy();
    onClose();
  };
  const send = (opcode: number, payload: Buffer): boolean => {
    const frame = encodeFrame(opcode, payload, true);
    if (!Array.isArray(frame)) return socket.write(frame);
    socket.cork();
    socket.write(frame[0]);
    const ok = socket.write(frame[1]);
    socket.uncork();
    return ok;
  };
  const sendClose = (code: number, reason?: string) => {
    if (closeSent || socket.destroyed) return;
    closeSent = true;
    send(WsOp.Close, closePayload(code, reason));
    socket.end();
  };

  const fromBroker = (chunk: Buffer) => {
    let frames;
    try {
      frames = decoder.push(chunk);
    } catch (e) {
      sendClose(e instanceof WsFrameError ? e.code : 1002, e instanceof Error ? e.message : undefined);
      return done();
    }
    let out: Buffer | Buffer[] | undefined;
    for (const f of frames) {
      if (f.opcode === WsOp.Binary || f.opcode === WsOp.Continuation || f.opcode === WsOp.Text) {
        if (f.payload.length === 0) continue;
        if (out === undefined) out = f.payload;
        else if (Array.isArray(out)) out.push(f.payload);
        else out = [out, f.payload];
      } else if (f.opcode === WsOp.Ping) {
        send(WsOp.Pong, f.payload);
      } else if (f.opcode === WsOp.Close) {
        // The broker ends the tunnel: what came before goes to the client, which then sees the end of the stream.
        if (out !== undefined) client.write(Array.isArray(out) ? Buffer.concat(out) : out);
        out = undefined;
        sendClose(f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1000);
        client.end();
        return;
      }
    }
    if (out === undefined) return;
    if (!client.write(Array.isArray(out) ? Buffer.concat(out) : out)) {
      socket.pause();
      client.once('drain', () => socket.resume());
    }
  };
  const fromClient = (chunk: Buffer) => {
    if (closeSent) return;
    if (!send(WsOp.Binary, chunk)) {
      client.pause();
      socket.once('drain', () => client.resume());
    }
  };

  socket.on('data', fromBroker);
  client.on('data', fromClient);
  // The client finished sending (psql's Terminate, then FIN): the tunnel's close tells the broker, which ends it.
  client.on('end', () => sendClose(1000));
  socket.on('end', () => {
    if (!client.destroyed) client.end();
  });
  for (const s of [client, socket]) {
    s.on('error', done);
    s.on('close', done);
  }
  if (tunnel.head.length > 0) fromBroker(tunnel.head);
}
