/**
 * Classifies SQL text by walking the AST of the real PostgreSQL parser — never by pattern matching on the text,
 * so comments, case, quoting, whitespace and dollar quoting cannot change the answer.
 *
 * Everything that runs as part of a statement is folded into that statement's classification: data-modifying CTEs,
 * the statement under EXPLAIN ANALYZE, the static SQL of a DO block, the body of a CREATE FUNCTION written in
 * `sql` or `plpgsql`, the actions of a CREATE RULE, the statement of a PREPARE. What cannot be seen statically
 * (EXECUTE of a string in PL/pgSQL, DO or functions in other languages, functions known to run SQL given as text)
 * is marked with the category `dynamic`.
 *
 * Not visible here (the rules and the backend's own privileges must cover it): the body of a function that already
 * exists (`select f()`), triggers and rules that already exist, views' definitions, what a `dynamic` statement
 * does, and which schema an unqualified name resolves to.
 */
import {
  type AstFields,
  type RawStatement,
  asArray,
  constString,
  isRecord,
  nameList,
  nodeOf,
  parsePlPgSql,
  parseStatements,
  scanTokens,
  statementTexts,
  str,
} from './sql-ast.js';
import { BUILTIN_FUNCTIONS } from './builtin-functions.js';

export { initPolicyEngine } from './sql-ast.js';

export const SQL_CATEGORIES = [
  'read',
  'write',
  'ddl',
  'admin',
  'session',
  'transaction',
  'copy',
  'copy-program',
  'dynamic',
  'call',
  'lock',
  'utility',
] as const;
export type SqlCategory = (typeof SQL_CATEGORIES)[number];

/**
 * What a statement does, whatever its spelling: a `DELETE`, a MERGE's `WHEN MATCHED THEN DELETE`, a data-modifying
 * CTE and a rule's `DO ALSO DELETE` all have the effect `delete`. `unknown` marks what cannot be seen from the text
 * (DO blocks, dynamic SQL, COPY … PROGRAM, triggers, functions that are not PostgreSQL built-ins): rules that name
 * effects treat it as possibly every effect on every table (see `statementMatches`).
 */
export const SQL_EFFECTS = [
  'read',
  'insert',
  'update',
  'delete',
  'truncate',
  'schema',
  'privilege',
  'config',
  'code',
  'server',
  'session',
  'unknown',
] as const;
export type SqlEffect = (typeof SQL_EFFECTS)[number];

/** What each effect covers, for `hoopctl policy kinds` and the README. */
export const SQL_EFFECT_DESCRIPTIONS: Record<SqlEffect, string> = {
  read: 'reads rows: SELECT, COPY … TO, FETCH, a MERGE source, plain EXPLAIN',
  insert: 'adds rows: INSERT, MERGE … INSERT, COPY … FROM, SELECT INTO, CREATE TABLE AS',
  update: 'changes rows: UPDATE, MERGE … UPDATE, INSERT … ON CONFLICT DO UPDATE, REFRESH MATERIALIZED VIEW, nextval/setval, large objects',
  delete: 'removes rows: DELETE, MERGE … DELETE, TRUNCATE, DROP TABLE/SCHEMA/DATABASE, DROP OWNED',
  truncate: 'TRUNCATE (also `delete`)',
  schema: 'changes the schema: CREATE, ALTER, DROP, RENAME, COMMENT, rules, triggers, SELECT INTO, CREATE TABLE AS',
  privilege: 'changes who may do what: GRANT, REVOKE, roles, ownership, row-level security policies, SET ROLE, SET SESSION AUTHORIZATION',
  config: 'changes server, database or role settings: ALTER SYSTEM, ALTER DATABASE/ROLE … SET, pg_reload_conf()',
  code: 'runs or installs code: DO, CALL, CREATE FUNCTION/PROCEDURE/TRIGGER/RULE/EXTENSION/LANGUAGE, LOAD',
  server: 'reaches the server itself: COPY to/from a server file or PROGRAM, pg_read_file and friends, signalling backends, replication, VACUUM/CLUSTER/REINDEX/CHECKPOINT',
  session: 'changes only this session: SET, RESET, SHOW, DISCARD, LISTEN/NOTIFY, LOCK, DEALLOCATE',
  unknown: 'cannot be seen from the text: DO, dynamic SQL (EXECUTE, dblink, query_to_xml …), functions that are not PostgreSQL built-ins, triggers, COPY … PROGRAM; an effect rule that denies or reviews treats it as every effect on every table',
};

