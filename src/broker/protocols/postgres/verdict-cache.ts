/**
 * Verdicts of statement texts already judged, for the texts clients send again and again: the extended protocol's
 * Parse of an unnamed statement before every Bind, an ORM's handful of statements, `pgbench -M extended`. A hit saves
 * the parse (libpg_query in WASM), the classification and the rules; the judge still builds its judgement, registers
 * what the text prepares and the proxy records the statement and its verdict exactly as on a miss.
 *
 * A verdict depends on the text, the connection's rules, the identity they are judged for (subject, kind, client id,
 * groups, claims) and the mask plan (which refuses some COPYs): all of them are in the key. The only session state a
 * verdict reads, the session's prepared statements (`EXECUTE name`), makes a text uncacheable. Bounded: least
 * recently used entries go first, by count and by the total length of the texts; cleared on every config reload.
 */
import { createHash } from 'node:crypto';
import type { ConnectionPolicy, MaskPlan, PolicyIdentity, SqlClassification, Verdict } from '../../../policy/index.js';

/** What a hit gives back: the text's classification and its verdict, both frozen (sessions share them). */
export interface CachedVerdict {
  classification: SqlClassification;
  verdict: Verdict;
}

/** Entries kept at most. */
export const VERDICT_CACHE_ENTRIES = 1000;
/** Characters of statement text kept at most (each text is held twice: in the key and in its classification). */
export const VERDICT_CACHE_CHARS = 1_000_000;
/** A longer text is judged every time: a bulk INSERT of literals is rarely sent twice, and would crowd others out. */
export const VERDICT_CACHE_MAX_TEXT = 16_384;

export class VerdictCache {
  readonly #entries = new Map<string, CachedVerdict>();
  readonly #maxEntries: number;
  readonly #maxChars: number;
  #chars = 0;
  hits = 0;
  misses = 0;

  constructor(maxEntries = VERDICT_CACHE_ENTRIES, maxChars = VERDICT_CACHE_CHARS) {
    this.#maxEntries = maxEntries;
    this.#maxChars = maxChars;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The verdict of `sql` judged in `context` (a `verdictContext` key), refreshed as the most recently used. */
  get(context: string, sql: string): CachedVerdict | undefined {
    if (sql.length > VERDICT_CACHE_MAX_TEXT) return undefined;
    const key = `${context}\u0000${sql}`;
    const hit = this.#entries.get(key);
    if (!hit) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.#entries.delete(key);
    this.#entries.set(key, hit);
    return hit;
  }

  /** Keeps a verdict, unless the text is too long or reads session state (EXECUTE of a prepared statement). */
  set(context: string, sql: string, classification: SqlClassification, verdict: Verdict): void {
    if (sql.length > VERDICT_CACHE_MAX_TEXT || !cacheable(classification)) return;
    const key = `${context}\u0000${sql}`;
    if (this.#entries.has(key)) return;
    this.#entries.set(key, { classification: deepFreeze(classification), verdict: deepFreeze(verdict) });
    this.#chars += sql.length;
    for (const [oldest] of this.#entries) {
      if (this.#entries.size <= this.#maxEntries && this.#chars <= this.#maxChars) break;
      this.#entries.delete(oldest);
      this.#chars -= oldest.length - oldest.indexOf('\u0000') - 1;
    }
  }

  /** On a config reload: rules may have changed, and no verdict judged under the old ones may be reused. */
  clear(): void {
    this.#entries.clear();
    this.#chars = 0;
  }
}

/**
 * The key part of everything a verdict depends on besides the text: the connection's rules (default action, preset,
 * rules as configured), the identity as the rules can see it, and the mask plan. Two sessions share verdicts only
 * when all of these are equal.
 */
export function verdictContext(policy: ConnectionPolicy, identity: PolicyIdentity, maskPlan: MaskPlan | undefined): string {
  const who = {
    subject: identity.subject,
    kind: identity.kind,
    clientId: identity.clientId ?? null,
    groups: [...identity.groups].sort(),
    claims: Object.entries(identity.claims ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  };
  const rules = { defaultAction: policy.defaultAction, preset: policy.preset ?? null, rules: policy.rules };
  return createHash('sha256').update(JSON.stringify([rules, who, maskPlan ?? null])).digest('base64url');
}

/** EXECUTE name is judged by what the session prepared under that name: session state, not the text. */
function cacheable(classification: SqlClassification): boolean {
  return !classification.ok || classification.statements.every((s) => s.executesPrepared === undefined);
}

function deepFreeze<T>(value: T): T {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return value;
  for (const v of Object.values(value)) deepFreeze(v);
  return Object.freeze(value);
}
