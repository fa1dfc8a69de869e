/**
 * Which output columns of a query derive from a masked source column — so `select lower(email) as e` is masked
 * although RowDescription says `e`. Conservative: a column is masked when any column it is computed from (through
 * functions, casts, operators, CASE, COALESCE, sub-selects, CTEs, derived tables) may be masked; `*` gives
 * 'unknown', and the proxy then falls back to RowDescription names plus content detectors.
 */
import { columnMatches, type MaskPlan } from './mask-plan.js';
import { type AstFields, asArray, constString, isRecord, nameList, nodeOf, parseStatements, str } from './sql-ast.js';

type Plan = Pick<MaskPlan, 'columns'>;

/**
 * What the SQL shows of a JSON value computed from a masked column:
 * - `object`: built by `json(b)_build_object` with literal keys — per key, whether its value derives from a masked
 *   column, or the shape of a value built the same way;
 * - `array`: `json(b)_agg(x)` — the shape of every element;
 * - `data-keys`: built by a function that takes its keys from data (`json_object_agg(email, …)`, `json_object`,
 *   hstore): its keys may hold masked values.
 */
export type JsonShape =
  | { kind: 'object'; members: Map<string, boolean | JsonShape> }
  | { kind: 'array'; items: boolean | JsonShape }
  | { kind: 'data-keys' };

interface OutputColumn {
  name?: string;
  masked: boolean;
  /** Set when the column is a `json(b)_build_object` with literal keys and derives from a masked column. */
  json?: JsonShape;
}

const JSON_OBJECT_BUILDERS = new Set(['json_build_object', 'jsonb_build_object']);
const JSON_AGGREGATES = new Set(['json_agg', 'jsonb_agg', 'json_agg_strict', 'jsonb_agg_strict']);
/** Functions and SQL/JSON constructors whose output keys come from their arguments. */
const DATA_KEY_FUNCTION = /object_agg|^jsonb?_object$|^hstore_to_json/;
const DATA_KEY_NODES = new Set(['JsonObjectConstructor', 'JsonObjectAgg']);
type Outputs = OutputColumn[] | 'unknown';

type ScopeEntry =
  | { kind: 'table'; alias: string; schema?: string; table: string }
  | { kind: 'derived'; alias: string; columns: Outputs };

interface Scope {
  entries: ScopeEntry[];
  ctes: Map<string, Outputs>;
  parent?: Scope;
}

class Unknown extends Error {}

const MAX_DEPTH = 500;

class Deriver {
  private depth = 0;
  constructor(private readonly plan: Plan) {}

  private guard<T>(fn: () => T): T {
    if (++this.depth > MAX_DEPTH) throw new Unknown();
    try {
      return fn();
    } finally {
      this.depth--;
    }
  }

  statement(node: unknown, outer?: Scope): Outputs {
    const n = nodeOf(node);
    if (!n) return 'unknown';
    const [name, f] = n;
    switch (name) {
      case 'SelectStmt':
        return this.select(f, outer);
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt':
        return this.returning(name, f, outer);
      case 'DeclareCursorStmt':
      case 'PrepareStmt':
        return this.statement(f.query, outer);
      default:
        return 'unknown';
    }
  }

  private withCtes(f: AstFields, outer?: Scope): Scope {
    const scope: Scope = { entries: [], ctes: new Map(outer?.ctes ?? []), parent: outer };
    if (isRecord(f.withClause)) {
      for (const c of asArray(f.withClause.ctes)) {
        const n = nodeOf(c);
        if (n?.[0] !== 'CommonTableExpr') continue;
        let cols = this.statement(n[1].ctequery, scope);
        cols = renamed(cols, nameList(n[1].aliascolnames));
        scope.ctes.set(str(n[1].ctename) ?? '', cols);
      }
    }
    return scope;
  }