/** Statement kinds (parser node names) a `statement:` matcher may name. */
export const STATEMENT_KINDS = [
  'AlterCollationStmt', 'AlterDatabaseRefreshCollStmt', 'AlterDatabaseSetStmt', 'AlterDatabaseStmt', 'AlterDefaultPrivilegesStmt',
  'AlterDomainStmt', 'AlterEnumStmt', 'AlterEventTrigStmt', 'AlterExtensionContentsStmt', 'AlterExtensionStmt', 'AlterFdwStmt',
  'AlterForeignServerStmt', 'AlterFunctionStmt', 'AlterObjectDependsStmt', 'AlterObjectSchemaStmt', 'AlterOpFamilyStmt',
  'AlterOperatorStmt', 'AlterOwnerStmt', 'AlterPolicyStmt', 'AlterPublicationStmt', 'AlterRoleSetStmt', 'AlterRoleStmt',
  'AlterSeqStmt', 'AlterStatsStmt', 'AlterSubscriptionStmt', 'AlterSystemStmt', 'AlterTSConfigurationStmt',
  'AlterTSDictionaryStmt', 'AlterTableMoveAllStmt', 'AlterTableSpaceOptionsStmt', 'AlterTableStmt', 'AlterTypeStmt',
  'AlterUserMappingStmt', 'CallStmt', 'CheckPointStmt', 'ClosePortalStmt', 'ClusterStmt', 'CommentStmt', 'CompositeTypeStmt',
  'ConstraintsSetStmt', 'CopyStmt', 'CreateAmStmt', 'CreateCastStmt', 'CreateConversionStmt', 'CreateDomainStmt',
  'CreateEnumStmt', 'CreateEventTrigStmt', 'CreateExtensionStmt', 'CreateFdwStmt', 'CreateForeignServerStmt',
  'CreateForeignTableStmt', 'CreateFunctionStmt', 'CreateOpClassStmt', 'CreateOpFamilyStmt', 'CreatePLangStmt',
  'CreatePolicyStmt', 'CreatePublicationStmt', 'CreateRangeStmt', 'CreateRoleStmt', 'CreateSchemaStmt', 'CreateSeqStmt',
  'CreateStatsStmt', 'CreateStmt', 'CreateSubscriptionStmt', 'CreateTableAsStmt', 'CreateTableSpaceStmt',
  'CreateTransformStmt', 'CreateTrigStmt', 'CreateUserMappingStmt', 'CreatedbStmt', 'DeallocateStmt', 'DeclareCursorStmt',
  'DefineStmt', 'DeleteStmt', 'DiscardStmt', 'DoStmt', 'DropOwnedStmt', 'DropRoleStmt', 'DropStmt', 'DropSubscriptionStmt',
  'DropTableSpaceStmt', 'DropUserMappingStmt', 'DropdbStmt', 'ExecuteStmt', 'ExplainStmt', 'FetchStmt', 'GrantRoleStmt',
  'GrantStmt', 'ImportForeignSchemaStmt', 'IndexStmt', 'InsertStmt', 'ListenStmt', 'LoadStmt', 'LockStmt', 'MergeStmt',
  'NotifyStmt', 'PLAssignStmt', 'PrepareStmt', 'ReassignOwnedStmt', 'RefreshMatViewStmt', 'ReindexStmt', 'RenameStmt',
  'ReplicaIdentityStmt', 'ReturnStmt', 'RuleStmt', 'SecLabelStmt', 'SelectStmt', 'TransactionStmt', 'TruncateStmt',
  'UnlistenStmt', 'UpdateStmt', 'VacuumStmt', 'VariableSetStmt', 'VariableShowStmt', 'ViewStmt',
] as const;

/** A relation as written in the statement; `schema` is absent when the name was not qualified. */
export interface TableRef {
  schema?: string;
  /** `*` stands for every relation of `schema` (DROP SCHEMA). */
  name: string;
}

export interface StatementInfo {
  /** Node name of the top-level statement, e.g. `DeleteStmt`. */
  kind: string;
  /** Every statement kind that runs as part of this one (nested, CTE, DO body, EXPLAIN ANALYZE …), `kind` first. */
  kinds: string[];
  categories: SqlCategory[];
  /** What the statement does (and everything that runs as part of it), in `SQL_EFFECTS` order. */
  effects: SqlEffect[];
  tablesRead: TableRef[];
  tablesWritten: TableRef[];
  /** Functions called, lower-cased, schema-qualified when written so. */
  functions: string[];
  /** An UPDATE/DELETE without a WHERE that names a column, a TRUNCATE, or an unconditional MERGE. */
  whereAbsent: boolean;
  dataModifyingCte: boolean;
  explainAnalyze: boolean;
  /** SET/RESET ROLE, RESET ALL, DISCARD ALL, set_config('role', …), writes to pg_settings. */
  setRole: boolean;
  /** SET/RESET SESSION AUTHORIZATION, RESET ALL, DISCARD ALL, set_config('session_authorization', …). */
  setSessionAuthorization: boolean;
  /** PREPARE name AS inner: the categories, tables and kinds of `inner` are folded into this statement too. */
  prepared?: { name: string; inner: StatementInfo };
  /** EXECUTE name: the caller resolves the prepared statement from session state. */
  executesPrepared?: string;
  /** The statement's own source text. */
  text: string;
}

export type SqlClassification =
  | { ok: true; statements: StatementInfo[] }
  /** `syntaxErrorAt`: the parser's syntax error, at this 1-based character of the text (as PostgreSQL reports it). */
  | { ok: false; error: string; syntaxErrorAt?: number };

/** Functions that run SQL handed to them as text, or read relations named by a string: the AST can't see inside. */
const DYNAMIC_FUNCTIONS = new Set([
  'query_to_xml',
  'query_to_xmlschema',
  'query_to_xml_and_xmlschema',
  'cursor_to_xml',
  'cursor_to_xmlschema',
  'table_to_xml',
  'table_to_xmlschema',
  'table_to_xml_and_xmlschema',
  'schema_to_xml',
  'schema_to_xmlschema',
  'schema_to_xml_and_xmlschema',
  'database_to_xml',
  'database_to_xmlschema',
  'database_to_xml_and_xmlschema',
  'ts_stat',
  'ts_rewrite',
]);
const DYNAMIC_PREFIXES = ['dblink', 'pg_background'];

