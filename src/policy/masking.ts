/**
 * Rewriting sensitive values: whole column values (column rules) and spans found by content detectors.
 * Strategies: redact (`[REDACTED:email]`), partial (last 4 kept), hash (keyed HMAC-SHA256, stable so masked values
 * still join), null (the caller emits SQL NULL — signalled by a `null` text).
 */
import { createHmac } from 'node:crypto';
import { BYTE_TRAIT, BYTE_TRAIT_NEEDED, DETECTORS, byteTraits, type Span } from './detectors.js';
import { DETECTOR_NAMES, type DetectorName, type MaskPlan, type MaskStrategy, columnMatches } from './mask-plan.js';
import { JsonTooDeep, parseJson, serialize, type JsonValue } from './json-text.js';
import type { JsonShape } from './output-columns.js';

export { columnMatches, DETECTOR_NAMES, MASK_STRATEGIES } from './mask-plan.js';
export type { ColumnSource, DetectorName, MaskPlan, MaskStrategy } from './mask-plan.js';
export { DETECTORS, luhnValid, ibanValid, ipv6Valid } from './detectors.js';

/** The secret behind the hash strategy; the same key gives the same hashes (joinable across results). */
export type MaskKey = string | Uint8Array;

export interface MaskResult {
  /** `null` only with the `null` strategy when something was masked: the caller sends SQL NULL. */
  text: string | null;
  /** Matches per detector name (and `column` for whole-value masks). */
  hits: Record<string, number>;
}

export function hashValue(value: string, key: MaskKey): string {
  if (key.length === 0) throw new Error('the hash masking strategy needs a non-empty key');
  return `h_${createHmac('sha256', key).update(value, 'utf8').digest('hex').slice(0, 16)}`;
}

/**
 * Stars every letter and digit except the last four; separators stay so the shape is recognisable
 * (`****-****-****-1111`). A value with fewer than 8 letters and digits is starred completely: keeping four of
 * them would give most of it away.
 */
export function partialMask(value: string): string {
  if (ASCII.test(value)) return partialMaskAscii(value);
  const chars = [...value];
  const alnum = chars.filter((c) => /\p{L}|\p{N}/u.test(c)).length;
  let keep = alnum >= 8 ? 4 : 0;
  const out: string[] = new Array<string>(chars.length);
  for (let i = chars.length - 1; i >= 0; i--) {
    const c = chars[i];
    if (/\p{L}|\p{N}/u.test(c)) {
      out[i] = keep > 0 ? c : '*';
      keep--;
    } else out[i] = c;
  }
  return out.join('');
}

const ASCII = /^[\x00-\x7f]*$/;

/** partialMask of ASCII text, where the letters and digits are A–Z, a–z and 0–9, one code unit each. */
function partialMaskAscii(value: string): string {
  const isAlnum = (c: number) => (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
  let alnum = 0;
  for (let i = 0; i < value.length; i++) if (isAlnum(value.charCodeAt(i))) alnum++;
  // Stars before the last `keep` letters and digits; the rest as it is.
  let keep = alnum >= 8 ? 4 : 0;
  let starUntil = value.length;
  for (let i = value.length - 1; i >= 0 && keep > 0; i--) {
    if (isAlnum(value.charCodeAt(i)) && --keep === 0) starUntil = i;
  }
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    out += i < starUntil && isAlnum(c) ? '*' : value[i];
  }
  return out;
}

/** Masks a whole value (a column that a rule names). */
export function maskWhole(value: string, strategy: MaskStrategy, key: MaskKey): string | null {
  switch (strategy) {
    case 'redact':
      return '[REDACTED]';
    case 'partial':
      return partialMask(value);
    case 'hash':
      return hashValue(value, key);
    case 'null':
      return null;
  }
}

interface Hit {
  start: number;
  end: number;
  detector: DetectorName;
}

