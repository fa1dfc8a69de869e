import type { Logger } from 'pino';
import type { Identity } from '../api/identity.js';
import type { Review } from '../api/review.js';
import { approvalRequiredReason, decideAccess } from '../policy/access.js';
import { HoopError } from '../lib/errors.js';
import type { Connection } from './config.js';
import { clientAddress, errors, type ClientPeer } from './http-util.js';
import type { SessionLimits } from './live-sessions.js';
import { lockedError, lockFor } from './locks.js';
import type { ReviewService } from './reviews/review-service.js';
import type { SessionService } from './session-service.js';
import type { Store } from './store/store.js';

export interface AdmissionDeps {
  store: Store;
  sessions: SessionService;
  reviews: ReviewService;
  logger: Logger;
  /** The connections now (a reload swaps them). */
  connections: () => ReadonlyMap<string, Connection>;
  /** Top-level session limits, the defaults of every connection's `access.session`. */
  defaultLimits: SessionLimits;
}

/**
 * Who may open what, decided before any byte reaches a backend: locks first, then the connection's `access`, then
 * (just-in-time connections) an approved grant, then a session slot under `maxConcurrent`. Every refusal is recorded
 * as a refused session, so `hoopctl sessions` shows who knocked and why they were turned away.
 */
export class Admission {
  readonly #deps: AdmissionDeps;
  /** Sessions open per identity per connection, for `maxConcurrent`. */
  readonly #slots = new Map<string, number>();

  constructor(deps: AdmissionDeps) {
    this.#deps = deps;
  }

  /** Resolves the connection an identity asks for, or refuses (locked, unknown, not admitted). */
  async authorize(identity: Identity, name: string, req: ClientPeer): Promise<Connection> {
    const { store, sessions, logger } = this.#deps;
    const connections = this.#deps.connections();
    const lock = await lockFor(store, identity);
    if (lock) {
      const e = lockedError(lock);
      await sessions.refuse(identity, name, connections.get(name)?.type ?? 'unknown', clientAddress(req), e.message);
      logger.info({ subject: identity.subject, connection: name, lock: lock.id }, 'access refused: identity locked');
      throw e;
    }
    const connection = connections.get(name);
    if (!connection) {
      await sessions.refuse(identity, name, 'unknown', clientAddress(req), `no connection named ${name}`);
      throw errors.notFound(`connection ${name}`);
    }
    const decision = decideAccess(identity, connection.access, name);
    if (!decision.allowed) {
      await sessions.refuse(identity, name, connection.type, clientAddress(req), decision.reason);
      logger.info({ subject: identity.subject, connection: name }, 'access refused');
      throw errors.denied(decision.reason);
    }
    return connection;
  }

  /**
   * `authorize`, then for just-in-time connections the grant that lets the identity in now, then a session slot.
   * `release` gives the slot back (call it once the session ends, or when it never started).
   */
  async admitSession(identity: Identity, name: string, req: ClientPeer): Promise<{ connection: Connection; grant?: Review; release: () => void }> {
    const connection = await this.authorize(identity, name, req);
    let grant: Review | undefined;
    if (connection.access.approval) {
      grant = await this.#deps.reviews.activeGrant(identity, name);
      if (!grant) {
        const reason = approvalRequiredReason(name);
        await this.#deps.sessions.refuse(identity, name, connection.type, clientAddress(req), reason);
        throw new HoopError(reason, { code: 'APPROVAL_REQUIRED', status: 403, hint: `run \`hoopctl connect ${name} --reason "…" --duration 30m\`` });
      }
    }
    return { connection, grant, release: await this.#takeSlot(identity, connection, req) };
  }

  /** A connection's session limits: its own `access.session`, field by field over the top-level `sessions`. */
  limitsOf(connection: Connection): SessionLimits {
    const own = Object.fromEntries(Object.entries(connection.access.session ?? {}).filter(([, v]) => v !== undefined));
    return { ...this.#deps.defaultLimits, ...own };
  }

  /**
   * `maxConcurrent`: a slot per session of one identity on one connection, taken before the tunnel opens (so a
   * burst of opens cannot slip past the count) and given back when the session ends. Returns the release.
   */
  async #takeSlot(identity: Identity, connection: Connection, req: ClientPeer): Promise<() => void> {
    const max = this.limitsOf(connection).maxConcurrent;
    if (max === undefined) return () => undefined;
    // JSON: unambiguous, and storable (PostgreSQL text takes no NUL).
    const key = JSON.stringify([connection.name, identity.issuer, identity.subject]);
    const { store } = this.#deps;
    // A store several replicas share counts the slots itself (one count across them); otherwise this broker does.
    const taken = store.takeSessionSlot ? await store.takeSessionSlot(key, max, Date.now()) : this.#takeLocal(key, max);
    if (taken.slot === undefined) {
      const reason = `${identity.name} already has ${taken.open} session(s) open on ${connection.name}, the most this connection allows at once`;
      await this.#deps.sessions.refuse(identity, connection.name, connection.type, clientAddress(req), reason);
      throw new HoopError(reason, { code: 'ACCESS_DENIED', status: 403, hint: 'close a session first (hoopctl sessions --status open)' });
    }
    const slot = taken.slot;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (store.releaseSessionSlot) return store.releaseSessionSlot(slot);
      const left = (this.#slots.get(key) ?? 1) - 1;
      if (left > 0) this.#slots.set(key, left);
      else this.#slots.delete(key);
    };
  }

  #takeLocal(key: string, max: number): { open: number; slot?: string } {
    const open = this.#slots.get(key) ?? 0;
    if (open >= max) return { open };
    this.#slots.set(key, open + 1);
    return { open, slot: key };
  }
}
