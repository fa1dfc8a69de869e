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
  /** The connection the session serves: a cancel that came for another connection does not reach it. */
  connection?: string;
  /** Who the session belongs to: a cancel from another identity is refused (see `cancel`). */
  owner?: { issuer: string; subject: string };
  /**
   * The client came through a listener whose cancels carry no token (the broker's PostgreSQL front door): the key
   * alone may cancel, as with PostgreSQL itself, since that listener has no identity to compare.
   */
  keyAlone?: boolean;
  /** Appends to the session's own recording: where a cancel of it is recorded. */
  record?: (type: string, data: Record<string, unknown>) => Promise<void>;
  /**
   * Told of each cancel of it while in flight: the session waits for it before it closes, so a statement that ends
   * (cancelled) and a client that leaves at once still find the cancel in the recording.
   */
  track?: (cancel: Promise<unknown>) => void;
}

/** Who sent a cancel, as far as the connection it came on says. */
export interface CancelSender {
  /** The tunnel's verified identity; absent on the front door (a CancelRequest has no room for a token). */
  identity?: { issuer: string; subject: string };
  /** The connection the tunnel was opened for (absent on the front door: the key names the session). */
  connection?: string;
  clientAddr?: string;
  /** Where it came in: 'tunnel', 'pg-front-door', or 'session' (an old client's cancel on a session tunnel). */
  via: string;
}

/** What became of a cancel; `refused`: the key matched, the sender may not cancel that session. */
export interface CancelResult {
  outcome: CancelOutcome;
  /** Why it was refused, for the record. */
  reason?: string;
  /** The session the key belongs to, when it matched one. */
  matched: boolean;
}

export interface CancelRegistration {
  /** The key handed to the client in BackendKeyData instead of the backend's. */
  readonly key: CancelKey;
  /** Forget the mapping; called when the session ends. */
  release(): void;
}

export type CancelOutcome = 'forwarded' | 'intercepted' | 'unknown-key' | 'failed' | 'refused';

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
    return target ? this.#send(target) : 'unknown-key';
  }

  /**
   * A client's cancel, judged and recorded in the session it names: the key must match (as for PostgreSQL), and, where
   * the sender's identity is known (a tunnel's token), it must be the session's owner and the tunnel's connection
   * the session's: a cancel key alone is 63 random bits, but a different identity holding it is a leak, not a right
   * (fail closed). A key matching no session is left to the caller to record (no session of this broker has it).
   */
  async cancel(key: CancelKey, from: CancelSender): Promise<CancelResult> {
    const target = this.lookup(key);
    if (!target) return { outcome: 'unknown-key', matched: false };
    const reason = refusal(target, from);
    const work = (async (): Promise<CancelResult> => {
      const outcome = reason ? 'refused' : await this.#send(target);
      await target.record?.('cancel-request', {
        outcome, via: from.via,
        ...(from.identity ? { by: { subject: from.identity.subject, issuer: from.identity.issuer } } : {}),
        ...(from.clientAddr ? { clientAddr: from.clientAddr } : {}),
        ...(reason ? { reason } : {}),
      }).catch(() => undefined);
      return { outcome, matched: true, ...(reason ? { reason } : {}) };
    })();
    target.track?.(work);
    return work;
  }

  #send(target: CancelTarget): Promise<CancelOutcome> {
    if (target.intercept?.()) return Promise.resolve('intercepted');
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

/** Why `from` may not cancel `target`'s statement; undefined when it may. */
function refusal(target: CancelTarget, from: CancelSender): string | undefined {
  if (from.connection !== undefined && target.connection !== undefined && from.connection !== target.connection) {
    return `the cancel came through a tunnel to ${from.connection}; the session is on ${target.connection}`;
  }
  if (!from.identity) return target.keyAlone || !target.owner ? undefined : 'a cancel without a token may only stop a session opened through the PostgreSQL front door';
  if (target.owner && (target.owner.subject !== from.identity.subject || target.owner.issuer !== from.identity.issuer)) {
    return `sent by ${from.identity.subject}, who does not own the session`;
  }
  return undefined;
}
