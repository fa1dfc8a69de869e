/**
 * A secret (a backend credential, a signing or hashing key, a webhook token) resolved from the config. Its JSON,
 * string and inspect forms are redacted, so it cannot leak through the API or a log line by accident; only
 * `reveal()` gives the value, at the one place that uses it.
 */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
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
