/**
 * Results as an agent reads them: rows as JSON objects keyed by column, values as JSON can carry them, and at most
 * `maxRows` rows and `maxBytes` bytes of them, with `truncated` saying when more came back than is shown.
 */
import type { StatementResult } from './gate.js';

export interface ResultLimits {
  maxRows: number;
  maxBytes: number;
}

/** Used when a connection's config says nothing (`mcp: { maxRows, maxBytes }`). */
export const DEFAULT_LIMITS: ResultLimits = { maxRows: 100, maxBytes: 64 * 1024 };

export interface ShapedStatement {
  command: string;
  rowCount: number | null;
  columns: string[];
  rows: Array<Record<string, unknown>>;
  /** More rows came back than are shown (row or byte cap). */
  truncated: boolean;
}

export interface ShapedResult {
  results: ShapedStatement[];
  truncated: boolean;
  limits: ResultLimits;
}

/** A value as JSON carries it: dates as ISO text, bytes as PostgreSQL's `\x…` hex, bigints as text. */
export function jsonValue(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? String(v) : v.toISOString();
  if (Buffer.isBuffer(v)) return `\\x${v.toString('hex')}`;
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return v.map(jsonValue);
  return v;
}

/**
 * Column names as object keys: a second `id` (a join's) becomes `id_2`, so no value is lost to a duplicate key.
 */
export function uniqueKeys(columns: string[]): string[] {
  const seen = new Map<string, number>();
  return columns.map((c) => {
    const n = (seen.get(c) ?? 0) + 1;
    seen.set(c, n);
    return n === 1 ? c : `${c}_${n}`;
  });
}

/** Shapes every statement's rows within one shared budget of rows and bytes (a multi-statement text shares it). */
export function shapeResults(results: StatementResult[], limits: ResultLimits): ShapedResult {
  let rowsLeft = limits.maxRows;
  let bytesLeft = limits.maxBytes;
  const shaped = results.map((r): ShapedStatement => {
    const keys = uniqueKeys(r.columns);
    const rows: Array<Record<string, unknown>> = [];
    for (const row of r.rows) {
      if (rowsLeft <= 0) break;
      const obj = Object.fromEntries(keys.map((k, i) => [k, jsonValue(row[i])]));
      const size = Buffer.byteLength(JSON.stringify(obj));
      if (size > bytesLeft) {
        bytesLeft = 0;
        break;
      }
      bytesLeft -= size;
      rowsLeft -= 1;
      rows.push(obj);
    }
    return { command: r.command, rowCount: r.rowCount, columns: r.columns, rows, truncated: rows.length < r.rows.length };
  });
  return { results: shaped, truncated: shaped.some((s) => s.truncated), limits };
}

/** Text cut to `maxBytes` bytes (on a character boundary), and whether it was. */
export function capText(text: string, maxBytes: number): { text: string; truncated: boolean } {
  const buf = Buffer.from(text, 'utf8');
  if (buf.length <= maxBytes) return { text, truncated: false };
  // A cut inside a multi-byte character decodes to U+FFFD: drop that partial character.
  return { text: buf.subarray(0, maxBytes).toString('utf8').replace(/\uFFFD$/, ''), truncated: true };
}