  private select(f: AstFields, outer?: Scope): Outputs {
    return this.guard(() => {
      const scope = this.withCtes(f, outer);
      if (str(f.op) !== undefined && f.op !== 'SETOP_NONE') {
        const l = this.statement({ SelectStmt: f.larg }, scope);
        const r = this.statement({ SelectStmt: f.rarg }, scope);
        if (l === 'unknown' || r === 'unknown' || l.length !== r.length) return 'unknown';
        return l.map((c, i) => ({ name: c.name, masked: c.masked || r[i].masked }));
      }
      if (f.valuesLists !== undefined) {
        const rows = asArray(f.valuesLists).map((row) => {
          const items = nodeOf(row)?.[0] === 'List' ? asArray(nodeOf(row)![1].items) : asArray(row);
          return items.map((e) => this.expr(e, scope));
        });
        const width = rows[0]?.length ?? 0;
        return Array.from({ length: width }, (_, i) => ({
          name: `column${i + 1}`,
          masked: rows.some((r) => r[i] ?? true),
        }));
      }
      for (const item of asArray(f.fromClause)) this.fromItem(item, scope);
      return this.targets(asArray(f.targetList), scope);
    });
  }

  private returning(name: string, f: AstFields, outer?: Scope): Outputs {
    const scope = this.withCtes(f, outer);
    const rel = f.relation;
    if (isRecord(rel) && typeof rel.relname === 'string') {
      const alias = isRecord(rel.alias) ? (str(rel.alias.aliasname) ?? rel.relname) : rel.relname;
      scope.entries.push({ kind: 'table', alias, schema: str(rel.schemaname), table: rel.relname });
    }
    for (const item of [...asArray(f.fromClause), ...asArray(f.usingClause)]) this.fromItem(item, scope);
    if (name === 'MergeStmt' && f.sourceRelation !== undefined) this.fromItem(f.sourceRelation, scope);
    const clause = isRecord(f.returningClause) ? asArray(f.returningClause.exprs) : asArray(f.returningList);
    return this.targets(clause, scope);
  }

  private targets(list: unknown[], scope: Scope): Outputs {
    const out: OutputColumn[] = [];
    for (const t of list) {
      const n = nodeOf(t);
      if (n?.[0] !== 'ResTarget') return 'unknown';
      const val = n[1].val;
      const ref = nodeOf(val);
      if (ref?.[0] === 'ColumnRef' && asArray(ref[1].fields).some((x) => nodeOf(x)?.[0] === 'A_Star')) return 'unknown';
      const masked = this.expr(val, scope);
      const json = masked ? this.jsonShape(val, scope) : undefined;
      out.push({ name: str(n[1].name) ?? implicitName(val), masked, ...(json ? { json } : {}) });
    }
    return out;
  }

  /**
   * Which members of a `json(b)_build_object(…)` (through casts) derive from masked columns; undefined unless
   * every key is a string literal, so that the keys in the result are the SQL's and hold no data.
   */
  jsonShape(value: unknown, scope: Scope): JsonShape | undefined {
    const built = this.builtJson(value, scope);
    if (built) return built;
    return buildsDataKeys(value) ? { kind: 'data-keys' } : undefined;
  }

  private builtJson(value: unknown, scope: Scope): JsonShape | undefined {
    const n = nodeOf(value);
    if (!n) return undefined;
    const [name, f] = n;
    if (name === 'TypeCast') return this.builtJson(f.arg, scope);
    if (name !== 'FuncCall' || f.func_variadic === true || f.agg_star === true || f.over !== undefined) return undefined;
    const fn = nameList(f.funcname).pop() ?? '';
    const args = asArray(f.args);
    const part = (arg: unknown): boolean | JsonShape => {
      const masked = this.expr(arg, scope);
      return (masked && this.builtJson(arg, scope)) || masked;
    };
    if (JSON_AGGREGATES.has(fn) && args.length === 1) {
      // Only an aggregate of built objects has a known shape; json_agg(c) of rows is left to its column-named keys.
      const items = part(args[0]);
      return typeof items === 'boolean' ? undefined : { kind: 'array', items };
    }
    if (!JSON_OBJECT_BUILDERS.has(fn) || args.length % 2 !== 0) return undefined;
    const members = new Map<string, boolean | JsonShape>();
    for (let i = 0; i < args.length; i += 2) {
      const key = constString(args[i]);
      if (key === undefined || members.has(key)) return undefined;
      members.set(key, part(args[i + 1]));
    }
    return { kind: 'object', members };
  }

