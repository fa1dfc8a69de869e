/**
 * The client side of the crash and load runs: real `pg` clients riding a tunnel, each inserting uniquely marked rows
 * into `ledger` and remembering every marker whose result it saw. That list is what "acknowledged" means: afterwards
 * each acknowledged marker must be in the broker's recording. Holders send a `delete from ledger` that a review rule
 * holds, and wait on it (its NOTICE says it is held) until the broker goes away.
 */
import pg from 'pg';
import type { ClientConfig } from 'pg';

export const LEDGER_TABLE = 'create table if not exists ledger (marker text primary key, at timestamptz not null default now())';
/** The statement a holder sends: no WHERE, so the rule `unbounded-delete` holds it for review. */
export const HELD_STATEMENT = 'delete from ledger';
/** The rule and review set-up a connection needs for holders to be held. */
export const HOLD_RULES = {
  rules: [{ name: 'unbounded-delete', match: { statement: ['DeleteStmt'], where: 'absent' }, action: 'review' }],
  reviews: { groups: ['leads'], timeout: '1h' },
};

export interface WorkloadOptions {
  /** Prefix of every marker (one per round, so markers never repeat across rounds). */
  tag: string;
  clients: number;
  holders: number;
  /** Statements per client; unbounded (until the connection is lost or `stop`) when absent. */
  statements?: number;
  connect: () => ClientConfig;
  /**
   * Sessions opening at once (default: all). With a limit the writers also wait until every session is open before
   * the first statement, so all of them run concurrently, as a pool that has warmed up does.
   */
  openAtOnce?: number;
}

/** Marker text inside a recorded statement (in its SQL, or as a bound parameter). */
export const MARKER = /\b(m:[A-Za-z0-9_.-]+)/;

export class LedgerWorkload {
  readonly acknowledged: string[] = [];
  /** Failures other than losing the connection to a broker that went away (for the load run: must stay empty). */
  readonly errors: string[] = [];
  /** Connection losses (expected when the broker is killed). */
  lost = 0;
  readonly lostReasons = new Set<string>();
  heldNotices = 0;
  readonly #o: WorkloadOptions;
  readonly #clients: pg.Client[] = [];
  #stopping = false;
  readonly #writersAcknowledged = new Set<number>();
  #waiters: Array<() => void> = [];
  done: Promise<void> = Promise.resolve();

  constructor(o: WorkloadOptions) {
    this.#o = o;
  }

  start(): void {
    const runs = [
      ...Array.from({ length: this.#o.clients }, (_, i) => this.#runWriter(i)),
      ...Array.from({ length: this.#o.holders }, (_, i) => this.#runHolder(i)),
    ];
    this.done = Promise.all(runs).then(() => undefined);
  }

  /**
   * Resolves once `acks` statements were acknowledged, every writer has had at least one (so every session is open)
   * and every holder was told its statement is held.
   */
  whenBusy(acks: number): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.acknowledged.length >= acks && this.#writersAcknowledged.size >= this.#o.clients && this.heldNotices >= this.#o.holders) {
          this.#waiters = this.#waiters.filter((w) => w !== check);
          resolve();
        }
      };
      this.#waiters.push(check);
      check();
    });
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    await Promise.all(this.#clients.map((c) => c.end().catch(() => undefined)));
    await this.done;
  }

  #progress(): void {
    for (const w of [...this.#waiters]) w();
  }

  #opening = 0;
  #openQueue: Array<() => void> = [];
  #settled = 0;
  #allOpen: Promise<void> | undefined;
  #allOpened: () => void = () => undefined;

  async #open(): Promise<pg.Client | undefined> {
    const limit = this.#o.openAtOnce;
    this.#allOpen ??= new Promise((r) => (this.#allOpened = r));
    if (limit !== undefined && this.#opening >= limit) await new Promise<void>((r) => this.#openQueue.push(r));
    this.#opening++;
    const client = new pg.Client(this.#o.connect());
    // A broker killed mid-statement: the error arrives on the query (counted there) and again here.
    client.on('error', () => undefined);
    this.#clients.push(client);
    let opened: pg.Client | undefined;
    try {
      await client.connect();
      opened = client;
    } catch (e) {
      this.#failed(e);
    }
    this.#opening--;
    this.#openQueue.shift()?.();
    if (++this.#settled === this.#o.clients + this.#o.holders) this.#allOpened();
    if (limit !== undefined) await this.#allOpen;
    return opened;
  }

  #failed(e: unknown): void {
    if (this.#stopping) return;
    const message = e instanceof Error ? e.message : String(e);
    if (/Connection terminated|ECONNRESET|ECONNREFUSED|EPIPE|closed the connection|broker is stopping|cannot reach the broker|socket hang up/i.test(message)) {
      this.lost++;
      this.lostReasons.add(message);
    }
    else this.errors.push(message);
  }

  async #runWriter(i: number): Promise<void> {
    const client = await this.#open();
    if (!client) return;
    const limit = this.#o.statements ?? Infinity;
    try {
      for (let n = 0; n < limit && !this.#stopping; n++) {
        const marker = `m:${this.#o.tag}-c${i}-${n}`;
        // Half simple Query, half extended protocol (Parse/Bind/Execute with the marker as a parameter).
        if (n % 2 === 0) await client.query(`insert into ledger (marker) values ('${marker}')`);
        else await client.query('insert into ledger (marker) values ($1)', [marker]);
        this.acknowledged.push(marker);
        this.#writersAcknowledged.add(i);
        this.#progress();
      }
    } catch (e) {
      this.#failed(e);
      return;
    }
    await client.end().catch(() => undefined);
  }

  async #runHolder(i: number): Promise<void> {
    const client = await this.#open();
    if (!client) return;
    client.on('notice', (n) => {
      if (/held for review/.test(n.message ?? '')) {
        this.heldNotices++;
        this.#progress();
      }
    });
    try {
      await client.query(`${HELD_STATEMENT} /* holder ${this.#o.tag}-${i} */`);
      this.errors.push(`holder ${i}: the held statement ran`);
    } catch (e) {
      this.#failed(e);
    }
  }
}
