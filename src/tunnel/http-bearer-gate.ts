/**
 * The HTTP and Kubernetes local listener's per-tunnel bearer: every request on a client connection must carry
 * `Authorization: Bearer <tunnel secret>` (kubectl sends the kubeconfig's `token` that way; curl takes
 * `-H "Authorization: Bearer …"` or `--oauth2-bearer …`), and the header is taken out before the request rides the
 * tunnel, so neither the broker nor the backend ever sees it. The stream is followed request by request — a head,
 * then its body by Content-Length or chunked framing — until an upgrade (kubectl exec, port-forward, WebSocket) or
 * CONNECT turns it into raw bytes. Anything this cannot frame for certain is refused rather than passed on.
 * @see https://www.rfc-editor.org/rfc/rfc9112 (message framing)
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { HoopError } from '../lib/errors.js';
import { CLIENT_GONE, PEER_REFUSED } from './local-listener.js';

const MAX_HEAD = 64 * 1024;
const MAX_CHUNK_LINE = 4096;
const CRLF2 = Buffer.from('\r\n\r\n');

const State = { Head: 'head', Fixed: 'fixed', ChunkSize: 'chunk-size', ChunkData: 'chunk-data', ChunkEnd: 'chunk-end', Trailers: 'trailers', Raw: 'raw' } as const;
type State = (typeof State)[keyof typeof State];

function refused(message: string): HoopError {
  return new HoopError(message, { code: PEER_REFUSED });
}

function sameSecret(given: string, expected: string): boolean {
  return timingSafeEqual(createHash('sha256').update(given).digest(), createHash('sha256').update(expected).digest());
}

/**
 * Follows one client connection's requests: `feed` returns the bytes to forward (heads with the tunnel's bearer
 * taken out) and throws PEER_REFUSED for a request without it or one it cannot frame.
 */
export class BearerGate {
  readonly #secret: string;
  #state: State = State.Head;
  #buf: Buffer = Buffer.alloc(0);
  #remaining = 0;
  /** Request heads passed so far. */
  requests = 0;

  constructor(secret: string) {
    this.#secret = secret;
  }