  private fromItem(item: unknown, scope: Scope): void {
    const n = nodeOf(item);
    const [name, f] = n ?? ['', {}];
    const alias = isRecord(f.alias) ? str(f.alias.aliasname) : undefined;
    const colnames = isRecord(f.alias) ? nameList(f.alias.colnames) : [];
    switch (name) {
      case 'RangeVar': {
        const rel = str(f.relname) ?? '';
        const schema = str(f.schemaname);
        const cte = schema === undefined ? lookupCte(scope, rel) : undefined;
        if (cte !== undefined) scope.entries.push({ kind: 'derived', alias: alias ?? rel, columns: renamed(cte, colnames) });
        else scope.entries.push({ kind: 'table', alias: alias ?? rel, schema, table: rel });
        return;
      }
      case 'RangeSubselect': {
        const cols = this.statement(f.subquery, scope);
        scope.entries.push({ kind: 'derived', alias: alias ?? '', columns: renamed(cols, colnames) });
        return;
      }
      case 'JoinExpr':
        this.fromItem(f.larg, scope);
        this.fromItem(f.rarg, scope);
        return;
      default: {
        // Table functions (unnest(…), xmltable …): their columns are masked when any argument is.
        const masked = this.expr(f, scope);
        const cols: Outputs = colnames.length > 0 ? colnames.map((c) => ({ name: c, masked })) : masked ? 'unknown' : [];
        scope.entries.push({ kind: 'derived', alias: alias ?? '', columns: cols });
      }
    }
  }

  /** Does an expression derive from a (possibly) masked column? */
  expr(value: unknown, scope: Scope): boolean {
    return this.guard(() => {
      if (Array.isArray(value)) return value.some((v) => this.expr(v, scope));
      if (!isRecord(value)) return false;
      const n = nodeOf(value);
      if (!n) return Object.values(value).some((v) => this.expr(v, scope));
      const [name, f] = n;
      if (name === 'ColumnRef') return this.columnRef(asArray(f.fields), scope);
      if (name === 'SubLink') {
        const cols = this.statement(f.subselect, scope);
        return cols === 'unknown' || cols.some((c) => c.masked) || this.expr(f.testexpr, scope);
      }
      if (name.endsWith('Stmt')) {
        const cols = this.statement(value, scope);
        return cols === 'unknown' || cols.some((c) => c.masked);
      }
      return Object.values(f).some((v) => this.expr(v, scope));
    });
  }

  private columnRef(fields: unknown[], scope: Scope): boolean {
    const star = fields.some((x) => nodeOf(x)?.[0] === 'A_Star');
    const parts = nameList(fields);
    if (star) {
      // t.* inside an expression (row_to_json(t.*)): the whole row.
      const entry = parts.length > 0 ? findAlias(scope, parts[parts.length - 1]) : undefined;
      return entry ? this.rowMayBeMasked(entry) : this.plan.columns.length > 0;
    }
    if (parts.length === 0) return true;
    const column = parts[parts.length - 1];
    if (parts.length === 1) {
      let candidates = 0;
      let masked = false;
      for (let s: Scope | undefined = scope; s; s = s.parent) {
        for (const e of s.entries) {
          candidates++;
          if (e.alias === column && this.rowMayBeMasked(e)) masked = true; // whole-row reference `select u from users u`
          if (this.entryColumnMasked(e, column)) masked = true;
        }
      }
      return masked || (candidates === 0 && columnMatches(this.plan, { column }));
    }
    const qualifier = parts[parts.length - 2];
    const entry = findAlias(scope, qualifier);
    if (entry) return this.entryColumnMasked(entry, column);
    // Unknown qualifier: judge by column name with the qualifier as table (and as a composite column).
    return (
      columnMatches(this.plan, { table: qualifier, schema: parts.length >= 3 ? parts[parts.length - 3] : undefined, column }) ||
      this.columnRef([{ String: { sval: qualifier } }], scope)
    );
  }

