/**
 * COPY … TO STDOUT under column masking: which output columns a COPY carries (from its query, or its column list)
 * and how its rows are written (text or CSV, delimiter, quote, escape, NULL string, header), so the proxy can mask
 * field by field and write each row back in the same format. Anything it cannot place — `COPY table TO` without a
 * column list, binary format, a row that does not split into the expected fields — is 'unknown' or undefined, and
 * the caller refuses rather than guess.
 * @see https://www.postgresql.org/docs/current/sql-copy.html
 */
import { columnMatches, type MaskPlan } from './mask-plan.js';
import { maskedOutputColumns } from './output-columns.js';
import { asArray, isRecord, nodeOf, parseStatements, str } from './sql-ast.js';

export interface CopyFormat {
  csv: boolean;
  delimiter: string;
  quote: string;
  escape: string;
  /** How NULL is written: `\N` (text) or an unquoted empty field (CSV) unless set. */
  null: string;
  header: boolean;
}

export interface CopyColumns {
  /** One flag per output column: mask it whole. */
  masked: boolean[];
  format: CopyFormat;
}

function optionValue(arg: unknown): string | boolean | undefined {
  const n = nodeOf(arg);
  if (!n) return arg === undefined ? true : undefined;
  if (n[0] === 'String') return str(n[1].sval);
  if (n[0] === 'Boolean') return n[1].boolval === true;
  if (n[0] === 'Integer') return String(n[1].ival ?? 0);
  return undefined;
}

/** The columns and row format of a `COPY … TO STDOUT`; 'unknown' when either cannot be known from the text. */
export function copyOutputColumns(sql: string, plan: Pick<MaskPlan, 'columns'>, statementIndex = 0): CopyColumns | 'unknown' {
  let stmt: Record<string, unknown> | undefined;
  try {
    const raws = parseStatements(sql);
    const n = nodeOf(raws[statementIndex]?.stmt);
    if (n?.[0] === 'CopyStmt') stmt = n[1];
  } catch {
    return 'unknown';
  }
  if (!stmt || stmt.is_from === true) return 'unknown';
  const opts: Record<string, string | boolean | undefined> = {};
  for (const o of asArray(stmt.options)) {
    const d = nodeOf(o);
    if (d?.[0] === 'DefElem' && typeof d[1].defname === 'string') opts[d[1].defname.toLowerCase()] = optionValue(d[1].arg);
  }
  const formatName = typeof opts.format === 'string' ? opts.format.toLowerCase() : opts.csv === true ? 'csv' : 'text';
  if (formatName !== 'text' && formatName !== 'csv') return 'unknown';
  const csv = formatName === 'csv';
  const text = (v: unknown, fallback: string) => (typeof v === 'string' ? v : fallback);
  const quote = text(opts.quote, '"');
  const format: CopyFormat = {
    csv,
    delimiter: text(opts.delimiter, csv ? ',' : '\t'),
    quote,
    escape: text(opts.escape, quote),
    null: text(opts.null, csv ? '' : '\\N'),
    header: opts.header === true || (typeof opts.header === 'string' && ['true', 'on', '1'].includes(opts.header.toLowerCase())),
  };
  if ([format.delimiter, format.quote, format.escape].some((c) => c.length !== 1)) return 'unknown';
  if (stmt.query !== undefined) {
    const masked = maskedOutputColumns(stmt.query as Record<string, unknown>, plan);
    return masked === 'unknown' ? 'unknown' : { masked, format };
  }
  const rel = stmt.relation;
  const columns = asArray(stmt.attlist).map((c) => str(nodeOf(c)?.[1].sval));
  if (!isRecord(rel) || typeof rel.relname !== 'string' || columns.length === 0 || columns.some((c) => c === undefined)) return 'unknown';
  return { masked: columns.map((column) => columnMatches(plan, { schema: str(rel.schemaname), table: rel.relname as string, column: column! })), format };
}

/**
 * Why a `COPY … TO STDOUT` cannot be masked by column (when `copyOutputColumns` said 'unknown'), named so the user
 * knows what to change: `*` in its query, a whole table, binary format, a multi-character delimiter.
 */
export function copyUnmaskableReason(sql: string, statementIndex = 0): string {
  const wholeTable = 'COPY … TO STDOUT of a whole table cannot be masked by column; copy a query (COPY (SELECT …) TO STDOUT) or name the columns (COPY t (a, b) TO STDOUT)';
  let stmt: Record<string, unknown> | undefined;
  try {
    const n = nodeOf(parseStatements(sql)[statementIndex]?.stmt);
    if (n?.[0] === 'CopyStmt') stmt = n[1];
  } catch {
    return wholeTable;
  }
  if (!stmt) return wholeTable;
  for (const o of asArray(stmt.options)) {
    const d = nodeOf(o);
    if (d?.[0] !== 'DefElem') continue;
    const value = optionValue(d[1].arg);
    if (d[1].defname === 'format' && typeof value === 'string' && value.toLowerCase() === 'binary') {
      return 'binary COPY cannot be masked field by field; use FORMAT text or FORMAT csv';
    }
    if (['delimiter', 'quote', 'escape'].includes(String(d[1].defname)) && typeof value === 'string' && value.length !== 1) {
      return `COPY with a ${String(d[1].defname)} of ${value.length} characters cannot be split into fields to mask; use one character`;
    }
  }
  if (stmt.query !== undefined) {
    if (containsStar(stmt.query)) {
      return '`*` in a COPY query cannot be masked by column: the masker needs each output column by name; list the columns (COPY (SELECT id, email FROM t) TO STDOUT)';
    }
    return 'the output columns of this COPY query cannot be told from its text, so they cannot be masked by column; select plain named columns';
  }
  return wholeTable;
}