/** Every detector's spans, overlaps resolved: earliest start first, then the longest. */
export function findSensitiveSpans(value: string, detectors: readonly DetectorName[]): Hit[] {
  const all: Hit[] = [];
  for (const name of detectors) {
    for (const [start, end] of DETECTORS[name](value) as Span[]) if (end > start) all.push({ start, end, detector: name });
  }
  if (all.length < 2) return all;
  all.sort((a, b) => a.start - b.start || b.end - a.end);
  const kept: Hit[] = [];
  let reach = 0;
  for (const h of all) {
    if (h.start < reach) continue;
    kept.push(h);
    reach = h.end;
  }
  return kept;
}

const NO_DETECTORS: readonly DetectorName[] = [];

/**
 * The detectors that could find something in this value, judged from its UTF-8 bytes (`bytes[start, end)`, see
 * byteTraits): a value none can match needs neither decoding nor scanning. Returns `detectors` itself when every
 * one must run.
 */
export function detectorsFor(bytes: Uint8Array, detectors: readonly DetectorName[], start = 0, end = bytes.length): readonly DetectorName[] {
  return detectorsWith(byteTraits(bytes, start, end), detectors);
}

/** Each detector alone, so that the usual answer (one detector may match) costs no new array. */
const ONLY = Object.fromEntries(DETECTOR_NAMES.map((d): [DetectorName, readonly DetectorName[]] => [d, [d]])) as Record<DetectorName, readonly DetectorName[]>;

function detectorsWith(traits: number, detectors: readonly DetectorName[]): readonly DetectorName[] {
  let count = 0;
  let last = -1;
  for (let i = 0; i < detectors.length; i++) {
    if (mayMatch(detectors[i], traits)) {
      count++;
      last = i;
    }
  }
  if (count === detectors.length) return detectors;
  if (count === 0) return NO_DETECTORS;
  return count === 1 ? ONLY[detectors[last]] : detectors.filter((d) => mayMatch(d, traits));
}

function mayMatch(detector: DetectorName, traits: number): boolean {
  const needed = BYTE_TRAIT_NEEDED[detector];
  return needed === undefined || (traits & needed) !== 0;
}

/**
 * Runs the detectors over the UTF-8 text in `bytes[start, end)` (a value where it lies in a message) and masks what
 * they find, as `maskText` does with the decoded text. The value is decoded only when its bytes let a detector
 * through (byteTraits), and ASCII (the usual case) is decoded as Latin-1, which gives the same string faster.
 * Returns undefined when nothing was found, and null when the null strategy masked something.
 */
export function maskTextBytes(
  bytes: Buffer,
  start: number,
  end: number,
  detectors: readonly DetectorName[],
  strategy: MaskStrategy,
  key: MaskKey,
): string | null | undefined {
  const traits = byteTraits(bytes, start, end);
  const candidates = detectorsWith(traits, detectors);
  if (candidates.length === 0) return undefined;
  const text = bytes.toString((traits & BYTE_TRAIT.nonAscii) === 0 ? 'latin1' : 'utf8', start, end);
  const found = findSensitiveSpans(text, candidates);
  return found.length === 0 ? undefined : maskSpans(text, found, strategy, key);
}

/** Runs the detectors over a value and masks what they find. */
export function maskText(value: string, detectors: readonly DetectorName[], strategy: MaskStrategy, key: MaskKey): MaskResult {
  const found = findSensitiveSpans(value, detectors);
  const hits: Record<string, number> = {};
  for (const h of found) hits[h.detector] = (hits[h.detector] ?? 0) + 1;
  return { text: found.length === 0 ? value : maskSpans(value, found, strategy, key), hits };
}

/** What the redact strategy writes for each detector's spans. */
const REDACTIONS = Object.fromEntries(DETECTOR_NAMES.map((d) => [d, `[REDACTED:${d}]`])) as Record<DetectorName, string>;