  feed(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let data: Buffer = this.#buf.length > 0 ? Buffer.concat([this.#buf, chunk]) : chunk;
    this.#buf = Buffer.alloc(0);
    while (data.length > 0) {
      switch (this.#state) {
        case State.Raw:
          out.push(data);
          return out;
        case State.Fixed:
        case State.ChunkData: {
          const n = Math.min(this.#remaining, data.length);
          out.push(data.subarray(0, n));
          data = data.subarray(n);
          this.#remaining -= n;
          if (this.#remaining === 0) this.#state = this.#state === State.Fixed ? State.Head : State.ChunkEnd;
          break;
        }
        case State.Head: {
          const end = data.indexOf(CRLF2);
          if (end < 0) {
            if (data.length > MAX_HEAD) throw refused('request head too large');
            this.#buf = data;
            return out;
          }
          out.push(this.#head(data.subarray(0, end + 4).toString('latin1')));
          data = data.subarray(end + 4);
          break;
        }
        case State.ChunkSize:
        case State.ChunkEnd:
        case State.Trailers: {
          const eol = data.indexOf('\r\n');
          if (eol < 0) {
            if (data.length > MAX_CHUNK_LINE) throw refused('malformed chunked body');
            this.#buf = data;
            return out;
          }
          const line = data.subarray(0, eol).toString('latin1');
          out.push(data.subarray(0, eol + 2));
          data = data.subarray(eol + 2);
          if (this.#state === State.ChunkEnd) {
            if (line !== '') throw refused('malformed chunked body');
            this.#state = State.ChunkSize;
          } else if (this.#state === State.Trailers) {
            if (line === '') this.#state = State.Head;
          } else {
            const m = /^([0-9a-fA-F]{1,8})(?:[ \t]*;.*)?$/.exec(line);
            if (!m) throw refused('malformed chunked body');
            this.#remaining = parseInt(m[1]!, 16);
            this.#state = this.#remaining === 0 ? State.Trailers : State.ChunkData;
          }
          break;
        }
      }
    }
    return out;
  }

  /** Checks and rewrites one request head; sets how its body is framed. */
  #head(text: string): Buffer {
    const lines = text.slice(0, -4).split('\r\n');
    const requestLine = lines[0] ?? '';
    const method = /^([A-Z]+) \S+ HTTP\/1\.[01]$/.exec(requestLine)?.[1];
    if (!method) throw refused('not an HTTP/1.1 request');
    const kept: string[] = [requestLine];
    let authorized = false;
    let length: number | undefined;
    let chunked = false;
    let upgrade = false;
    let connectionUpgrade = false;
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon <= 0 || /^[ \t]/.test(line)) throw refused('malformed request header');
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === 'authorization') {
        const m = /^Bearer[ \t]+(\S+)$/i.exec(value);
        if (authorized || !m || !sameSecret(m[1]!, this.#secret)) throw refused("wrong or no bearer for this tunnel (send Authorization: Bearer <the tunnel's secret>)");
        authorized = true;
        continue;
      }
      if (name === 'content-length') {
        if (length !== undefined || !/^\d{1,15}$/.test(value)) throw refused('ambiguous Content-Length');
        length = Number(value);
      } else if (name === 'transfer-encoding') {
        if (!/(?:^|,)\s*chunked\s*$/i.test(value)) throw refused('unsupported Transfer-Encoding');
        chunked = true;
      } else if (name === 'upgrade') upgrade = true;
      else if (name === 'connection' && /(?:^|,)\s*upgrade\s*(?:,|$)/i.test(value)) connectionUpgrade = true;
      kept.push(line);
    }
    if (!authorized) throw refused("wrong or no bearer for this tunnel (send Authorization: Bearer <the tunnel's secret>)");
    if (chunked && length !== undefined) throw refused('both Content-Length and Transfer-Encoding');
    this.requests++;
    if (method === 'CONNECT' || (upgrade && connectionUpgrade)) this.#state = State.Raw;
    else if (chunked) this.#state = State.ChunkSize;
    else if (length) {
      this.#state = State.Fixed;
      this.#remaining = length;
    }
    return Buffer.from(`${kept.join('\r\n')}\r\n\r\n`, 'latin1');
  }
}

/** What a refused HTTP client reads: a 401 naming what to send. */
export function unauthorizedResponse(message: string): string {
  const body = JSON.stringify({ error: { code: 'TUNNEL_BEARER_REQUIRED', message: `hoopctl: ${message}` } });
  return (
    'HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm="hoopctl tunnel"\r\ncontent-type: application/json\r\n' +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
  );
}

/**
 * A client socket seen through the gate: reads give what the gate lets through, writes go to the socket as they
 * are. A later request without the bearer ends the connection with PEER_REFUSED.
 */
class GatedClient extends Duplex {
  readonly #socket: Socket;

  constructor(socket: Socket, gate: BearerGate, first: Buffer[]) {
    super({ allowHalfOpen: true });
    this.#socket = socket;
    for (const b of first) this.push(b);
    socket.on('data', (chunk: Buffer) => {
      let pass: Buffer[];
      try {
        pass = gate.feed(chunk);
      } catch (e) {
        socket.end(unauthorizedResponse((e as Error).message));
        this.destroy(e as Error);
        return;
      }
      for (const b of pass) if (!this.push(b)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('close', () => this.destroy());
    socket.on('error', (e) => this.destroy(e));
  }

  override _read(): void {
    this.#socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.#socket.write(chunk, cb);
  }

  override _final(cb: () => void): void {
    this.#socket.end(cb);
  }

  override _destroy(e: Error | null, cb: (e: Error | null) => void): void {
    if (!this.#socket.destroyed && !this.#socket.writableEnded) this.#socket.destroy();
    cb(e);
  }
}

/**
 * Reads the client's first request head and checks its bearer before anything rides the tunnel: resolves with the
 * gated stream, or rejects with PEER_REFUSED (the client got a 401) or CLIENT_GONE.
 */
export function requireBearer(socket: Socket, secret: string): Promise<Duplex> {
  const gate = new BearerGate(secret);
  const first: Buffer[] = [];
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      try {
        first.push(...gate.feed(chunk));
      } catch (e) {
        cleanup();
        socket.end(unauthorizedResponse((e as Error).message));
        return reject(e);
      }
      if (gate.requests === 0) return;
      cleanup();
      socket.pause();
      resolve(new GatedClient(socket, gate, first));
    };
    const onClose = () => {
      cleanup();
      reject(new HoopError('the client closed the connection before its first request', { code: CLIENT_GONE }));
    };
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.resume();
  });
}