/** Functions that reach the server's files, other backends, replication or configuration. */
const ADMIN_FUNCTIONS = new Set([
  'pg_read_file',
  'pg_read_binary_file',
  'pg_stat_file',
  'pg_ls_dir',
  'pg_ls_logdir',
  'pg_ls_waldir',
  'pg_ls_tmpdir',
  'pg_ls_archive_statusdir',
  'pg_ls_logicalsnapdir',
  'pg_ls_logicalmapdir',
  'pg_ls_replslotdir',
  'pg_file_write',
  'pg_file_rename',
  'pg_file_unlink',
  'pg_file_sync',
  'lo_import',
  'lo_export',
  'pg_terminate_backend',
  'pg_cancel_backend',
  'pg_signal_backend',
  'pg_reload_conf',
  'pg_rotate_logfile',
  'pg_switch_wal',
  'pg_promote',
  'pg_create_restore_point',
  'pg_backup_start',
  'pg_backup_stop',
  'pg_start_backup',
  'pg_stop_backup',
  'pg_create_physical_replication_slot',
  'pg_create_logical_replication_slot',
  'pg_drop_replication_slot',
  'pg_copy_physical_replication_slot',
  'pg_copy_logical_replication_slot',
  'pg_logical_emit_message',
  'pg_wal_replay_pause',
  'pg_wal_replay_resume',
  'pg_log_backend_memory_contexts',
  'pg_import_system_collations',
]);
const ADMIN_PREFIXES = ['pg_stat_reset', 'pg_replication_origin_'];
const WRITE_FUNCTIONS = new Set(['nextval', 'setval', 'lo_create', 'lo_creat', 'lo_unlink', 'lo_put', 'lo_from_bytea', 'lowrite', 'lo_truncate', 'lo_truncate64']);
const LOCK_PREFIXES = ['pg_advisory_', 'pg_try_advisory_'];

const ADMIN_STATEMENTS = new Set([
  'AlterSystemStmt',
  'VacuumStmt',
  'ClusterStmt',
  'ReindexStmt',
  'CheckPointStmt',
  'GrantStmt',
  'GrantRoleStmt',
  'CreateRoleStmt',
  'AlterRoleStmt',
  'AlterRoleSetStmt',
  'DropRoleStmt',
  'ReassignOwnedStmt',
  'DropOwnedStmt',
  'AlterDefaultPrivilegesStmt',
  'CreatedbStmt',
  'DropdbStmt',
  'AlterDatabaseStmt',
  'AlterDatabaseSetStmt',
  'AlterDatabaseRefreshCollStmt',
  'CreateTableSpaceStmt',
  'DropTableSpaceStmt',
  'AlterTableSpaceOptionsStmt',
  'AlterTableMoveAllStmt',
  'LoadStmt',
  'CreateExtensionStmt',
  'AlterExtensionStmt',
  'AlterExtensionContentsStmt',
  'CreateFdwStmt',
  'AlterFdwStmt',
  'CreateForeignServerStmt',
  'AlterForeignServerStmt',
  'CreateUserMappingStmt',
  'AlterUserMappingStmt',
  'DropUserMappingStmt',
  'ImportForeignSchemaStmt',
  'CreateSubscriptionStmt',
  'AlterSubscriptionStmt',
  'DropSubscriptionStmt',
  'CreatePublicationStmt',
  'AlterPublicationStmt',
  'CreateEventTrigStmt',
  'AlterEventTrigStmt',
  'SecLabelStmt',
  'CreatePLangStmt',
]);

/**
 * Effects of statement kinds the walk does not handle case by case. Kinds not listed here: `schema` when they
 * create, alter, drop, comment or rename something; `unknown` otherwise.
 */
const STATEMENT_EFFECTS: Record<string, readonly SqlEffect[]> = {
  AlterSystemStmt: ['config'],
  AlterDatabaseSetStmt: ['config'],
  AlterRoleSetStmt: ['config', 'privilege'],
  GrantStmt: ['privilege'],
  GrantRoleStmt: ['privilege'],
  CreateRoleStmt: ['privilege'],
  AlterRoleStmt: ['privilege'],
  DropRoleStmt: ['privilege'],
  ReassignOwnedStmt: ['privilege'],
  DropOwnedStmt: ['privilege', 'schema', 'delete'],
  AlterDefaultPrivilegesStmt: ['privilege'],
  AlterOwnerStmt: ['privilege', 'schema'],
  CreatePolicyStmt: ['privilege', 'schema'],
  AlterPolicyStmt: ['privilege', 'schema'],
  CreateUserMappingStmt: ['privilege', 'schema'],
  AlterUserMappingStmt: ['privilege', 'schema'],
  DropUserMappingStmt: ['privilege', 'schema'],
  SecLabelStmt: ['privilege', 'schema'],
  CreatedbStmt: ['schema'],
  DropdbStmt: ['schema', 'delete'],
  RuleStmt: ['schema', 'code'],
  CreateEventTrigStmt: ['schema', 'code', 'unknown'],
  AlterEventTrigStmt: ['schema', 'code', 'unknown'],
  CreateExtensionStmt: ['schema', 'code', 'unknown'],
  AlterExtensionStmt: ['schema', 'code', 'unknown'],
  AlterExtensionContentsStmt: ['schema', 'code'],
  CreatePLangStmt: ['schema', 'code'],
  LoadStmt: ['server', 'code', 'unknown'],
  VacuumStmt: ['server'],
  ClusterStmt: ['server'],
  ReindexStmt: ['server'],
  CheckPointStmt: ['server'],
  CreateSubscriptionStmt: ['schema', 'server'],
  AlterSubscriptionStmt: ['schema', 'server'],
  DropSubscriptionStmt: ['schema', 'server'],
  CreateTableSpaceStmt: ['schema', 'server'],
  DropTableSpaceStmt: ['schema', 'server'],
  AlterTableSpaceOptionsStmt: ['schema', 'server'],
  AlterTableMoveAllStmt: ['schema', 'server'],
  ImportForeignSchemaStmt: ['schema'],
  // The body of `CREATE FUNCTION … RETURN expr` and a PL/pgSQL assignment: their expressions are walked.
  ReplicaIdentityStmt: ['schema'],
  ReturnStmt: [],
  PLAssignStmt: [],
};

