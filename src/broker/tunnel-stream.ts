/**
 * A tunnel's WebSocket on the broker as the Duplex a connection type's module serves: the upgrade answered here and
 * the frames read and written with the shared codec, instead of `ws` and `createWebSocketStream` (a Writable frame
 * parser, an EventEmitter hop per message, a second Duplex, and a writev of header and payload per frame). Profiles
 * of the broker under pgbench put those layers beside the recording as its largest cost per message. Only what a
 * tunnel uses: data messages (read as bytes), ping/pong and close; no extensions, no subprotocols.
 * @see https://www.rfc-editor.org/rfc/rfc6455
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { WsFrameDecoder, WsFrameError, WsOp, closePayload, encodeFrame, webSocketAccept } from '../lib/ws-frame-codec.js';

/** Why an upgrade request is not a WebSocket handshake this broker takes; undefined when it is. */
export function upgradeProblem(req: IncomingMessage): string | undefined {
  if (req.method !== 'GET') return 'a WebSocket handshake is a GET request';
  if (String(req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return 'the Upgrade header must be websocket';
  const key = req.headers['sec-websocket-key'];
  if (typeof key !== 'string' || !/^[+/0-9A-Za-z]{22}==$/.test(key)) return 'missing or invalid Sec-WebSocket-Key';
  if (req.headers['sec-websocket-version'] !== '13') return 'unsupported WebSocket version (13 is)';
  return undefined;
}

/**
 * Completes the handshake `req` asked for (check it with upgradeProblem first) and returns the tunnel's stream.
 * `head` is what the client sent after its request.
 */
export function acceptTunnel(req: IncomingMessage, socket: Socket, head: Buffer, options: { maxPayload: number }): TunnelStream {
  const accept = webSocketAccept(String(req.headers['sec-websocket-key']));
  socket.setTimeout(0);
  socket.setNoDelay(true);
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  return new TunnelStream(socket, head, options.maxPayload);
}

/**
 * The client's messages, read as one byte stream; what is written goes out as one binary frame per write. Emits
 * `message` whenever the client sent data (idle limits). `end()` sends a close frame (1000) and ends the socket.
 */
export class TunnelStream extends Duplex {
  readonly #socket: Socket;
  readonly #decoder: WsFrameDecoder;
  #closeSent = false;
  #ended = false;

  constructor(socket: Socket, head: Buffer, maxPayload: number) {
    super({ allowHalfOpen: false });
    this.#socket = socket;
    this.#decoder = new WsFrameDecoder({ expectMasked: true, maxPayload });
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () => this.#end());
    socket.on('close', () => this.#end());
    socket.on('error', (e) => this.destroy(e));
    if (head.length > 0) this.#onData(head);
  }

  /** A ping frame (keepalive: idle connections through load balancers stay open). */
  ping(): void {
    this.#send(WsOp.Ping, Buffer.alloc(0));
  }

  /** Sends a close frame with `code` and ends the socket once it is out; the stream then ends. */
  close(code = 1000, reason?: string): void {
    if (this.#closeSent || this.#socket.destroyed) return;
    this.#closeSent = true;
    this.#send(WsOp.Close, closePayload(code, reason));
    this.#socket.end();
  }

  #onData(chunk: Buffer): void {
    let frames;
    try {
      frames = this.#decoder.push(chunk);
    } catch (e) {
      const err = e instanceof WsFrameError ? e : new WsFrameError(String(e), 1002);
      this.close(err.code, err.message);
      this.#end();
      return;
    }
    let data = false;
    for (const f of frames) {
      if (f.opcode === WsOp.Binary || f.opcode === WsOp.Continuation || f.opcode === WsOp.Text) {
        if (f.payload.length === 0 || this.#ended) continue;
        data = true;
        if (!this.push(f.payload)) this.#socket.pause();
      } else if (f.opcode === WsOp.Ping) {
        this.#send(WsOp.Pong, f.payload);
      } else if (f.opcode === WsOp.Close) {
        // The client is done: echo its close (RFC 6455 §5.5.1), and the stream ends after what it sent before.
        this.close(f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1000);
        this.#end();
        break;
      }
    }
    if (data) this.emit('message');
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.push(null);
  }

  #send(opcode: number, payload: Buffer, cb?: (e?: Error | null) => void): void {
    const s = this.#socket;
    if (s.destroyed || !s.writable) {
      cb?.(new Error('the tunnel is closed'));
      return;
    }
    const frame = encodeFrame(opcode, payload, false);
    if (!Array.isArray(frame)) {
      s.write(frame, cb);
      return;
    }
    s.cork();
    s.write(frame[0]);
    s.write(frame[1], cb);
    s.uncork();
  }

  override _read(): void {
    this.#socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.#writeData(chunk, cb);
  }

  /** Writes queued while one was on its way go out as one frame. */
  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (e?: Error | null) => void): void {
    this.#writeData(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), cb);
  }

  #writeData(data: Buffer, cb: (e?: Error | null) => void): void {
    if (this.#closeSent) return cb(new Error('the tunnel is closing'));
    this.#send(WsOp.Binary, data, cb);
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.close(1000);
    cb();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    // After a close frame, what is still queued (that frame, a FATAL before it) goes out before the socket closes.
    if (this.#closeSent && !err) this.#socket.destroySoon();
    else this.#socket.destroy();
    cb(err);
  }
}
