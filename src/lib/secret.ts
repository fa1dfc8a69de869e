/**
 * A secret (a backend credential, a signing or hashing key, a webhook token) resolved from the config. Its JSON,
 * string and inspect forms are redacted, so it cannot leak through the API or a log line by accident; only
 * `reveal()` gives the value, at the one place that uses it.
 */
export class Secret {
  #value: string | undefined;
  constructor(value: string | undefined) {
    this.#value = value;
  }
  reveal(): string {
    if (this.#value === undefined) throw new Error('bug: a fetched secret was revealed before it was fetched');
    return this.#value;
  }
  /** Whether `reveal()` has a value: a fetched secret (./secret-fetch.ts) has none until it is first fetched. */
  get known(): boolean {
    return this.#value !== undefined;
  }
  /** Sets the value: a fetch that succeeded, or a rotation that wrote a new one. */
  protected set(value: string): void {
    this.#value = value;
  }
  toJSON(): string {
    return '[redacted]';
  }
  toString(): string {
    return '[redacted]';
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return 'Secret([redacted])';
  }
}

/**
 * A secret read from a file the broker may also write: `hoopctl broker rotate` sets a new value on the backend,
 * writes it here atomically, and new sessions use it while running ones keep what they started with.
 */
export class FileSecret extends Secret {
  constructor(value: string, readonly path: string) {
    super(value);
  }
  /** The value a rotation just wrote to `path`. */
  replace(value: string): void {
    this.set(value);
  }
}

/**
 * A secret a credential helper prints (`{ command: [...] }`): fetched when a session needs it and kept for
 * `cacheForMs`. Until the first fetch it has no value; a fetch that fails leaves the last value in place but throws,
 * so the session that asked is refused rather than given a value its helper no longer vouches for.
 */
export class FetchedSecret extends Secret {
  readonly #fetchValue: () => Promise<string>;
  #fetchedAt = 0;
  #inflight: Promise<void> | undefined;

  constructor(fetchValue: () => Promise<string>, readonly cacheForMs: number) {
    super(undefined);
    this.#fetchValue = fetchValue;
  }

  /** Runs the helper unless a value fetched less than `cacheForMs` ago is at hand; concurrent callers share one run. */
  refresh(now = Date.now()): Promise<void> {
    if (this.known && now - this.#fetchedAt < this.cacheForMs) return Promise.resolve();
    this.#inflight ??= this.#fetchValue()
      .then((value) => {
        this.set(value);
        this.#fetchedAt = Date.now();
      })
      .finally(() => {
        this.#inflight = undefined;
      });
    return this.#inflight;
  }
}