/** Relation kinds whose DROP names tables (or table-like objects) in `objects`. */
const DROP_RELATION_TYPES = new Set([
  'OBJECT_TABLE',
  'OBJECT_VIEW',
  'OBJECT_MATVIEW',
  'OBJECT_FOREIGN_TABLE',
  'OBJECT_SEQUENCE',
  'OBJECT_INDEX',
]);

/** Node-name prefixes of schema-changing statements not listed above. */
const DDL_PREFIXES = ['Create', 'Alter', 'Drop', 'Define', 'Comment', 'Composite', 'Rename', 'Index', 'Rule', 'Import'];

const MAX_DEPTH = 1000;

class Collector {
  readonly kinds: string[] = [];
  readonly categories = new Set<SqlCategory>();
  readonly effects = new Set<SqlEffect>();
  readonly read = new Map<string, TableRef>();
  readonly written = new Map<string, TableRef>();
  readonly functions = new Set<string>();
  whereAbsent = false;
  dataModifyingCte = false;
  explainAnalyze = false;
  setRole = false;
  setSessionAuthorization = false;
  prepared?: { name: string; inner: StatementInfo };
  executesPrepared?: string;

  private readonly cteScopes: Array<Set<string>> = [];
  private inCte = 0;
  private depth = 0;

  /** Source text of the statement being walked, for re-parsing a PL/pgSQL function with its signature. */
  private sourceText?: string;

  /** Parses `text` and walks each statement with its own source text in scope. */
  visitText(text: string): void {
    const raws = parseStatements(text);
    const texts = statementTexts(text, raws);
    raws.forEach((raw, i) => this.visitStatement(raw.stmt, texts[i]!));
  }

  visitStatement(stmt: AstFields, text: string): void {
    const outer = this.sourceText;
    this.sourceText = text;
    try {
      this.visit(stmt);
    } finally {
      this.sourceText = outer;
    }
  }

  addKind(kind: string): void {
    if (!this.kinds.includes(kind)) this.kinds.push(kind);
  }

  addTable(target: Map<string, TableRef>, schema: string | undefined, name: string): void {
    const ref: TableRef = schema === undefined ? { name } : { schema, name };
    target.set(`${schema ?? ''}\u0000${name}`, ref);
  }

  /** A RangeVar read in a FROM clause (or anywhere not a write target). */
  readRangeVar(f: AstFields): void {
    const name = str(f.relname) ?? '';
    const schema = str(f.schemaname);
    if (schema === undefined && this.cteScopes.some((s) => s.has(name))) return;
    this.addTable(this.read, schema, name);
  }

  writeRangeVar(value: unknown): void {
    const n = nodeOf(value);
    const f = n ? (n[0] === 'RangeVar' ? n[1] : undefined) : isRecord(value) ? value : undefined;
    if (!f || typeof f.relname !== 'string') return;
    const schema = str(f.schemaname);
    this.addTable(this.written, schema, f.relname);
    if (f.relname === 'pg_settings' && (schema === undefined || schema === 'pg_catalog')) this.roleChange(true, true);
  }

  roleChange(role: boolean, sessionAuthorization: boolean): void {
    if (role) this.setRole = true;
    if (sessionAuthorization) this.setSessionAuthorization = true;
    this.categories.add('session');
    this.categories.add('admin');
    this.effects.add('privilege');
  }

  /** Folds another statement's classification into this one (PREPARE inner, EXPLAIN ANALYZE …). */
  absorb(info: StatementInfo): void {
    for (const k of info.kinds) this.addKind(k);
    for (const c of info.categories) this.categories.add(c);
    for (const e of info.effects) this.effects.add(e);
    for (const t of info.tablesRead) this.addTable(this.read, t.schema, t.name);
    for (const t of info.tablesWritten) this.addTable(this.written, t.schema, t.name);
    for (const fn of info.functions) this.functions.add(fn);
    this.whereAbsent ||= info.whereAbsent;
    this.dataModifyingCte ||= info.dataModifyingCte;
    this.explainAnalyze ||= info.explainAnalyze;
    this.setRole ||= info.setRole;
    this.setSessionAuthorization ||= info.setSessionAuthorization;
    this.executesPrepared ??= info.executesPrepared;
  }

  visit(value: unknown): void {
    if (++this.depth > MAX_DEPTH) throw new Error('statement is nested too deeply to classify');
    try {
      if (Array.isArray(value)) {
        for (const v of value) this.visit(v);
        return;
      }
      if (!isRecord(value)) return;
      const node = nodeOf(value);
      if (!node) {
        // Some fields hold a RangeVar's fields without the node wrapper (COPY, LOCK targets, VACUUM, CLUSTER …).
        if (typeof value.relname === 'string') this.readRangeVar(value);
        for (const v of Object.values(value)) this.visit(v);
        return;
      }
      this.visitNode(node[0], node[1]);
    } finally {
      this.depth--;
    }
  }

  private visitFields(f: AstFields, skip: readonly string[] = []): void {
    for (const [key, v] of Object.entries(f)) {
      if (!skip.includes(key)) this.visit(v);
    }
  }

  private visitNode(name: string, f: AstFields): void {
    switch (name) {
      case 'RangeVar':
        this.readRangeVar(f);
        return;
      case 'FuncCall':
        this.functionCall(f);
        this.visitFields(f, ['funcname']);
        return;
      case 'CommonTableExpr':
        this.inCte++;
        try {
          this.visitFields(f);
        } finally {
          this.inCte--;
        }
        return;
    }
    if (!name.endsWith('Stmt')) {
      this.visitFields(f);
      return;
    }
    this.addKind(name);
    const ctes = cteNames(f);
    if (ctes) this.cteScopes.push(ctes);
    try {
      const skip = this.statement(name, f);
      this.visitFields(f, skip);
    } finally {
      if (ctes) this.cteScopes.pop();
    }
  }