/** A `*` (or `t.*`) anywhere in a query's target lists. */
function containsStar(value: unknown, depth = 0): boolean {
  if (depth > 1000) return true;
  if (Array.isArray(value)) return value.some((v) => containsStar(v, depth + 1));
  if (!isRecord(value)) return false;
  if ('A_Star' in value) return true;
  return Object.values(value).some((v) => containsStar(v, depth + 1));
}

/** The raw fields of one row (without its line ending), or undefined when it does not split cleanly. */
export function splitCopyRow(row: string, f: CopyFormat): string[] | undefined {
  const fields: string[] = [];
  let at = 0;
  if (!f.csv) {
    let start = 0;
    for (; at < row.length; at++) {
      if (row[at] === '\\') at++;
      else if (row[at] === f.delimiter) {
        fields.push(row.slice(start, at));
        start = at + 1;
      }
    }
    if (at > row.length) return undefined; // a row ending in a lone backslash
    fields.push(row.slice(start));
    return fields;
  }
  for (;;) {
    if (row[at] === f.quote) {
      let end = at + 1;
      for (;;) {
        if (end >= row.length) return undefined;
        if (row[end] === f.escape && f.escape !== f.quote && row[end + 1] !== undefined) end += 2;
        else if (row[end] === f.quote && f.escape === f.quote && row[end + 1] === f.quote) end += 2;
        else if (row[end] === f.quote) break;
        else end++;
      }
      fields.push(row.slice(at, end + 1));
      at = end + 1;
      if (at === row.length) return fields;
      if (row[at] !== f.delimiter) return undefined;
      at++;
    } else {
      const next = row.indexOf(f.delimiter, at);
      const end = next === -1 ? row.length : next;
      if (row.slice(at, end).includes(f.quote)) return undefined;
      fields.push(row.slice(at, end));
      if (next === -1) return fields;
      at = next + 1;
    }
  }
}

const TEXT_ESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };

/** A raw field's value, or null for SQL NULL. */
export function decodeCopyField(raw: string, f: CopyFormat): string | null {
  if (!f.csv) {
    if (raw === f.null) return null;
    return raw.replace(/\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)/gs, (_, e: string) => {
      if (e[0] === 'x' && e.length > 1) return String.fromCharCode(parseInt(e.slice(1), 16));
      if (/^[0-7]+$/.test(e)) return String.fromCharCode(parseInt(e, 8));
      return TEXT_ESCAPES[e] ?? e;
    });
  }
  if (!raw.startsWith(f.quote)) return raw === f.null ? null : raw;
  const inner = raw.slice(1, -1);
  let out = '';
  for (let i = 0; i < inner.length; i++) {
    if ((inner[i] === f.escape || inner[i] === f.quote) && i + 1 < inner.length) {
      out += inner[i + 1];
      i++;
    } else out += inner[i];
  }
  return out;
}

/** A value (or NULL) written as a field of this format. */
export function encodeCopyField(value: string | null, f: CopyFormat): string {
  if (value === null) return f.null;
  if (!f.csv) {
    return value.replace(/[\\\n\r\t]/g, (c) => ({ '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' })[c]!).split(f.delimiter).join(`\\${f.delimiter}`);
  }
  const needsQuotes = value === f.null || [f.delimiter, f.quote, '\n', '\r'].some((c) => value.includes(c)) || value.includes(f.escape);
  if (!needsQuotes) return value;
  let out = '';
  for (const c of value) out += c === f.quote || c === f.escape ? `${f.escape}${c}` : c;
  return `${f.quote}${out}${f.quote}`;
}

/**
 * One COPY row with the flagged columns masked whole (`mask` gives a value's replacement, null for SQL NULL),
 * written back in the same format; undefined when the row does not have the expected fields.
 */
export function maskCopyRow(line: string, columns: CopyColumns, mask: (value: string) => string | null): string | undefined {
  const ending = line.endsWith('\r\n') ? '\r\n' : line.endsWith('\n') ? '\n' : '';
  const fields = splitCopyRow(line.slice(0, line.length - ending.length), columns.format);
  if (!fields || fields.length !== columns.masked.length) return undefined;
  const out = fields.map((raw, i) => {
    if (!columns.masked[i]) return raw;
    const value = decodeCopyField(raw, columns.format);
    return value === null ? raw : encodeCopyField(mask(value), columns.format);
  });
  return out.join(columns.format.delimiter) + ending;
}