  private entryColumnMasked(e: ScopeEntry, column: string): boolean {
    if (e.kind === 'table') return columnMatches(this.plan, { schema: e.schema, table: e.table, column });
    if (e.columns === 'unknown') return true;
    const c = e.columns.find((x) => x.name === column);
    return c ? c.masked : false;
  }

  private rowMayBeMasked(e: ScopeEntry): boolean {
    if (e.kind === 'derived') return e.columns === 'unknown' || e.columns.some((c) => c.masked);
    return this.plan.columns.some((p) => {
      const parts = p.split('.');
      if (parts.length === 1) return true;
      return columnMatches({ columns: [p] }, { schema: e.schema, table: e.table, column: parts[parts.length - 1] });
    });
  }
}

/** Does an expression contain a function or constructor that makes JSON keys from its arguments? */
function buildsDataKeys(value: unknown, depth = 0): boolean {
  if (depth > MAX_DEPTH) return true;
  if (Array.isArray(value)) return value.some((v) => buildsDataKeys(v, depth + 1));
  if (!isRecord(value)) return false;
  const n = nodeOf(value);
  if (n && DATA_KEY_NODES.has(n[0])) return true;
  if (n?.[0] === 'FuncCall' && DATA_KEY_FUNCTION.test(nameList(n[1].funcname).pop() ?? '')) return true;
  return Object.values(n ? n[1] : value).some((v) => buildsDataKeys(v, depth + 1));
}

function lookupCte(scope: Scope, name: string): Outputs | undefined {
  return scope.ctes.get(name);
}

function findAlias(scope: Scope, alias: string): ScopeEntry | undefined {
  for (let s: Scope | undefined = scope; s; s = s.parent) {
    const e = s.entries.find((x) => x.alias === alias || (x.kind === 'table' && x.table === alias));
    if (e) return e;
  }
  return undefined;
}

function renamed(cols: Outputs, names: string[]): Outputs {
  if (cols === 'unknown' || names.length === 0) return cols;
  return cols.map((c, i) => ({ name: names[i] ?? c.name, masked: c.masked }));
}

/** The column name PostgreSQL gives an unnamed target: the column's or function's name. */
function implicitName(val: unknown): string | undefined {
  const n = nodeOf(val);
  if (!n) return undefined;
  if (n[0] === 'ColumnRef') return nameList(n[1].fields).pop();
  if (n[0] === 'FuncCall') return nameList(n[1].funcname).pop();
  if (n[0] === 'TypeCast') return implicitName(n[1].arg);
  return undefined;
}

/**
 * For a SELECT (or the RETURNING of INSERT/UPDATE/DELETE/MERGE, or DECLARE/PREPARE of one), one flag per output
 * column: true when it derives from a column the plan masks. 'unknown' for `*`, other statements, or text that
 * does not parse. `statement` is SQL text (the `statementIndex`-th statement is used) or a parsed statement node.
 */
export function maskedOutputColumns(
  statement: string | Record<string, unknown>,
  plan: Pick<MaskPlan, 'columns'>,
  statementIndex = 0,
): boolean[] | 'unknown' {
  const cols = outputColumnMasks(statement, plan, statementIndex);
  return cols === 'unknown' ? 'unknown' : cols.map((c) => c.masked);
}

/** As `maskedOutputColumns`, with the JSON shape of columns built by `json(b)_build_object` with literal keys. */
export function outputColumnMasks(
  statement: string | Record<string, unknown>,
  plan: Pick<MaskPlan, 'columns'>,
  statementIndex = 0,
): Array<{ masked: boolean; json?: JsonShape }> | 'unknown' {
  try {
    let node: unknown = statement;
    if (typeof statement === 'string') {
      const raws = parseStatements(statement);
      if (statementIndex >= raws.length) return 'unknown';
      node = raws[statementIndex].stmt;
    }
    const cols = new Deriver(plan).statement(node);
    return cols === 'unknown' ? 'unknown' : cols.map((c) => ({ masked: c.masked, ...(c.json ? { json: c.json } : {}) }));
  } catch {
    return 'unknown';
  }
}