  private functionCall(f: AstFields): void {
    const parts = nameList(f.funcname).map((p) => p.toLowerCase());
    if (parts.length === 0) return;
    this.functions.add(parts.join('.'));
    const base = parts[parts.length - 1];
    // A function outside pg_catalog's built-ins runs a body this text does not show: its effect is unknowable.
    const builtin = BUILTIN_FUNCTIONS.has(base) && (parts.length === 1 || (parts.length === 2 && parts[0] === 'pg_catalog'));
    if (!builtin) this.effects.add('unknown');
    if (DYNAMIC_FUNCTIONS.has(base) || DYNAMIC_PREFIXES.some((p) => base.startsWith(p))) this.categories.add('dynamic');
    if (ADMIN_FUNCTIONS.has(base) || ADMIN_PREFIXES.some((p) => base.startsWith(p))) {
      this.categories.add('admin');
      this.effects.add(base === 'pg_reload_conf' ? 'config' : 'server');
    }
    if (WRITE_FUNCTIONS.has(base)) {
      this.categories.add('write');
      this.effects.add('update');
    }
    if (LOCK_PREFIXES.some((p) => base.startsWith(p))) this.categories.add('lock');
    if (base === 'set_config') {
      this.categories.add('session');
      this.effects.add('session');
      const args = asArray(f.args);
      const named = args.find((a) => {
        const n = nodeOf(a);
        return n?.[0] === 'NamedArgExpr' && str(n[1].name)?.toLowerCase() === 'setting_name';
      });
      const first = named ?? args.find((a) => nodeOf(a)?.[0] !== 'NamedArgExpr');
      const setting = constString(first)?.trim().toLowerCase();
      if (setting === undefined) this.roleChange(true, true);
      else if (setting === 'role') this.roleChange(true, false);
      else if (setting === 'session_authorization') this.roleChange(false, true);
    }
  }

