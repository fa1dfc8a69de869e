import {
  DETECTOR_NAMES,
  columnMatches,
  maskJsonText,
  maskText,
  maskWhole,
  maskedOutputColumns,
  type MaskKey,
  type MaskPlan,
} from '../../../policy/index.js';
import { PgWireError, SqlState } from './errors.js';
import type { ScannedFrame } from './frame-scanner.js';
import { BackendCode } from './message-codes.js';
import {
  createCopyData,
  createDataRow,
  createResponseFields,
  parseCopyResponse,
  parseDataRow,
  parseResponseFields,
  parseRowDescription,
  type RowField,
} from './messages.js';
import { copyOutputColumns, maskCopyRow, type CopyColumns } from '../../../policy/copy-format.js';

/** Type OIDs whose binary form carries no text: safe to pass in binary when no column rule names them. */
const SAFE_BINARY_TYPES = new Set([
  16, // bool
  20, // int8
  21, // int2
  23, // int4
  26, // oid
  700, // float4
  701, // float8
  1082, // date
  1083, // time
  1114, // timestamp
  1184, // timestamptz
  1186, // interval
  1266, // timetz
]);
const JSON_TYPES = new Set([114 /* json */, 3802 /* jsonb */]);

/** How one result column is rewritten. */
type ColumnMode =
  /** A column rule names it (or it derives from one): the whole value is replaced. */
  | 'whole'
  /** json/jsonb named by a column rule: replaced by a JSON string (or JSON null) so it still parses. */
  | 'json-whole'
  /** json/jsonb: keys named by column rules masked, every string through the detectors. */
  | 'json'
  /**
   * json/jsonb computed from a masked column (`json_agg(c)`, `row_to_json(c)`): as 'json', but when no key names
   * a masked column the masked value went in under another name (`json_build_object('x', email)`): whole.
   */
  | 'json-derived'
  /** Any other text-format value: the content detectors. */
  | 'text'
  /** Binary, of a type without text (integers, floats, bool, times): passes. */
  | 'pass'
  /** Binary and text-like or named by a rule: cannot be masked safely. */
  | 'refuse';

/** Error and notice fields that can carry data (message, detail, hint, context, internal query …). */
const SAFE_RESPONSE_FIELDS = new Set(['S', 'V', 'C', 'P', 'p', 'F', 'L', 'R'].map((c) => c.charCodeAt(0)));

type Pending =
  | { kind: 'round'; sql: string | null; statementIndex: number; layout?: ColumnMode[] }
  | { kind: 'describe'; target: 'statement' | 'portal'; name: string }
  | { kind: 'execute'; portal: string; layout?: ColumnMode[] }
  | { kind: 'sync' };

/**
 * Masks what the backend sends back when a mask plan applies to the session's identity: DataRow values by the
 * columns RowDescription names (plus what `maskedOutputColumns` derives from the SQL for aliases and expressions)
 * and by the content detectors; json/jsonb values key by key; COPY TO STDOUT rows in text or CSV by the
 * detectors; error and notice texts by the detectors. It keeps its own queue of what the client asked for, because
 * the backend answers strictly in order: a simple Query (a round, ended by ReadyForQuery), Describe (ended by
 * RowDescription or NoData), Execute (ended by CommandComplete, EmptyQueryResponse, PortalSuspended or an error)
 * and Sync. Values it cannot mask safely (binary text-like columns, binary COPY) end the session with an error
 * instead of passing.
 */
export class ResultMasker {
  readonly #plan: MaskPlan;
  readonly #key: MaskKey;
  readonly #queue: Pending[] = [];
  /** Prepared statement name → SQL. */
  readonly #statementSql = new Map<string, string>();
  /** Prepared statement name → its RowDescription (null: NoData), once a Describe of it was answered. */
  readonly #statementRows = new Map<string, RowField[] | null>();
  /** Portal name → statement and result formats from Bind. */
  readonly #portals = new Map<string, { statement: string; formats: number[] }>();
  /** Portal name → its RowDescription, once a Describe of it was answered (formats already resolved). */
  readonly #portalRows = new Map<string, RowField[] | null>();
  /** Inside COPY OUT: the text rows are masked by the detectors. */
  #copyOut = false;
  /** Inside a COPY OUT under column rules: which fields to mask, and the row format (the header row passes). */
  #copyColumns?: CopyColumns & { headerPending: boolean };

