/**
 * The PostgreSQL parser (libpg_query compiled to WASM) and small helpers for reading its JSON AST.
 * The AST is plain JSON: a node is `{ NodeName: { ...fields } }`; lists are arrays of nodes.
 */
import type * as PgQuery from 'libpg-query';

/** A parsed AST node's fields, read defensively: the parser's JSON omits defaults. */
export type AstFields = Record<string, unknown>;

let loaded: Promise<void> | undefined;
let ready = false;
/** The parser, once loaded: a process that never judges SQL never compiles its WASM (nor holds its memory). */
let pg: typeof PgQuery;

/**
 * Loads the parser. Call once at startup; every other policy function is synchronous. The module is imported here,
 * not at the top: importing it compiles its WASM and reserves its 128 MB of WASM memory, which a process that only
 * imports the policy types (a CLI command, a broker config check) never needs.
 */
export function initPolicyEngine(): Promise<void> {
  loaded ??= import('libpg-query').then(async (m) => {
    await m.loadModule();
    pg = m;
    ready = true;
  });
  return loaded;
}

export function policyEngineReady(): boolean {
  return ready;
}

export interface RawStatement {
  stmt: AstFields;
  /** Byte offset into the UTF-8 text (the parser counts bytes, not UTF-16 units). */
  location: number;
  /** Byte length; 0 means "to the end of the text". */
  length: number;
}

export function parseStatements(sql: string): RawStatement[] {
  if (!ready) throw new Error('policy engine not initialised: call initPolicyEngine() first');
  const result = pg.parseSync(sql) as unknown as { stmts?: Array<{ stmt?: AstFields; stmt_location?: number; stmt_len?: number }> };
  return (result.stmts ?? []).map((s) => ({ stmt: s.stmt ?? {}, location: s.stmt_location ?? 0, length: s.stmt_len ?? 0 }));
}

export function parsePlPgSql(sql: string): unknown {
  if (!ready) throw new Error('policy engine not initialised: call initPolicyEngine() first');
  return pg.parsePlPgSQLSync(sql) as unknown;
}

/** Tokens of the real lexer, used to split a PL/pgSQL assignment `target := expr` without regex. */
export function scanTokens(sql: string): Array<{ start: number; end: number; tokenName: string; text: string }> {
  if (!ready) throw new Error('policy engine not initialised: call initPolicyEngine() first');
  return pg.scanSync(sql).tokens;
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();
const ASCII = /^[\x00-\x7f]*$/;

/**
 * The source text of each statement, cut by the parser's byte offsets. Most texts are ASCII, where bytes and UTF-16
 * units coincide and the text is sliced as it is; any other is encoded to UTF-8 once for all its statements.
 */
export function statementTexts(sql: string, raws: readonly RawStatement[]): string[] {
  if (ASCII.test(sql)) return raws.map((raw) => (raw.length > 0 ? sql.slice(raw.location, raw.location + raw.length) : sql.slice(raw.location)));
  const bytes = utf8.encode(sql);
  return raws.map((raw) => fromUtf8.decode(bytes.subarray(raw.location, raw.length > 0 ? raw.location + raw.length : bytes.length)));
}

/** The source text of one statement, cut by the parser's byte offsets. */
export function statementText(sql: string, raw: RawStatement): string {
  return statementTexts(sql, [raw])[0]!;
}

/** `{ Name: fields }` → [Name, fields], or undefined when the value is not a single-key node. */
export function nodeOf(value: unknown): [string, AstFields] | undefined {
  if (!isRecord(value)) return undefined;
  const keys = Object.keys(value);
  if (keys.length !== 1) return undefined;
  const name = keys[0];
  const fields = value[name];
  const first = name.charCodeAt(0);
  if (first < 65 || first > 90 || !isRecord(fields)) return undefined;
  return [name, fields];
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

export function str(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** The `sval` of a `{ String: { sval } }` node. */
export function stringNode(value: unknown): string | undefined {
  const n = nodeOf(value);
  return n && n[0] === 'String' ? (str(n[1].sval) ?? '') : undefined;
}

/** Names in a list of String nodes (funcname, DropStmt object lists, ColumnRef fields). */
export function nameList(value: unknown): string[] {
  return asArray(value)
    .map((v) => stringNode(v))
    .filter((v): v is string => v !== undefined);
}

/** A constant string argument (`'role'`), through casts; undefined when not a literal. */
export function constString(value: unknown): string | undefined {
  const n = nodeOf(value);
  if (!n) return undefined;
  const [name, f] = n;
  if (name === 'A_Const') {
    const s = f.sval;
    if (isRecord(s)) return str(s.sval) ?? '';
    return undefined;
  }
  if (name === 'TypeCast') return constString(f.arg);
  if (name === 'NamedArgExpr') return constString(f.arg);
  return undefined;
}