  /** Per-statement facts; returns the fields already handled (write targets) so they are not read as FROM items. */
  private statement(name: string, f: AstFields): string[] {
    switch (name) {
      case 'SelectStmt': {
        this.categories.add('read');
        this.effects.add('read');
        if (asArray(f.lockingClause).length > 0) this.categories.add('lock');
        if (isRecord(f.intoClause)) {
          this.categories.add('write');
          this.categories.add('ddl');
          this.effects.add('schema');
          this.effects.add('insert');
          this.writeRangeVar(f.intoClause.rel);
          return ['intoClause'];
        }
        return [];
      }
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt': {
        this.categories.add('write');
        this.writeEffects(name, f);
        if (this.inCte > 0) this.dataModifyingCte = true;
        this.writeRangeVar(f.relation);
        if (name === 'UpdateStmt' || name === 'DeleteStmt') {
          if (!restrictsRows(f.whereClause)) this.whereAbsent = true;
        }
        if (name === 'MergeStmt' && mergeIsUnbounded(f)) this.whereAbsent = true;
        return ['relation'];
      }
      case 'TruncateStmt':
        this.categories.add('write');
        // Every row goes: a truncate is also a delete, so a rule on `delete` catches it.
        this.effects.add('truncate');
        this.effects.add('delete');
        this.whereAbsent = true;
        for (const r of asArray(f.relations)) this.writeRangeVar(r);
        return ['relations'];
      case 'CopyStmt': {
        this.categories.add('copy');
        const from = f.is_from === true;
        this.categories.add(from ? 'write' : 'read');
        this.effects.add(from ? 'insert' : 'read');
        if (f.is_program === true) {
          // A shell command on the database server: anything at all may happen.
          this.categories.add('copy-program');
          this.effects.add('server');
          this.effects.add('unknown');
        } else if (typeof f.filename === 'string') {
          this.categories.add('admin');
          this.effects.add('server');
        }
        if (f.relation !== undefined) {
          if (from) this.writeRangeVar(f.relation);
          else if (isRecord(f.relation)) this.readRangeVar(f.relation);
        }
        return ['relation'];
      }
      case 'DropStmt':
        this.categories.add('ddl');
        this.effects.add('schema');
        this.dropObjects(f);
        return ['objects'];
      case 'CreateTableAsStmt':
        this.categories.add('ddl');
        this.categories.add('write');
        // CREATE TABLE AS and CREATE MATERIALIZED VIEW both fill the relation they create.
        this.effects.add('schema');
        this.effects.add('insert');
        if (isRecord(f.into)) this.writeRangeVar(f.into.rel);
        return ['into'];
      case 'RefreshMatViewStmt':
        this.categories.add('write');
        this.effects.add('update');
        this.writeRangeVar(f.relation);
        return ['relation'];
      case 'ViewStmt':
        this.categories.add('ddl');
        this.effects.add('schema');
        this.writeRangeVar(f.view);
        return ['view'];
      case 'ExplainStmt':
        return this.explain(f);
      case 'PrepareStmt':
        return this.prepare(f);
      case 'ExecuteStmt':
        this.executesPrepared ??= str(f.name) ?? '';
        return ['name'];
      case 'DeallocateStmt':
        this.categories.add('session');
        this.effects.add('session');
        return [];
      case 'DoStmt':
        // Anonymous code: what it reaches at run time (functions, loops over queries) is not all in its text.
        this.effects.add('code');
        this.effects.add('unknown');
        this.doBlock(f);
        return ['args'];
      case 'CreateFunctionStmt':
        this.categories.add('ddl');
        // Code that runs later: what its body does is folded in, so a rule sees it before the function exists.
        this.effects.add('schema');
        this.effects.add('code');
        this.functionBody(f);
        return ['options', 'funcname'];
      case 'CreateTrigStmt':
        this.categories.add('ddl');
        // The trigger runs an existing function on every write to the table: its body is not in this text.
        this.effects.add('schema');
        this.effects.add('code');
        this.effects.add('unknown');
        this.writeRangeVar(f.relation);
        if (nameList(f.funcname).length > 0) this.functions.add(nameList(f.funcname).join('.').toLowerCase());
        return ['relation', 'funcname'];
      case 'VariableSetStmt':
        this.variableSet(f);
        return [];
      case 'VariableShowStmt':
        this.categories.add('read');
        this.effects.add('session');
        return [];
      case 'DiscardStmt':
        this.categories.add('session');
        this.effects.add('session');
        if (f.target === 'DISCARD_ALL') this.roleChange(true, true);
        return [];
      case 'TransactionStmt':
      case 'ConstraintsSetStmt':
        this.categories.add('transaction');
        return [];
      case 'DeclareCursorStmt':
        return [];
      case 'FetchStmt':
      case 'ClosePortalStmt':
        this.categories.add('read');
        this.effects.add('read');
        return [];
      case 'LockStmt':
        this.categories.add('lock');
        this.effects.add('session');
        return [];
      case 'CallStmt':
        this.categories.add('call');
        this.effects.add('code');
        // `funccall` holds a FuncCall's fields without the node wrapper.
        if (isRecord(f.funccall)) {
          this.functionCall(f.funccall);
          this.visit(f.funccall.args);
        }
        return ['funccall', 'funcexpr'];
      case 'ListenStmt':
      case 'UnlistenStmt':
      case 'NotifyStmt':
        this.categories.add('utility');
        this.effects.add('session');
        return [];
    }
    const effect = STATEMENT_EFFECTS[name];
    if (effect) for (const e of effect) this.effects.add(e);
    if (ADMIN_STATEMENTS.has(name)) {
      this.categories.add('admin');
      if (name.startsWith('Create') || name.startsWith('Alter') || name.startsWith('Drop')) this.categories.add('ddl');
      if (!effect) this.effects.add('schema');
      return [];
    }
    if (DDL_PREFIXES.some((p) => name.startsWith(p))) {
      this.categories.add('ddl');
      this.effects.add('schema');
      // The relation a DDL statement changes (ALTER TABLE, CREATE INDEX, CREATE RULE, RENAME …) is written.
      if (f.relation !== undefined) {
        this.writeRangeVar(f.relation);
        return ['relation'];
      }
      return [];
    }
    this.categories.add('utility');
    // A statement kind this walk does not know: fail closed.
    if (!effect) this.effects.add('unknown');
    return [];
  }

  /** DELETE, UPDATE, INSERT (ON CONFLICT DO UPDATE also updates) and each action of a MERGE. */
  private writeEffects(name: string, f: AstFields): void {
    if (name === 'DeleteStmt') this.effects.add('delete');
    if (name === 'UpdateStmt') this.effects.add('update');
    if (name === 'InsertStmt') {
      this.effects.add('insert');
      const onConflict = f.onConflictClause;
      if (isRecord(onConflict) && onConflict.action === 'ONCONFLICT_UPDATE') this.effects.add('update');
    }
    if (name === 'MergeStmt') {
      this.effects.add('read');
      for (const c of asArray(f.mergeWhenClauses)) {
        const n = nodeOf(c);
        const command = n?.[0] === 'MergeWhenClause' ? n[1].commandType : undefined;
        if (command === 'CMD_DELETE') this.effects.add('delete');
        else if (command === 'CMD_UPDATE') this.effects.add('update');
        else if (command === 'CMD_INSERT') this.effects.add('insert');
      }
    }
  }

  private dropObjects(f: AstFields): void {
    const type = str(f.removeType) ?? '';
    // Dropping a table (or a schema) deletes its rows as surely as a DELETE does.
    if (DROP_RELATION_TYPES.has(type) || type === 'OBJECT_SCHEMA') this.effects.add('delete');
    if (['OBJECT_FUNCTION', 'OBJECT_PROCEDURE', 'OBJECT_ROUTINE', 'OBJECT_TRIGGER', 'OBJECT_RULE'].includes(type)) this.effects.add('code');
    for (const obj of asArray(f.objects)) {
      if (type === 'OBJECT_SCHEMA') {
        const schema = nameList([obj])[0];
        if (schema !== undefined) this.addTable(this.written, schema, '*');
        continue;
      }
      if (!DROP_RELATION_TYPES.has(type)) {
        this.visit(obj);
        continue;
      }
      const n = nodeOf(obj);
      const parts = n?.[0] === 'List' ? nameList(n[1].items) : nameList([obj]);
      if (parts.length === 0) continue;
      const rel = parts[parts.length - 1];
      const schema = parts.length >= 2 ? parts[parts.length - 2] : undefined;
      this.addTable(this.written, schema, rel);
    }
  }

  private explain(f: AstFields): string[] {
    const analyze = asArray(f.options).some((o) => {
      const n = nodeOf(o);
      if (n?.[0] !== 'DefElem' || str(n[1].defname)?.toLowerCase() !== 'analyze') return false;
      return !isFalseOption(n[1].arg);
    });
    if (analyze) {
      // EXPLAIN ANALYZE runs the statement: it is classified as what runs.
      this.explainAnalyze = true;
      this.visit(f.query);
      return ['query'];
    }
    // Plain EXPLAIN only plans: a read, whose relations are still named so table rules see them.
    this.categories.add('read');
    this.effects.add('read');
    const inner = new Collector();
    inner.visit(f.query);
    for (const t of [...inner.read.values(), ...inner.written.values()]) this.addTable(this.read, t.schema, t.name);
    this.executesPrepared ??= inner.executesPrepared;
    return ['query'];
  }

  private prepare(f: AstFields): string[] {
    const name = str(f.name) ?? '';
    const inner = new Collector();
    const innerNode = nodeOf(f.query);
    if (innerNode) inner.addKind(innerNode[0]);
    inner.visit(f.query);
    const innerInfo = inner.finish(innerNode?.[0] ?? 'Unknown', '');
    this.prepared = { name, inner: innerInfo };
    this.absorb(innerInfo);
    return ['query'];
  }

  private variableSet(f: AstFields): void {
    const kind = str(f.kind);
    const name = (str(f.name) ?? '').toLowerCase();
    if (kind === 'VAR_RESET_ALL') {
      this.effects.add('session');
      this.roleChange(true, true);
      return;
    }
    if (name === 'role') this.roleChange(true, false);
    else if (name === 'session_authorization') this.roleChange(false, true);
    else if (name === 'transaction' || name === 'session characteristics' || name === 'transaction snapshot') {
      this.categories.add('transaction');
    } else {
      this.categories.add('session');
      this.effects.add('session');
    }
  }

  private doBlock(f: AstFields): void {
    let language = 'plpgsql';
    let body: string | undefined;
    for (const a of asArray(f.args)) {
      const n = nodeOf(a);
      if (n?.[0] !== 'DefElem') continue;
      const defname = str(n[1].defname);
      const value = nameList([n[1].arg])[0];
      if (defname === 'language' && value !== undefined) language = value.toLowerCase();
      if (defname === 'as') body = value;
    }
    this.categories.add('utility');
    if (language !== 'plpgsql' || body === undefined) {
      this.categories.add('dynamic');
      return;
    }
    this.plpgsql(parsePlPgSql(`DO ${dollarQuote(body)}`));
  }

  private functionBody(f: AstFields): void {
    let language: string | undefined;
    let body: string[] = [];
    for (const o of asArray(f.options)) {
      const n = nodeOf(o);
      if (n?.[0] !== 'DefElem') continue;
      const defname = str(n[1].defname);
      if (defname === 'language') language = nameList([n[1].arg])[0]?.toLowerCase();
      if (defname === 'as') {
        const arg = nodeOf(n[1].arg);
        body = arg?.[0] === 'List' ? nameList(arg[1].items) : nameList([n[1].arg]);
      }
    }
    if (f.sql_body !== undefined) {
      // BEGIN ATOMIC … END / RETURN expr: already parsed.
      this.visit(f.sql_body);
      return;
    }
    if (language === 'sql' && body.length === 1) {
      this.visitText(body[0]);
      return;
    }
    if (language === 'plpgsql' && this.sourceText !== undefined) {
      this.plpgsql(parsePlPgSql(this.sourceText));
      return;
    }
    // Another language (or a body we could not isolate): whatever it does is invisible here.
    this.categories.add('dynamic');
    if (language === 'c' || language === 'internal') this.categories.add('admin');
  }

  /** Walks PL/pgSQL's JSON tree: each embedded SQL expression is parsed and classified; EXECUTE is dynamic. */
  private plpgsql(tree: unknown, depth = 0): void {
    if (depth > MAX_DEPTH) throw new Error('PL/pgSQL body is nested too deeply to classify');
    if (Array.isArray(tree)) {
      for (const v of tree) this.plpgsql(v, depth + 1);
      return;
    }
    if (!isRecord(tree)) return;
    for (const [key, value] of Object.entries(tree)) {
      if (key === 'PLpgSQL_stmt_dynexecute' || key === 'PLpgSQL_stmt_dynfors') this.categories.add('dynamic');
      if ((key === 'PLpgSQL_stmt_open' || key === 'PLpgSQL_stmt_return_query') && isRecord(value) && value.dynquery) {
        this.categories.add('dynamic');
      }
      if (key === 'PLpgSQL_expr' && isRecord(value)) {
        this.plpgsqlExpression(str(value.query) ?? '', typeof value.parseMode === 'number' ? value.parseMode : 0);
        continue;
      }
      this.plpgsql(value, depth + 1);
    }
  }

  private plpgsqlExpression(query: string, parseMode: number): void {
    let text: string;
    if (parseMode === 0) text = query;
    else if (parseMode >= 3) text = `SELECT ${assignmentValue(query)}`;
    else text = `SELECT ${query}`;
    this.visitText(text);
  }

  finish(kind: string, text: string): StatementInfo {
    if (this.categories.size === 0) this.categories.add('utility');
    const info: StatementInfo = {
      kind,
      kinds: [kind, ...this.kinds.filter((k) => k !== kind)],
      categories: SQL_CATEGORIES.filter((c) => this.categories.has(c)),
      effects: SQL_EFFECTS.filter((e) => this.effects.has(e) || (e === 'unknown' && this.categories.has('dynamic'))),
      tablesRead: [...this.read.values()],
      tablesWritten: [...this.written.values()],
      functions: [...this.functions],
      whereAbsent: this.whereAbsent,
      dataModifyingCte: this.dataModifyingCte,
      explainAnalyze: this.explainAnalyze,
      setRole: this.setRole,
      setSessionAuthorization: this.setSessionAuthorization,
      text,
    };
    if (this.prepared) info.prepared = this.prepared;
    if (this.executesPrepared !== undefined) info.executesPrepared = this.executesPrepared;
    return info;
  }
}