  constructor(plan: MaskPlan, key: MaskKey) {
    this.#plan = plan;
    this.#key = key;
  }

  // ---------------------------------------------------------------- what the client sent (in forwarding order)

  query(sql: string | null): void {
    this.#queue.push({ kind: 'round', sql, statementIndex: 0 });
  }

  parse(name: string, sql: string): void {
    this.#statementSql.set(name, sql);
    this.#statementRows.delete(name);
  }

  bind(portal: string, statement: string, formats: number[]): void {
    this.#portals.set(portal, { statement, formats });
    this.#portalRows.delete(portal);
  }

  describe(target: 'statement' | 'portal', name: string): void {
    this.#queue.push({ kind: 'describe', target, name });
  }

  execute(portal: string): void {
    this.#queue.push({ kind: 'execute', portal });
  }

  sync(): void {
    this.#queue.push({ kind: 'sync' });
  }

  close(target: 'statement' | 'portal', name: string): void {
    if (target === 'statement') {
      this.#statementSql.delete(name);
      this.#statementRows.delete(name);
    } else {
      this.#portals.delete(name);
      this.#portalRows.delete(name);
    }
  }

  /**
   * Whether binding `statement` with these result formats can be masked: binary results only where the
   * statement's columns are known (a Describe of it was answered) and each binary one is of a type without text.
   */
  bindAllowed(statement: string, formats: number[]): boolean {
    if (!formats.includes(1)) return true;
    const rows = this.#statementRows.get(statement);
    if (rows === undefined) return false;
    if (rows === null) return true;
    return this.#layout(rows, formats, this.#statementSql.get(statement) ?? null, 0).every((m) => m !== 'refuse');
  }

  // ---------------------------------------------------------------- what the backend sends

  /**
   * The bytes to send instead of `frame`, or undefined to send it as it is. Throws a FATAL PgWireError when the
   * frame carries values that cannot be masked.
   */
  backendFrame(frame: ScannedFrame): Buffer | undefined {
    switch (frame.code) {
      case BackendCode.DataRow:
        return this.#dataRow(frame);
      case BackendCode.CopyData:
        return this.#copyOut ? this.#copyData(frame) : undefined;
      case BackendCode.RowDescription:
        this.#rowDescription(parseRowDescription(frame.body));
        return undefined;
      case BackendCode.NoData: {
        const head = this.#queue[0];
        if (head?.kind === 'describe') {
          this.#queue.shift();
          this.#storeRows(head, null);
        }
        return undefined;
      }
      case BackendCode.CopyOutResponse:
      case BackendCode.CopyBothResponse: {
        const { format } = parseCopyResponse(frame.body);
        if (format !== 0) throw unmaskable('binary COPY output cannot be masked');
        this.#copyColumns = undefined;
        if (this.#plan.columns.length > 0) {
          const { sql, statementIndex } = this.#currentStatement();
          const columns = sql === null ? 'unknown' : copyOutputColumns(sql, this.#plan, statementIndex);
          if (columns === 'unknown') {
            throw unmaskable('this COPY output cannot be masked by column (copy a query, or name the columns: COPY t (a, b) TO STDOUT)');
          }
          if (columns.masked.some(Boolean)) this.#copyColumns = { ...columns, headerPending: columns.format.header };
        }
        this.#copyOut = true;
        return undefined;
      }
      case BackendCode.CopyDone:
        this.#copyOut = false;
        this.#copyColumns = undefined;
        return undefined;
      case BackendCode.CommandComplete:
      case BackendCode.EmptyQueryResponse:
      case BackendCode.PortalSuspended: {
        this.#copyOut = false;
        const head = this.#queue[0];
        if (head?.kind === 'round') {
          head.statementIndex++;
          head.layout = undefined;
        } else if (head?.kind === 'execute') this.#queue.shift();
        return undefined;
      }
      case BackendCode.ErrorResponse:
        this.#copyOut = false;
        this.#error();
        return this.maskResponse(frame);
      case BackendCode.NoticeResponse:
        return this.maskResponse(frame);
      case BackendCode.ReadyForQuery:
        this.#copyOut = false;
        while (this.#queue.length > 0) {
          const head = this.#queue.shift()!;
          if (head.kind === 'round' || head.kind === 'sync') break;
        }
        return undefined;
      default:
        return undefined;
    }
  }

  /** An ErrorResponse or NoticeResponse with its texts run through the detectors; undefined when nothing matched. */
  maskResponse(frame: ScannedFrame): Buffer | undefined {
    const fields = parseResponseFields(frame.body);
    let changed = false;
    const masked = fields.map(([code, value]): [number, string] => {
      if (SAFE_RESPONSE_FIELDS.has(code)) return [code, value];
      const text = this.maskRecorded(value);
      if (text !== value) changed = true;
      return [code, text];
    });
    return changed ? createResponseFields(frame.code, masked) : undefined;
  }

  /** Text for a recording or a log: every detector, and never a SQL NULL (the null strategy redacts). */
  maskRecorded(value: string): string {
    const strategy = this.#plan.strategy === 'null' ? 'redact' : this.#plan.strategy;
    return maskText(value, DETECTOR_NAMES, strategy, this.#key).text ?? '';
  }

  #error(): void {
    const head = this.#queue[0];
    if (head === undefined || head.kind === 'round' || head.kind === 'sync') return;
    // The extended protocol skips everything up to the next Sync after an error.
    while (this.#queue.length > 0 && this.#queue[0].kind !== 'sync') this.#queue.shift();
  }

  #rowDescription(fields: RowField[]): void {
    const head = this.#queue[0];
    if (head?.kind === 'round') {
      head.layout = this.#layout(fields, undefined, head.sql, head.statementIndex);
      if (head.layout.includes('refuse')) throw unmaskable('a binary result column cannot be masked');
    } else if (head?.kind === 'describe') {
      this.#queue.shift();
      this.#storeRows(head, fields);
    }
  }

  #storeRows(describe: Extract<Pending, { kind: 'describe' }>, fields: RowField[] | null): void {
    if (describe.target === 'statement') this.#statementRows.set(describe.name, fields);
    else this.#portalRows.set(describe.name, fields);
  }

