import { isMap, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import type { z } from 'zod';
import { didYouMean } from '../lib/did-you-mean.js';

/**
 * Where a config problem is and what was probably meant. A validation error names the field (`connections[0].rules`);
 * this adds the file's line and column (the `yaml` package keeps every node's offset) and, for an unknown key or an
 * enum value, the nearest names the schema knows: `connections[0]: unknown key "defualtAction" (did you mean
 * "defaultAction"?) at broker.yaml:14:5`.
 */
export interface ConfigSource {
  file: string;
  doc: Document;
  lines: LineCounter;
}

export type ConfigPath = ReadonlyArray<PropertyKey>;

export function parseConfigSource(file: string, text: string): { source: ConfigSource; value: unknown } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  if (doc.errors.length > 0) throw doc.errors[0]!;
  return { source: { file, doc, lines }, value: doc.toJS() };
}

/** `file:line:col` of the node at `path` (of the key `key` in it, when given), or of its nearest ancestor present. */
export function locate(source: ConfigSource, path: ConfigPath, key?: string): string | undefined {
  const steps = path.filter((p): p is string | number => typeof p !== 'symbol');
  for (let n = steps.length; n >= 0; n--) {
    const node = n === 0 ? source.doc.contents : source.doc.getIn(steps.slice(0, n), true);
    let range: [number, number, number] | undefined | null = (node as { range?: [number, number, number] | null } | null)?.range;
    if (key !== undefined && n === steps.length && isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && p.key.value === key);
      if (pair && isScalar(pair.key)) range = pair.key.range;
    }
    if (range) {
      const { line, col } = source.lines.linePos(range[0]);
      return `${source.file}:${line}:${col}`;
    }
  }
  return undefined;
}

/** One zod issue as a `path: message` line, with what was meant and where, when known. */
export function describeIssue(issue: z.core.$ZodIssue, schema: z.ZodType, input: unknown, source?: ConfigSource): string[] {
  const field = formatPath(issue.path);
  const at = (path: ConfigPath, key?: string) => {
    const where = source && locate(source, path, key);
    return where ? ` at ${where}` : '';
  };
  if (issue.code === 'unrecognized_keys') {
    const known = knownKeys(schema, issue.path, input);
    return issue.keys.map((key) => `${field || '(root)'}: unknown key "${key}"${didYouMean(key, known)}${at(issue.path, key)}`);
  }
  if (issue.code === 'invalid_value' && issue.values.every((v) => typeof v === 'string')) {
    const given = valueAt(input, issue.path);
    const hint = typeof given === 'string' ? didYouMean(given, issue.values as string[]) : '';
    return [`${field || '(root)'}: ${issue.message}${hint}${at(issue.path)}`];
  }
  const options = (issue as { options?: unknown[] }).options;
  if (issue.code === 'invalid_union' && Array.isArray(options) && options.every((o) => typeof o === 'string')) {
    // An unknown connection `type` (the path names the discriminator): the types there are, and the nearest.
    const given = valueAt(input, issue.path);
    const what = given === undefined ? 'missing' : `unknown value ${JSON.stringify(given)}`;
    const hint = typeof given === 'string' ? didYouMean(given, options as string[]) : '';
    return [`${field}: ${what}, expected one of ${(options as string[]).join(', ')}${hint}${at(issue.path)}`];
  }
  return [`${field || '(root)'}: ${issue.message}${at(issue.path)}`];
}

export function formatPath(path: ConfigPath): string {
  return path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${String(p)}` : String(p)), '');
}

function valueAt(input: unknown, path: ConfigPath): unknown {
  let v = input;
  for (const p of path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

/** zod's definition of a schema, read through its documented `_zod.def` (v4 core). */
interface Def {
  type: string;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  innerType?: z.ZodType;
  in?: z.ZodType;
  options?: z.ZodType[];
  discriminator?: string;
  values?: unknown[];
  getter?: () => z.ZodType;
}

function defOf(schema: z.ZodType): Def {
  return (schema as unknown as { _zod: { def: Def } })._zod.def;
}

/** The object schemas `schema` may be for `data`: wrappers unwrapped, a union's options (the matching one, if told). */
function objectSchemas(schema: z.ZodType, data: unknown, depth = 0): Def[] {
  if (depth > 20) return [];
  const def = defOf(schema);
  switch (def.type) {
    case 'object':
      return [def];
    case 'optional': case 'nullable': case 'default': case 'prefault': case 'readonly': case 'catch': case 'nonoptional':
      return objectSchemas(def.innerType!, data, depth + 1);
    case 'pipe':
      return objectSchemas(def.in!, data, depth + 1);
    case 'lazy':
      return objectSchemas(def.getter!(), data, depth + 1);
    case 'union': {
      const all = (def.options ?? []).flatMap((o) => objectSchemas(o, data, depth + 1));
      const tag = def.discriminator;
      const value = tag && data !== null && typeof data === 'object' ? (data as Record<string, unknown>)[tag] : undefined;
      const chosen = value === undefined ? [] : all.filter((o) => literalValues(o.shape?.[tag!]).includes(value));
      return chosen.length > 0 ? chosen : all;
    }
    default:
      return [];
  }
}

function literalValues(schema: z.ZodType | undefined): unknown[] {
  if (!schema) return [];
  const def = defOf(schema);
  if (def.type === 'literal' || def.type === 'enum') return def.values ?? Object.values((def as { entries?: object }).entries ?? {});
  if (def.innerType) return literalValues(def.innerType);
  return [];
}

/** The schemas at `path` for the data there. */
function schemasAt(schema: z.ZodType, path: ConfigPath, input: unknown): Def[] {
  let defs = objectSchemas(schema, input);
  let data = input;
  for (const step of path) {
    data = valueAt(data, [step]);
    const next: z.ZodType[] = [];
    for (const def of defs) {
      if (typeof step === 'number' && def.element) next.push(def.element);
      else if (typeof step === 'string' && def.shape?.[step]) next.push(def.shape[step]);
    }
    defs = next.flatMap((s) => [...objectSchemas(s, data), ...arrayDefs(s)]);
  }
  return defs;
}

function arrayDefs(schema: z.ZodType, depth = 0): Def[] {
  const def = defOf(schema);
  if (def.type === 'array') return [def];
  if (depth < 20 && def.innerType) return arrayDefs(def.innerType, depth + 1);
  if (depth < 20 && def.type === 'pipe') return arrayDefs(def.in!, depth + 1);
  return [];
}

function knownKeys(schema: z.ZodType, path: ConfigPath, input: unknown): string[] {
  return schemasAt(schema, path, input).flatMap((d) => (d.type === 'object' ? Object.keys(d.shape ?? {}) : []));
}
