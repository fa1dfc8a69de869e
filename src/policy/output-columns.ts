/**
 * Which output columns of a query derive from a masked source column — so `select lower(email) as e` is masked
 * although RowDescription says `e`. Conservative: a column is masked when any column it is computed from (through
 * functions, casts, operators, CASE, COALESCE, sub-selects, CTEs, derived tables) may be masked; `*` gives
 * 'unknown', and the proxy then falls back to RowDescription names plus content detectors.
 */
import { columnMatches, type MaskPlan } from './mask-plan.js';
import { type AstFields, asArray, isRecord, nameList, nodeOf, parseStatements, str } from './sql-ast.js';

type Plan = Pick<MaskPlan, 'columns'>;

interface OutputColumn {
  name?: string;
  masked: boolean;
}
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
      out.push({ name: str(n[1].name) ?? implicitName(val), masked: this.expr(val, scope) });
    }
    return out;
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
  try {
    let node: unknown = statement;
    if (typeof statement === 'string') {
      const raws = parseStatements(statement);
      if (statementIndex >= raws.length) return 'unknown';
      node = raws[statementIndex].stmt;
    }
    const cols = new Deriver(plan).statement(node);
    return cols === 'unknown' ? 'unknown' : cols.map((c) => c.masked);
  } catch {
    return 'unknown';
  }
}
