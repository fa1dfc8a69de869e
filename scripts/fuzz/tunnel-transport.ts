/** Transports over the broker's tunnel endpoint: the CLI's own WebSocket client, or a raw socket framing by hand. */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { openTunnel } from '../../src/tunnel/ws-transport.js';
import type { Rng } from './rng.js';
import type { Transport } from './transport.js';

/** A tunnel opened the way `hoopctl connect` opens one: every write is one well-formed binary WebSocket message. */
export async function tunnelTransport(brokerUrl: string, connection: string, token: string): Promise<Transport> {
  const stream: Duplex = await openTunnel(brokerUrl, connection, token);
  stream.on('error', () => undefined);
  let closed = false;
  const closeListeners: Array<() => void> = [];
  const onClose = () => {
    if (closed) return;
    closed = true;
    for (const l of closeListeners) l();
  };
  stream.on('end', onClose);
  stream.on('close', onClose);
  return {
    write: (b) => {
      if (!stream.destroyed && !stream.writableEnded) stream.write(b);
    },
    end: () => stream.end(),
    destroy: () => stream.destroy(),
    onData: (l) => stream.on('data', l),
    onClose: (l) => (closed ? l() : closeListeners.push(l)),
    closeReason: () => undefined,
  };
}

export type WsMutation =
  | 'opcode' | 'rsv' | 'unmasked' | 'orphan-continuation' | 'interleaved-fragment' | 'big-control' | 'fragmented-control'
  | 'close-bad-code' | 'close-short' | 'close-bad-utf8' | 'text-bad-utf8' | 'huge-length' | 'over-max-payload' | 'header-flip'
  | 'split-frame' | 'ping' | 'fragmented-ok' | 'upgrade';

/**
 * A WebSocket client written for the fuzzer: it frames the PostgreSQL bytes itself, split at random points, with
 * pings and fragments in between, and with a given chance mangles a frame — reserved opcodes and bits, unmasked
 * frames, broken fragmentation, oversized control frames, bad close frames, invalid UTF-8, impossible lengths.
 * The broker's WebSocket server must end that tunnel alone (a close code) and nothing else.
 */
export class RawWebSocketTransport implements Transport {
  readonly #socket: Socket;
  readonly #r: Rng;
  readonly #rate: number;
  readonly mutations: Partial<Record<WsMutation, number>> = {};
  #in: Buffer = Buffer.alloc(0);
  #closeCode: number | undefined;
  #httpStatus: number | undefined;
  #closed = false;
  #closeListeners: Array<() => void> = [];
  #dataListeners: Array<(b: Buffer) => void> = [];

  private constructor(socket: Socket, r: Rng, rate: number) {
    this.#socket = socket;
    this.#r = r;
    this.#rate = rate;
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (this.#closed) return;
      this.#closed = true;
      for (const l of this.#closeListeners) l();
    });
  }

  /** Connects and upgrades (the request itself sometimes mutated); resolves even when the upgrade is refused. */
  static async open(brokerUrl: string, connection: string, token: string, r: Rng, rate: number): Promise<RawWebSocketTransport> {
    const url = new URL(brokerUrl);
    const socket = connect(Number(url.port), url.hostname);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const t = new RawWebSocketTransport(socket, r, rate);
    let request = Buffer.from(
      `GET /api/v1/tunnel/${connection} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${token}\r\n` +
        `User-Agent: hoopctl-fuzz\r\n\r\n`,
    );
    if (r.chance(rate / 4)) {
      t.#count('upgrade');
      request = Buffer.from(request);
      // Damage outside the token (a damaged token is the token suite's business), or cut the request short.
      const tokenAt = request.indexOf(token);
      for (let i = 0, n = 1 + r.int(3); i < n; i++) {
        const at = r.int(request.length);
        if (at < tokenAt || at >= tokenAt + token.length) request[at] = r.pick([0x00, 0x0a, 0x0d, 0x20, 0x3a, 0xff, r.int(256)]);
      }
      if (r.chance(0.2)) request = request.subarray(0, r.int(request.length));
    }
    socket.write(request);
    await t.#readUpgrade();
    return t;
  }

