/** Parses "90s", "15m", "1h", "2d" or a number of seconds into milliseconds. */
export function parseDuration(input: string | number): number {
  if (typeof input === 'number') return input * 1000;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(input);
  if (!m) throw new Error(`not a duration: "${input}" (use e.g. 30s, 15m, 1h)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[unit]!;
  return Math.round(n * factor);
}
