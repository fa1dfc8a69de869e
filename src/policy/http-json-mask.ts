/**
 * Masking of JSON bodies (HTTP and Kubernetes responses): values a JSON path names are masked whole, then every
 * string, number and key runs through the content detectors (src/policy/masking.ts).
 *
 * ## JSON paths
 * `$` is the document; then `.name` or `['name']` a member, `[2]` an array element, `[*]` or `.*` every member or
 * element, `..name` (or `..*`, `..[*]`) that step at any depth below. Examples: `$.users[*].email`,
 * `$..password`, `$.items[*].data.*`. A matched object or array is masked through and through.
 */
import { maskJsonText, maskJsonWhole, type DetectorName, type MaskKey, type MaskStrategy } from './masking.js';
import { parseJson, serialize, type JsonValue } from './json-text.js';

type Step = { kind: 'member'; name: string; deep: boolean } | { kind: 'index'; index: number; deep: boolean } | { kind: 'any'; deep: boolean };
export interface JsonPath {
  source: string;
  steps: Step[];
}

export class JsonPathError extends Error {
  override name = 'JsonPathError';
}

/** Parses `$.users[*].email`; throws JsonPathError naming the position on anything else. */
export function parseJsonPath(source: string): JsonPath {
  const s = source.trim();
  if (!s.startsWith('$')) throw new JsonPathError(`JSON path "${source}" must start with $`);
  const steps: Step[] = [];
  let i = 1;
  const fail = (why: string): never => {
    throw new JsonPathError(`JSON path "${source}": ${why} at ${i}`);
  };
  while (i < s.length) {
    let deep = false;
    if (s.startsWith('..', i)) {
      deep = true;
      i += 2;
      if (s[i] !== '[') {
        const m = /^(\*|[A-Za-z_$][\w$-]*)/.exec(s.slice(i));
        if (!m) fail('expected a name or * after ..');
        steps.push(m![1] === '*' ? { kind: 'any', deep } : { kind: 'member', name: m![1], deep });
        i += m![0].length;
        continue;
      }
    } else if (s[i] === '.') {
      i++;
      const m = /^(\*|[A-Za-z_$][\w$-]*)/.exec(s.slice(i));
      if (!m) fail('expected a name or * after .');
      steps.push(m![1] === '*' ? { kind: 'any', deep } : { kind: 'member', name: m![1], deep });
      i += m![0].length;
      continue;
    }
    if (s[i] !== '[') fail('expected . or [');
    const close = s.indexOf(']', i);
    if (close < 0) fail('unclosed [');
    const inner = s.slice(i + 1, close).trim();
    if (inner === '*') steps.push({ kind: 'any', deep });
    else if (/^\d+$/.test(inner)) steps.push({ kind: 'index', index: Number(inner), deep });
    else if (/^'[^']*'$|^"[^"]*"$/.test(inner)) steps.push({ kind: 'member', name: inner.slice(1, -1), deep });
    else fail(`expected *, an index or a quoted name in [${inner}]`);
    i = close + 1;
  }
  return { source, steps };
}

type Key = string | number;

function stepMatches(step: Step, key: Key): boolean {
  switch (step.kind) {
    case 'any':
      return true;
    case 'member':
      return typeof key === 'string' && key === step.name;
    case 'index':
      return key === step.index;
  }
}

/** Does the location `keys` (member names and array indexes from the root) fall under the path? */
export function jsonPathMatches(path: JsonPath, keys: readonly Key[]): boolean {
  const from = (si: number, ki: number): boolean => {
    if (si === path.steps.length) return ki === keys.length;
    const step = path.steps[si];
    if (!step.deep) return ki < keys.length && stepMatches(step, keys[ki]) && from(si + 1, ki + 1);
    for (let k = ki; k < keys.length; k++) if (stepMatches(step, keys[k]) && from(si + 1, k + 1)) return true;
    return false;
  };
  return from(0, 0);
}

export interface JsonMaskSpec {
  paths: readonly JsonPath[];
  detectors: readonly DetectorName[];
  strategy: MaskStrategy;
}

export interface JsonMaskResult {
  text: string;
  /** Values masked per cause: `path` for JSON paths, detector names for content. */
  hits: Record<string, number>;
  /** False when the text was not JSON: it was then masked as plain text by the detectors. */
  json: boolean;
}

/** Masks one JSON document. Text that is not JSON is masked as plain text (detectors only). */
export function maskJsonBody(text: string, spec: JsonMaskSpec, key: MaskKey): JsonMaskResult {
  const hits: Record<string, number> = {};
  let out = text;
  let json = true;
  if (spec.paths.length > 0) {
    let tree: JsonValue | undefined;
    try {
      tree = parseJson(text);
    } catch {
      json = false;
    }
    if (tree) {
      let masked = 0;
      const whole = (n: JsonValue): JsonValue => maskJsonWhole(n, spec.strategy, key, () => masked++);
      const walk = (n: JsonValue, at: Key[]): JsonValue => {
        if (at.length > 0 && spec.paths.some((p) => jsonPathMatches(p, at))) return whole(n);
        if (n.t === 'array') return { t: 'array', items: n.items.map((v, idx) => walk(v, [...at, idx])) };
        if (n.t === 'object') return { t: 'object', members: n.members.map(([k, v]) => [k, walk(v, [...at, k])]) };
        return n;
      };
      const next = walk(tree, []);
      if (masked > 0) {
        hits.path = masked;
        out = serialize(next);
      }
    }
  }
  if (spec.detectors.length > 0) {
    const r = maskJsonText(out, { rules: [], columns: [], detectors: [...spec.detectors], strategy: spec.strategy }, key);
    for (const [k, n] of Object.entries(r.hits)) hits[k] = (hits[k] ?? 0) + n;
    if (Object.keys(r.hits).length > 0) out = r.text ?? 'null';
  }
  return { text: out, hits, json };
}