/** The value with the spans (sorted, not overlapping, at least one) masked. */
function maskSpans(value: string, found: readonly Hit[], strategy: MaskStrategy, key: MaskKey): string | null {
  if (strategy === 'null') return null;
  let out = '';
  let pos = 0;
  for (const h of found) {
    out += value.slice(pos, h.start);
    out +=
      strategy === 'redact' ? REDACTIONS[h.detector] : strategy === 'partial' ? partialMask(value.slice(h.start, h.end)) : hashValue(value.slice(h.start, h.end), key);
    pos = h.end;
  }
  return out + value.slice(pos);
}

// ---------------------------------------------------------------- JSON

const NULL: JsonValue = { t: 'literal', raw: 'null' };

/**
 * Masks every value of a JSON subtree whole, keeping its shape and keys (null stays null; numbers and booleans are
 * values like strings). `onValue` is called once per masked value.
 */
export function maskJsonWhole(v: JsonValue, strategy: MaskStrategy, key: MaskKey, onValue: () => void): JsonValue {
  switch (v.t) {
    case 'array':
      return { t: 'array', items: v.items.map((item) => maskJsonWhole(item, strategy, key, onValue)) };
    case 'object':
      return { t: 'object', members: v.members.map(([k, m]) => [k, maskJsonWhole(m, strategy, key, onValue)]) };
    case 'literal':
      if (v.raw === 'null') return v;
    // falls through
    case 'string':
    case 'number': {
      onValue();
      const masked = maskWhole(v.t === 'string' ? v.v : v.raw, strategy, key);
      return masked === null ? NULL : { t: 'string', v: masked };
    }
  }
}

/**
 * Masks JSON text (json_agg, row_to_json, jsonb columns): values under keys the plan's columns name are masked
 * whole; every string (and number, and key) runs through the detectors. Always returns valid JSON. Text that is not
 * JSON is masked as plain text by the detectors; JSON nested too deeply to walk is masked whole.
 */
export function maskJsonText(json: string, plan: MaskPlan, key: MaskKey): MaskResult {
  let tree: JsonValue;
  try {
    tree = parseJson(json);
  } catch (err) {
    if (err instanceof JsonTooDeep) {
      return { text: plan.strategy === 'null' ? null : JSON.stringify(maskWhole(json, plan.strategy, key)), hits: { column: 1 } };
    }
    return maskText(json, plan.detectors, plan.strategy, key);
  }
  const hits: Record<string, number> = {};
  const count = (h: Record<string, number>) => {
    for (const [k, n] of Object.entries(h)) hits[k] = (hits[k] ?? 0) + n;
  };
  const whole = (v: JsonValue): JsonValue => maskJsonWhole(v, plan.strategy, key, () => count({ column: 1 }));
  const scalar = (text: string, original: JsonValue): JsonValue => {
    const r = maskText(text, plan.detectors, plan.strategy, key);
    count(r.hits);
    if (r.text === text) return original;
    return r.text === null ? NULL : { t: 'string', v: r.text };
  };
  const walk = (v: JsonValue): JsonValue => {
    switch (v.t) {
      case 'string':
        return scalar(v.v, v);
      case 'number':
        return scalar(v.raw, v);
      case 'literal':
        return v;
      case 'array':
        return { t: 'array', items: v.items.map(walk) };
      case 'object':
        return {
          t: 'object',
          members: v.members.map(([k, m]) => {
            const maskedValue = columnMatches(plan, { column: k }) ? whole(m) : walk(m);
            // Keys can hold data too (json_object_agg(email, …)); a key cannot be null, so it is redacted then.
            const r = maskText(k, plan.detectors, plan.strategy === 'null' ? 'redact' : plan.strategy, key);
            count(r.hits);
            return [r.text ?? k, maskedValue];
          }),
        };
    }
  };
  return { text: serialize(walk(tree)), hits };
}