function cteNames(f: AstFields): Set<string> | undefined {
  const withClause = f.withClause;
  if (!isRecord(withClause)) return undefined;
  const names = new Set<string>();
  for (const c of asArray(withClause.ctes)) {
    const n = nodeOf(c);
    if (n?.[0] === 'CommonTableExpr' && typeof n[1].ctename === 'string') names.add(n[1].ctename);
  }
  return names;
}

/** A WHERE restricts rows only if it looks at a column (or is WHERE CURRENT OF); `WHERE true`, `1=1` do not. */
function restrictsRows(where: unknown): boolean {
  if (where === undefined) return false;
  let found = false;
  const seek = (v: unknown, depth: number): void => {
    if (found || depth > MAX_DEPTH) return;
    if (Array.isArray(v)) {
      for (const x of v) seek(x, depth + 1);
      return;
    }
    if (!isRecord(v)) return;
    const n = nodeOf(v);
    if (n && (n[0] === 'ColumnRef' || n[0] === 'CurrentOfExpr')) {
      found = true;
      return;
    }
    // A sub-select's own columns do not restrict the outer rows (`WHERE EXISTS (SELECT 1 FROM x)`).
    if (n && n[0] === 'SubLink') {
      seek(n[1].testexpr, depth + 1);
      return;
    }
    for (const x of Object.values(v)) seek(x, depth + 1);
  };
  seek(where, 0);
  return found;
}