  #count(k: WsMutation): void {
    this.mutations[k] = (this.mutations[k] ?? 0) + 1;
  }

  async #readUpgrade(): Promise<void> {
    let head = Buffer.alloc(0);
    await new Promise<void>((resolve) => {
      const onData = (d: Buffer) => {
        head = Buffer.concat([head, d]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        this.#socket.off('data', onData);
        this.#httpStatus = Number(/^HTTP\/1\.1 (\d{3})/.exec(head.toString('latin1'))?.[1] ?? 0);
        this.#socket.on('data', (b: Buffer) => this.#onFrames(b));
        const rest = head.subarray(end + 4);
        if (rest.length > 0) this.#onFrames(rest);
        resolve();
      };
      this.#socket.on('data', onData);
      this.#socket.once('close', () => resolve());
    });
  }

  /** Whether the upgrade succeeded (101): only then is there a session to fuzz. */
  get upgraded(): boolean {
    return this.#httpStatus === 101;
  }

  get httpStatus(): number | undefined {
    return this.#httpStatus;
  }

  /** Server frames: binary data goes to the listeners, a close frame's code is kept. */
  #onFrames(b: Buffer): void {
    this.#in = this.#in.length === 0 ? b : Buffer.concat([this.#in, b]);
    for (;;) {
      if (this.#in.length < 2) return;
      const opcode = this.#in[0]! & 0x0f;
      let len = this.#in[1]! & 0x7f;
      let at = 2;
      if (len === 126) {
        if (this.#in.length < 4) return;
        len = this.#in.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (this.#in.length < 10) return;
        len = Number(this.#in.readBigUInt64BE(2));
        at = 10;
      }
      if (this.#in.length < at + len) return;
      const payload = this.#in.subarray(at, at + len);
      this.#in = this.#in.subarray(at + len);
      if (opcode === 0x2 || opcode === 0x0 || opcode === 0x1) for (const l of this.#dataListeners) l(payload);
      else if (opcode === 0x8) this.#closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
    }
  }

  write(bytes: Buffer): void {
    if (this.#closed || this.#socket.writableEnded) return;
    const r = this.#r;
    // Cut the bytes at random points: the tunnel must reassemble a stream from any framing.
    let pos = 0;
    while (pos < bytes.length) {
      const n = Math.min(bytes.length - pos, r.chance(0.3) ? 1 + r.int(8) : 1 + r.int(4096));
      const payload = bytes.subarray(pos, pos + n);
      pos += n;
      if (r.chance(0.05)) {
        this.#count('ping');
        this.#socket.write(wsFrame({ opcode: 0x9, payload: r.bytes(r.int(20)) }));
      }
      if (r.chance(this.#rate)) this.#socket.write(this.#mangled(payload));
      else if (r.chance(0.1) && payload.length > 1) {
        this.#count('fragmented-ok');
        const cut = 1 + r.int(payload.length - 1);
        this.#socket.write(Buffer.concat([wsFrame({ opcode: 0x2, fin: false, payload: payload.subarray(0, cut) }), wsFrame({ opcode: 0x0, payload: payload.subarray(cut) })]));
      } else this.#socket.write(wsFrame({ opcode: 0x2, payload }));
    }
  }

  /** One frame carrying `payload`, broken in one way. */
  #mangled(payload: Buffer): Buffer {
    const r = this.#r;
    const kinds: WsMutation[] = [
      'opcode', 'rsv', 'unmasked', 'orphan-continuation', 'interleaved-fragment', 'big-control', 'fragmented-control',
      'close-bad-code', 'close-short', 'close-bad-utf8', 'text-bad-utf8', 'huge-length', 'over-max-payload', 'header-flip', 'split-frame',
    ];
    const kind = r.pick(kinds);
    this.#count(kind);
    switch (kind) {
      case 'opcode':
        return wsFrame({ opcode: r.pick([3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf]), payload });
      case 'rsv':
        return wsFrame({ opcode: 0x2, rsv: 1 + r.int(7), payload });
      case 'unmasked':
        return wsFrame({ opcode: 0x2, masked: false, payload });
      case 'orphan-continuation':
        return wsFrame({ opcode: 0x0, payload });
      case 'interleaved-fragment':
        return Buffer.concat([wsFrame({ opcode: 0x2, fin: false, payload }), wsFrame({ opcode: 0x2, payload })]);
      case 'big-control':
        return wsFrame({ opcode: r.pick([0x8, 0x9, 0xa]), payload: r.bytes(126 + r.int(200)) });
      case 'fragmented-control':
        return wsFrame({ opcode: 0x9, fin: false, payload: r.bytes(r.int(10)) });
      case 'close-bad-code':
        return wsFrame({ opcode: 0x8, payload: Buffer.from([...u16(r.pick([0, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000, 65535])), 0x62, 0x79, 0x65]) });
      case 'close-short':
        return wsFrame({ opcode: 0x8, payload: Buffer.from([0x03]) });
      case 'close-bad-utf8':
        return wsFrame({ opcode: 0x8, payload: Buffer.from([0x03, 0xe8, 0xc3, 0x28, 0xff]) });
      case 'text-bad-utf8':
        return wsFrame({ opcode: 0x1, payload: Buffer.concat([payload, Buffer.from([0xc3, 0x28, 0xa0, 0xa1, 0xf0, 0x28, 0x8c, 0xbc])]) });
      case 'huge-length': {
        // A 64-bit length with its top bit set: no such payload can exist.
        const head = Buffer.from([0x82, 0xff, 0x80 | r.int(128), 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]);
        return Buffer.concat([head, payload]);
      }
      case 'over-max-payload': {
        // Announces more than the broker's 16 MiB message limit.
        const head = Buffer.alloc(14);
        head[0] = 0x82;
        head[1] = 0xff;
        head.writeBigUInt64BE(BigInt(16 * 1024 * 1024 + 1 + r.int(1 << 20)), 2);
        return Buffer.concat([head, payload]);
      }
      case 'header-flip': {
        // FIN, RSV, opcode or the mask bit: a flipped length would only leave the server waiting, as it should.
        const f = wsFrame({ opcode: 0x2, payload });
        if (r.chance(0.8)) f[0]! ^= 1 << r.int(8);
        else f[1]! ^= 0x80;
        return f;
      }
      case 'split-frame': {
        // A whole frame delivered one byte at a time: legal, only slow.
        const f = wsFrame({ opcode: 0x2, payload });
        for (let i = 0; i < f.length - 1; i++) this.#socket.write(f.subarray(i, i + 1));
        return f.subarray(f.length - 1);
      }
    }
    return wsFrame({ opcode: 0x2, payload });
  }

  end(): void {
    if (!this.#closed && !this.#socket.writableEnded) {
      this.#socket.write(wsFrame({ opcode: 0x8, payload: Buffer.from(u16(1000)) }));
      this.#socket.end();
    }
  }

  destroy(): void {
    this.#socket.destroy();
  }

  onData(l: (b: Buffer) => void): void {
    this.#dataListeners.push(l);
  }

  onClose(l: () => void): void {
    if (this.#closed) l();
    else this.#closeListeners.push(l);
  }

  closeReason(): string | undefined {
    if (this.#httpStatus !== 101) return `upgrade answered ${this.#httpStatus || 'nothing'}`;
    if (this.#closeCode !== undefined && this.#closeCode !== 1000) return `websocket close ${this.#closeCode}`;
    return undefined;
  }
}

function u16(v: number): number[] {
  return [(v >> 8) & 0xff, v & 0xff];
}

/** A client WebSocket frame (RFC 6455 §5.2): masked unless told otherwise. */
export function wsFrame(f: { opcode: number; payload: Buffer; fin?: boolean; rsv?: number; masked?: boolean }): Buffer {
  const masked = f.masked ?? true;
  const n = f.payload.length;
  const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + ext + (masked ? 4 : 0));
  head[0] = ((f.fin ?? true) ? 0x80 : 0) | ((f.rsv ?? 0) << 4) | f.opcode;
  head[1] = (masked ? 0x80 : 0) | (ext === 0 ? n : ext === 2 ? 126 : 127);
  if (ext === 2) head.writeUInt16BE(n, 2);
  if (ext === 8) head.writeBigUInt64BE(BigInt(n), 2);
  if (!masked) return Buffer.concat([head, f.payload]);
  const key = randomBytes(4);
  key.copy(head, 2 + ext);
  const body = Buffer.alloc(n);
  for (let i = 0; i < n; i++) body[i] = f.payload[i]! ^ key[i & 3]!;
  return Buffer.concat([head, body]);
}
