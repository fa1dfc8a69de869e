import { randomInt, timingSafeEqual } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { createCancelRequest, type CancelKey } from './messages.js';

/** Where a cancel for one session goes: the real backend's address and key. */
export interface CancelTarget {
  host: string;
  port: number;
  key: CancelKey;
  /**
   * Asked first: returns true when the session handled the cancel itself (a statement held for review is
   * withdrawn; the backend is not running anything of it to cancel).
   */
  intercept?: () => boolean;
}

export interface CancelRegistration {
  /** The key handed to the client in BackendKeyData instead of the backend's. */
  readonly key: CancelKey;
  /** Forget the mapping; called when the session ends. */
  release(): void;
}

export type CancelOutcome = 'forwarded' | 'intercepted' | 'unknown-key' | 'failed';

export interface CancelRegistryOptions {
  /** Opens the TCP connection for a forwarded CancelRequest; injected by tests. */
  connect?: (host: string, port: number) => Socket;
  /** How long a forwarded cancel may take before the broker gives up. */
  timeoutMs?: number;
}

/**
 * The broker hands each client its own random (pid, secret) and keeps the real backend key here, so a
 * client never learns a backend process id or key, and a CancelRequest arriving on a new tunnel
 * connection can be routed to the right server. Shared by all sessions of one broker process.
 */
export class CancelRegistry {
  readonly #entries = new Map<number, { secret: number; target: CancelTarget }>();
  readonly #connect: (host: string, port: number) => Socket;
  readonly #timeoutMs: number;

  constructor(options: CancelRegistryOptions = {}) {
    this.#connect = options.connect ?? ((host, port) => netConnect({ host, port }));
    this.#timeoutMs = options.timeoutMs ?? 5_000;
  }

  get size(): number {
    return this.#entries.size;
  }

  register(target: CancelTarget): CancelRegistration {
    let pid: number;
    do pid = randomInt(1, 0x7fffffff);
    while (this.#entries.has(pid));
    const secret = randomInt(-0x80000000, 0x7fffffff);
    const entry = { secret, target };
    this.#entries.set(pid, entry);
    return {
      key: { pid, secret },
      release: () => {
        if (this.#entries.get(pid) === entry) this.#entries.delete(pid);
      },
    };
  }

  /** The backend target for a client-side key, if the key is known and the secret matches. */
  lookup(key: CancelKey): CancelTarget | undefined {
    const entry = this.#entries.get(key.pid);
    if (!entry) return undefined;
    const a = Buffer.alloc(4);
    const b = Buffer.alloc(4);
    a.writeInt32BE(entry.secret);
    b.writeInt32BE(key.secret | 0);
    return timingSafeEqual(a, b) ? entry.target : undefined;
  }

  /**
   * Sends a real CancelRequest for the matching backend on a fresh connection. Unknown keys are
   * ignored, as a PostgreSQL server would, but reported so the caller can record them.
   */
  async forward(key: CancelKey): Promise<CancelOutcome> {
    const target = this.lookup(key);
    if (!target) return 'unknown-key';
    if (target.intercept?.()) return 'intercepted';
    return new Promise<CancelOutcome>((resolve) => {
      const socket = this.#connect(target.host, target.port);
      const done = (outcome: CancelOutcome) => {
        clearTimeout(timer);
        socket.destroy();
        resolve(outcome);
      };
      const timer = setTimeout(() => done('failed'), this.#timeoutMs);
      socket.on('error', () => done('failed'));
      socket.on('connect', () => {
        socket.end(createCancelRequest(target.key));
      });
      // The server closes the connection once it has read the request; it never answers.
      socket.on('close', () => done('forwarded'));
      socket.resume();
    });
  }
}