function mergeIsUnbounded(f: AstFields): boolean {
  const joinRestricts = restrictsRows(f.joinCondition);
  return asArray(f.mergeWhenClauses).some((c) => {
    const n = nodeOf(c);
    if (n?.[0] !== 'MergeWhenClause') return false;
    const w = n[1];
    const modifies = w.commandType === 'CMD_DELETE' || w.commandType === 'CMD_UPDATE';
    if (!modifies || restrictsRows(w.condition)) return false;
    return !joinRestricts || w.matchKind === 'MERGE_WHEN_NOT_MATCHED_BY_SOURCE';
  });
}

function isFalseOption(arg: unknown): boolean {
  if (arg === undefined) return false;
  const n = nodeOf(arg);
  if (!n) return false;
  const [name, f] = n;
  if (name === 'String') return ['false', 'off', '0', 'no'].includes((str(f.sval) ?? '').toLowerCase());
  if (name === 'Integer') return f.ival === undefined || f.ival === 0;
  if (name === 'Boolean') return f.boolval !== true;
  return false;
}

/** A dollar quote whose tag does not occur in the body. */
function dollarQuote(body: string): string {
  let tag = 'hoop';
  for (let i = 0; body.includes(`$${tag}$`); i++) tag = `hoop${i}`;
  return `$${tag}$${body}$${tag}$`;
}

/** The value side of a PL/pgSQL assignment `target := expr` (or `=`), split with the real lexer. */
function assignmentValue(query: string): string {
  const tokens = scanTokens(query);
  const op = tokens.find((t) => t.text === ':=') ?? tokens.find((t) => t.text === '=');
  if (op) return query.slice(byteToCharIndex(query, op.end));
  throw new Error('PL/pgSQL assignment without := could not be classified');
}

function byteToCharIndex(text: string, byteOffset: number): number {
  const bytes = new TextEncoder().encode(text).subarray(0, byteOffset);
  return new TextDecoder().decode(bytes).length;
}

const EMPTY_STATEMENT = 'empty statement';

/**
 * Text of only comments, whitespace or semicolons: the server answers EmptyQueryResponse and runs nothing, so the
 * gate forwards it and the dry run says so too.
 */
export function isEmptyQuery(classification: SqlClassification): boolean {
  return !classification.ok && classification.error === EMPTY_STATEMENT;
}

/**
 * Classifies every statement of `sql`. Never throws: anything the parser rejects, an empty text, a NUL byte (the
 * parser would silently stop reading there) or an error while walking yields `{ ok: false }` — the caller denies.
 */
export function classifySql(sql: string): SqlClassification {
  try {
    if (sql.includes('\u0000')) return { ok: false, error: 'statement text contains a NUL byte' };
    const raws: RawStatement[] = parseStatements(sql);
    if (raws.length === 0) return { ok: false, error: EMPTY_STATEMENT };
    const texts = statementTexts(sql, raws);
    const statements = raws.map((raw, i) => {
      const text = texts[i]!;
      const node = nodeOf(raw.stmt);
      if (!node) throw new Error('parser returned a statement without a node');
      const collector = new Collector();
      collector.addKind(node[0]);
      collector.visitStatement(raw.stmt, text);
      return collector.finish(node[0], text);
    });
    return { ok: true, statements };
  } catch (err) {
    const at = syntaxErrorPosition(sql, err);
    return { ok: false, error: err instanceof Error ? err.message : String(err), ...(at !== undefined ? { syntaxErrorAt: at } : {}) };
  }
}

/**
 * The parser's error position as PostgreSQL's ErrorResponse gives it: 1-based, in characters. libpg_query reports
 * a 0-based byte offset (`sqlDetails.cursorPosition`) only for errors of the grammar (scan.l, gram.y).
 */
function syntaxErrorPosition(sql: string, err: unknown): number | undefined {
  const details = (err as { sqlDetails?: { cursorPosition?: unknown; message?: unknown } } | null)?.sqlDetails;
  const offset = details?.cursorPosition;
  if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0) return undefined;
  if (typeof details?.message !== 'string' || !details.message.startsWith('syntax error')) return undefined;
  const bytes = new TextEncoder().encode(sql);
  return [...new TextDecoder().decode(bytes.subarray(0, Math.min(offset, bytes.length)))].length + 1;
}

/** Merges two classifications (EXECUTE of a prepared statement: its own parameters plus what it runs). */
export function mergeStatementInfo(outer: StatementInfo, inner: StatementInfo): StatementInfo {
  const c = new Collector();
  c.absorb(outer);
  c.absorb(inner);
  const merged = c.finish(outer.kind, outer.text);
  merged.executesPrepared = outer.executesPrepared;
  return merged;
}
