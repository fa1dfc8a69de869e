/**
 * "Did you mean …": the candidates close to a mistyped name, nearest first. Used for config keys and enum values,
 * connection names and commands, so a typo gets the right name back instead of a bare "unknown".
 */
export function closestNames(input: string, candidates: Iterable<string>, max = 3): string[] {
  const wanted = input.toLowerCase();
  // Allow about one edit in three characters (at least one): `defualtAction` → `defaultAction`, not `name`.
  const limit = Math.max(1, Math.floor(wanted.length / 3));
  return [...new Set(candidates)]
    .map((name) => ({ name, distance: editDistance(wanted, name.toLowerCase()) }))
    .filter((c) => c.distance <= limit || (wanted.length >= 3 && c.name.toLowerCase().startsWith(wanted)))
    .sort((a, b) => a.distance - b.distance || a.name.localeCompare(b.name))
    .slice(0, max)
    .map((c) => c.name);
}

/** ` (did you mean "a" or "b"?)`, or '' when nothing is close. */
export function didYouMean(input: string, candidates: Iterable<string>): string {
  const close = closestNames(input, candidates);
  if (close.length === 0) return '';
  const quoted = close.map((c) => `"${c}"`);
  return ` (did you mean ${quoted.length === 1 ? quoted[0] : `${quoted.slice(0, -1).join(', ')} or ${quoted.at(-1)}`}?)`;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours cost 1. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}
