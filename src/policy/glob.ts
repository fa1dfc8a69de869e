/**
 * Glob matching for rule patterns (`payroll.*`, `dblink*`, `*.ssn`): `*` is any run of characters, `?` one.
 * Iterative with a single backtrack point, so a pattern can never cost more than pattern × text steps.
 */
export function globMatch(pattern: string, text: string, caseInsensitive = false): boolean {
  const p = caseInsensitive ? pattern.toLowerCase() : pattern;
  const t = caseInsensitive ? text.toLowerCase() : text;
  let pi = 0;
  let ti = 0;
  let starP = -1;
  let starT = 0;
  while (ti < t.length) {
    if (pi < p.length && (p[pi] === '?' || p[pi] === t[ti])) {
      pi++;
      ti++;
    } else if (pi < p.length && p[pi] === '*') {
      starP = pi++;
      starT = ti;
    } else if (starP >= 0) {
      pi = starP + 1;
      ti = ++starT;
    } else {
      return false;
    }
  }
  while (pi < p.length && p[pi] === '*') pi++;
  return pi === p.length;
}

/** A `schema.name` pattern split in two; the schema part is absent for a bare `name`. */
export interface QualifiedPattern {
  schema?: string;
  name: string;
}

export function splitQualified(pattern: string): QualifiedPattern {
  const parts = pattern.split('.');
  if (parts.length === 1) return { name: parts[0] };
  return { schema: parts[parts.length - 2], name: parts[parts.length - 1] };
}

/**
 * Does a relation (or function) name match a `schema.name` pattern?
 * `broad` (deny/review rules): an unqualified name may live in any schema (search_path can point anywhere), so
 * only the name part must match. Narrow (allow rules): an unqualified name matches only a pattern whose schema part
 * is `*` or absent. A name of `*` (every relation of a schema) matches broadly on the schema alone, narrowly only
 * a pattern whose name part is `*`.
 */
export function qualifiedMatches(
  pattern: string,
  ref: { schema?: string; name: string },
  broad: boolean,
): boolean {
  const p = splitQualified(pattern);
  // Identifiers are case-folded by the parser; quoted ones keep their case. Deny rules match either way.
  const ci = broad;
  const schemaOk =
    p.schema === undefined
      ? true
      : ref.schema === undefined
        ? broad || p.schema === '*'
        : globMatch(p.schema, ref.schema, ci);
  if (!schemaOk) return false;
  if (ref.name === '*') return broad || p.name === '*';
  return globMatch(p.name, ref.name, ci);
}