  /** The SQL (and which of its statements) the backend is answering now. */
  #currentStatement(): { sql: string | null; statementIndex: number } {
    const head = this.#queue[0];
    if (head?.kind === 'round') return { sql: head.sql, statementIndex: head.statementIndex };
    if (head?.kind === 'execute') {
      const bound = this.#portals.get(head.portal);
      return { sql: bound ? (this.#statementSql.get(bound.statement) ?? null) : null, statementIndex: 0 };
    }
    return { sql: null, statementIndex: 0 };
  }

  /** The column modes for the rows of an Execute of `portal`. */
  #executeLayout(portal: string, width: number): ColumnMode[] {
    const bound = this.#portals.get(portal);
    const sql = bound ? (this.#statementSql.get(bound.statement) ?? null) : null;
    const rows = this.#portalRows.get(portal) ?? (bound ? this.#statementRows.get(bound.statement) : undefined);
    if (rows) return this.#layout(rows, rows === this.#portalRows.get(portal) ? undefined : bound?.formats, sql, 0);
    // Rows nobody described: names unknown, so only what the SQL shows decides; otherwise every column is masked.
    const formats = bound?.formats ?? [];
    const derived = sql !== null && this.#plan.columns.length > 0 ? maskedOutputColumns(sql, this.#plan) : 'unknown';
    return Array.from({ length: width }, (_, i): ColumnMode => {
      const binary = formatAt(formats, i) === 1;
      if (binary) return 'refuse';
      if (this.#plan.columns.length === 0) return 'text';
      if (derived === 'unknown' || derived.length !== width) return 'whole';
      return derived[i] ? 'whole' : 'text';
    });
  }

  #layout(fields: RowField[], formats: number[] | undefined, sql: string | null, statementIndex: number): ColumnMode[] {
    const derived =
      sql !== null && this.#plan.columns.length > 0 ? maskedOutputColumns(sql, this.#plan, statementIndex) : 'unknown';
    const flags = Array.isArray(derived) && derived.length === fields.length ? derived : undefined;
    return fields.map((f, i): ColumnMode => {
      const format = formats ? formatAt(formats, i) : f.format;
      const named = columnMatches(this.#plan, { column: f.name });
      const derived = flags?.[i] ?? false;
      const whole = named || derived;
      if (format === 1) return !whole && SAFE_BINARY_TYPES.has(f.typeOid) ? 'pass' : 'refuse';
      if (JSON_TYPES.has(f.typeOid)) return named ? 'json-whole' : derived ? 'json-derived' : 'json';
      return whole ? 'whole' : 'text';
    });
  }

  #dataRow(frame: ScannedFrame): Buffer | undefined {
    const values = parseDataRow(frame.body);
    const head = this.#queue[0];
    let layout: ColumnMode[] | undefined;
    if (head?.kind === 'round') layout = head.layout;
    else if (head?.kind === 'execute') layout = head.layout ??= this.#executeLayout(head.portal, values.length);
    // A row the queue cannot place (it should not happen) is masked as if every column were named by a rule.
    layout ??= values.map(() => (this.#plan.columns.length > 0 ? 'whole' : 'text'));
    let changed = false;
    const out: (Buffer | string | null)[] = values.map((v, i) => {
      if (v === null) return null;
      const mode = layout[i] ?? 'whole';
      if (mode === 'pass') return v;
      if (mode === 'refuse') throw unmaskable('a binary result column cannot be masked');
      const masked = this.#maskValue(v.toString('utf8'), mode);
      if (masked.changed) changed = true;
      return masked.changed ? masked.text : v;
    });
    return changed ? createDataRow(out) : undefined;
  }

  #maskValue(value: string, mode: Exclude<ColumnMode, 'pass' | 'refuse'>): { changed: boolean; text: string | null } {
    const { strategy } = this.#plan;
    switch (mode) {
      case 'whole':
        return { changed: true, text: maskWhole(value, strategy, this.#key) };
      case 'json-whole': {
        const m = maskWhole(value, strategy, this.#key);
        return { changed: true, text: m === null ? null : JSON.stringify(m) };
      }
      case 'json': {
        const r = maskJsonText(value, this.#plan, this.#key);
        return { changed: r.text !== value, text: r.text };
      }
      case 'json-derived': {
        const r = maskJsonText(value, this.#plan, this.#key);
        if ((r.hits.column ?? 0) > 0) return { changed: r.text !== value, text: r.text };
        return this.#maskValue(value, 'json-whole');
      }
      case 'text': {
        if (this.#plan.detectors.length === 0) return { changed: false, text: value };
        const r = maskText(value, this.#plan.detectors, strategy, this.#key);
        return { changed: r.text !== value, text: r.text };
      }
    }
  }

  /**
   * One COPY OUT row. Text and CSV rows are masked line-wise: the replacements hold no tab, comma, quote,
   * backslash or newline, so the row's structure stays intact whatever the delimiter. A span cannot become a
   * SQL NULL inside a row, so the null strategy redacts here.
   */
  #copyData(frame: ScannedFrame): Buffer | undefined {
    const original = frame.body.toString('utf8');
    let line = original;
    const columns = this.#copyColumns;
    if (columns?.headerPending) columns.headerPending = false;
    else if (columns) {
      const masked = maskCopyRow(line, columns, (value) => maskWhole(value, this.#plan.strategy, this.#key));
      if (masked === undefined) throw unmaskable('a COPY row did not have the fields its statement names, so it could not be masked');
      line = masked;
    }
    if (this.#plan.detectors.length > 0) {
      const strategy = this.#plan.strategy === 'null' ? 'redact' : this.#plan.strategy;
      line = maskText(line, this.#plan.detectors, strategy, this.#key).text ?? line;
    }
    return line === original ? undefined : createCopyData(line);
  }
}

function formatAt(formats: number[], i: number): number {
  return formats.length === 0 ? 0 : formats.length === 1 ? formats[0] : (formats[i] ?? 0);
}

function unmaskable(what: string): PgWireError {
  return new PgWireError('FATAL', SqlState.InsufficientPrivilege, `hoopctl: ${what}; the session was ended so that no unmasked value is sent`);
}