/**
 * Masks JSON computed from a masked column, keeping it JSON of the same shape. No value from a masked column may
 * get through, and what is kept must be known not to hold one:
 * - a shape from the SQL (`json_build_object('contact', email, 'n', id)`, `json_agg` of such objects): values
 *   under keys that came from masked columns are masked whole, every leaf (a number from a masked column becomes a
 *   masked string, a null stays null); the other values run through the detectors; the keys are the SQL's own;
 * - keys naming masked columns (`row_to_json(c)`, `json_agg(c)` of table rows): as `maskJsonText`;
 * - otherwise the masked value went in under a name the SQL does not show: every string and number leaf is masked
 *   whole (any of them may be it), keys run through the detectors, booleans, nulls and structure are kept —
 *   unless the keys themselves are made from data (`json_object_agg(email, …)`): then the whole value is replaced
 *   by a JSON string, as nothing of it can be kept.
 */
export function maskDerivedJson(json: string, plan: MaskPlan, key: MaskKey, shape?: JsonShape): MaskResult {
  if (shape?.kind === 'data-keys') return wholeAsJsonString(json, plan, key);
  let tree: JsonValue;
  try {
    tree = parseJson(json);
  } catch {
    return wholeAsJsonString(json, plan, key);
  }
  let column = 0;
  const whole = (v: JsonValue): JsonValue => maskJsonWhole(v, plan.strategy, key, () => column++);
  if (shape) {
    const fitted = maskByShape(tree, shape, whole);
    if (fitted) {
      // The rest through the detectors; values already masked hold nothing they would find.
      const r = maskJsonText(serialize(fitted), { ...plan, columns: [] }, key);
      return { text: r.text, hits: { ...r.hits, column } };
    }
  } else {
    const byKeys = maskJsonText(json, plan, key);
    if ((byKeys.hits.column ?? 0) > 0) return byKeys;
  }
  const leaves = maskJsonText(serialize(maskLeaves(tree, whole)), { ...plan, columns: [] }, key);
  return { text: leaves.text, hits: { ...leaves.hits, column } };
}

/** The value as it is shaped by the SQL, masked where the shape says; undefined when it does not fit the shape. */
function maskByShape(v: JsonValue, shape: Exclude<JsonShape, { kind: 'data-keys' }>, whole: (v: JsonValue) => JsonValue): JsonValue | undefined {
  const part = (value: JsonValue, p: boolean | JsonShape): JsonValue | undefined =>
    p === true ? whole(value) : p === false ? value : p.kind === 'data-keys' ? whole(value) : maskByShape(value, p, whole);
  if (v.t === 'literal' && v.raw === 'null') return v;
  if (shape.kind === 'array') {
    if (v.t !== 'array') return undefined;
    const items: JsonValue[] = [];
    for (const item of v.items) {
      const m = part(item, shape.items);
      if (!m) return undefined;
      items.push(m);
    }
    return { t: 'array', items };
  }
  if (v.t !== 'object') return undefined;
  const members: Array<[string, JsonValue]> = [];
  for (const [k, m] of v.members) {
    const p = shape.members.get(k);
    if (p === undefined) return undefined;
    const masked = part(m, p);
    if (!masked) return undefined;
    members.push([k, masked]);
  }
  return { t: 'object', members };
}

/** Every string and number leaf masked whole; keys, booleans, nulls and structure kept. */
function maskLeaves(v: JsonValue, whole: (v: JsonValue) => JsonValue): JsonValue {
  switch (v.t) {
    case 'array':
      return { t: 'array', items: v.items.map((item) => maskLeaves(item, whole)) };
    case 'object':
      return { t: 'object', members: v.members.map(([k, m]) => [k, maskLeaves(m, whole)]) };
    case 'literal':
      return v;
    default:
      return whole(v);
  }
}

function wholeAsJsonString(json: string, plan: MaskPlan, key: MaskKey): MaskResult {
  const m = maskWhole(json, plan.strategy, key);
  return { text: m === null ? null : JSON.stringify(m), hits: { column: 1 } };
}
