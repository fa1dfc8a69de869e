import pg from 'pg';
import type { Logger } from 'pino';
import type { Signal, SignalBus, SignalHandlers } from './signal-bus.js';

const CHANNEL = 'hoopctl_signals';
/** Before listening again after the listener's connection dropped (the store restarting, a network cut). */
const RECONNECT_MS = 500;

/**
 * Signals between replicas over PostgreSQL LISTEN/NOTIFY: publishing is a `pg_notify` through the pool; listening
 * holds one dedicated connection. NOTIFY is delivered only to connections listening at that moment, so every
 * (re)connect ends with `resync`: the receiver re-reads the store, and a decision is never lost, only late.
 */
export class PostgresSignalBus implements SignalBus {
  readonly #pool: pg.Pool;
  readonly #config: pg.ClientConfig;
  readonly #origin: string;
  readonly #logger: Logger | undefined;
  #client: pg.Client | undefined;
  #handlers: SignalHandlers | undefined;
  #closed = false;
  #reconnect: NodeJS.Timeout | undefined;

  constructor(pool: pg.Pool, config: pg.ClientConfig, origin: string, logger?: Logger) {
    this.#pool = pool;
    this.#config = config;
    this.#origin = origin;
    this.#logger = logger;
  }

  async publish(s: Signal): Promise<void> {
    await this.#pool.query('SELECT pg_notify($1, $2)', [CHANNEL, JSON.stringify({ origin: this.#origin, ...s })]);
  }

  async listen(handlers: SignalHandlers): Promise<void> {
    this.#handlers = handlers;
    await this.#connect();
  }

  async #connect(): Promise<void> {
    const client = new pg.Client({ ...this.#config, application_name: 'hoopctl-broker-signals' });
    const lost = (e?: Error) => {
      if (this.#client !== client) return;
      this.#client = undefined;
      client.end().catch(() => undefined);
      this.#logger?.warn({ err: e?.message }, 'replica signal listener lost its store connection; listening again');
      this.#listenAgain();
    };
    client.on('error', lost);
    client.on('end', () => lost());
    client.on('notification', (n) => {
      if (n.channel !== CHANNEL || !n.payload) return;
      let parsed: Signal & { origin?: string };
      try {
        parsed = JSON.parse(n.payload) as Signal & { origin?: string };
      } catch {
        return;
      }
      if (parsed.origin === this.#origin) return;
      const { origin: _origin, ...signal } = parsed;
      this.#handlers?.signal(signal as Signal);
    });
    this.#client = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (e) {
      if (this.#client === client) this.#client = undefined;
      await client.end().catch(() => undefined);
      throw e;
    }
    this.#handlers?.resync();
  }

  /** Until it listens again (the store may be down a while); each failed attempt schedules the next. */
  #listenAgain(): void {
    if (this.#closed) return;
    this.#reconnect = setTimeout(() => {
      this.#connect().catch((e: Error) => {
        this.#logger?.warn({ err: e.message }, 'replica signal listener cannot reach the store yet');
        this.#listenAgain();
      });
    }, RECONNECT_MS);
    this.#reconnect.unref();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#reconnect);
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => undefined);
  }
}
