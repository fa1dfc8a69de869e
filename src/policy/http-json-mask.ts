/**
 * Masking of JSON bodies (HTTP and Kubernetes responses): values a JSON path names are masked whole, then every
 * string, number and key runs through the content detectors (src/policy/masking.ts).
 *
 * ## JSON paths
 * `$` is the document; then `.name` or `['name']` a member, `[2]` an array element, `[*]` or `.*` every member or
 * element, `..name` (or `..*`, `..[*]`) that step at any depth below. Examples: `$.users[*].email`,
 * `$..password`, `$.items[*].data.*`. A matched object or array is masked through and through.
 */
import { maskJsonText, maskWhole, type DetectorName, type MaskKey, type MaskStrategy } from './masking.js';

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

// A JSON tree that keeps numbers as written: a 16-digit card number must survive unrounded.
type Node =
  | { t: 's'; v: string }
  | { t: 'raw'; v: string }
  | { t: 'a'; items: Node[] }
  | { t: 'o'; entries: Array<[string, Node]> };

const MAX_DEPTH = 512;

function readJson(text: string): Node {
  let i = 0;
  const skip = () => {
    while (i < text.length && /[ \t\r\n]/.test(text[i])) i++;
  };
  const bad = (): never => {
    throw new SyntaxError(`not JSON (position ${i})`);
  };
  const str = (): string => {
    const start = i++;
    for (; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
    if (i >= text.length) bad();
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const node = (depth: number): Node => {
    if (depth > MAX_DEPTH) bad();
    skip();
    const c = text[i];
    if (c === '"') return { t: 's', v: str() };
    if (c === '[') {
      i++;
      const items: Node[] = [];
      skip();
      if (text[i] === ']') return i++, { t: 'a', items };
      for (;;) {
        items.push(node(depth + 1));
        skip();
        const d = text[i++];
        if (d === ']') return { t: 'a', items };
        if (d !== ',') bad();
      }
    }
    if (c === '{') {
      i++;
      const entries: Array<[string, Node]> = [];
      skip();
      if (text[i] === '}') return i++, { t: 'o', entries };
      for (;;) {
        skip();
        if (text[i] !== '"') bad();
        const k = str();
        skip();
        if (text[i++] !== ':') bad();
        entries.push([k, node(depth + 1)]);
        skip();
        const d = text[i++];
        if (d === '}') return { t: 'o', entries };
        if (d !== ',') bad();
      }
    }
    const m = /^(-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i, i + 400));
    if (!m) bad();
    i += m![0].length;
    return { t: 'raw', v: m![0] };
  };
  const root = node(0);
  skip();
  if (i !== text.length) bad();
  return root;
}

function writeJson(n: Node): string {
  switch (n.t) {
    case 's':
      return JSON.stringify(n.v);
    case 'raw':
      return n.v;
    case 'a':
      return `[${n.items.map(writeJson).join(',')}]`;
    case 'o':
      return `{${n.entries.map(([k, v]) => `${JSON.stringify(k)}:${writeJson(v)}`).join(',')}}`;
  }
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
    let tree: Node | undefined;
    try {
      tree = readJson(text);
    } catch {
      json = false;
    }
    if (tree) {
      let masked = 0;
      const whole = (n: Node): Node => {
        switch (n.t) {
          case 'a':
            return { t: 'a', items: n.items.map(whole) };
          case 'o':
            return { t: 'o', entries: n.entries.map(([k, v]) => [k, whole(v)]) };
          case 'raw':
            if (n.v === 'null') return n;
          // falls through: numbers and booleans are values like strings
          case 's': {
            masked++;
            const m = maskWhole(n.v, spec.strategy, key);
            return m === null ? { t: 'raw', v: 'null' } : { t: 's', v: m };
          }
        }
      };
      const walk = (n: Node, at: Key[]): Node => {
        if (at.length > 0 && spec.paths.some((p) => jsonPathMatches(p, at))) return whole(n);
        if (n.t === 'a') return { t: 'a', items: n.items.map((v, idx) => walk(v, [...at, idx])) };
        if (n.t === 'o') return { t: 'o', entries: n.entries.map(([k, v]) => [k, walk(v, [...at, k])]) };
        return n;
      };
      const next = walk(tree, []);
      if (masked > 0) {
        hits.path = masked;
        out = writeJson(next);
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
