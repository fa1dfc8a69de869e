import {
  DETECTOR_NAMES,
  columnMatches,
  maskDerivedJson,
  maskJsonText,
  maskText,
  maskTextBytes,
  maskWhole,
  outputColumnMasks,
  type JsonShape,
  type MaskKey,
  type MaskPlan,
} from '../../../policy/index.js';
import { BinaryValueError, TypeOid, binaryKind, binaryValueFromText, binaryValueText, holdsText } from './binary-values.js';
import { PgWireError, SqlState, protocolViolation } from './errors.js';
import type { ScannedFrame } from './frame-scanner.js';
import { BackendCode } from '../../../lib/pg-wire/message-codes.js';
import {
  createCopyData,
  createDataRow,
  createResponseFields,
  parseCopyResponse,
  parseResponseFields,
  parseRowDescription,
  type RowField,
} from './messages.js';
import { copyOutputColumns, maskCopyRow, type CopyColumns } from '../../../policy/copy-format.js';

const JSON_TYPES = new Set<number>([TypeOid.json, TypeOid.jsonb]);

/** What a client can set so that a driver asks for text results, which can always be masked. */
export const TEXT_RESULTS_HINT =
  'ask for text results (pgjdbc: prepareThreshold=0 or binaryTransfer=false; psycopg: binary=False; node-postgres: binary: false)';

/** How one result column is rewritten. */
type ColumnMode =
  /** A column rule names it (or it derives from one): the whole value is replaced. */
  | 'whole'
  /** json/jsonb named by a column rule: replaced by a JSON string (or JSON null) so it still parses. */
  | 'json-whole'
  /** json/jsonb: keys named by column rules masked, every string through the detectors. */
  | 'json'
  /**
   * json/jsonb computed from a masked column (`json_agg(c)`, `jsonb_build_object('contact', email)`): the values
   * that came from masked columns are masked, keys and the rest kept (see `maskDerivedJson`).
   */
  | 'json-derived'
  /** Any other text value: the content detectors. */
  | 'text'
  /** Binary, of a type nothing is masked in (no rule names it; no detector can match it): passes as it is. */
  | 'pass'
  /**
   * Binary number or uuid under detectors: read as the text the server would have sent, and passed when no
   * detector matches it. A match cannot be written back in the type (a masked string is no int8), so the value
   * becomes NULL under the null strategy and ends the session otherwise.
   */
  | 'checked'
  /** Binary, named by a column rule, of a type that cannot hold masked text, under the null strategy: NULL. */
  | 'null'
  /** Binary and cannot be masked (named by a rule but cannot hold masked text; unreadable under detectors). */
  | 'refuse';

/** One result column: how it is masked, and whether its values are in binary (read and written in their type). */
interface ColumnPlan {
  name: string;
  typeOid: number;
  binary: boolean;
  mode: ColumnMode;
  /** json-derived: which members of a `json_build_object` came from masked columns (from the SQL). */
  shape?: JsonShape;
}

/** Error and notice fields that can carry data (message, detail, hint, context, internal query …). */
const SAFE_RESPONSE_FIELDS = new Set(['S', 'V', 'C', 'P', 'p', 'F', 'L', 'R'].map((c) => c.charCodeAt(0)));

type Pending =
  | { kind: 'round'; sql: string | null; statementIndex: number; layout?: ColumnPlan[] }
  /** `hidden`: sent by the masker itself to learn a portal's types; its answer is not forwarded. */
  | { kind: 'describe'; target: 'statement' | 'portal'; name: string; hidden?: boolean }
  | { kind: 'execute'; portal: string; layout?: ColumnPlan[] }
  | { kind: 'sync' };

/**
 * Masks what the backend sends back when a mask plan applies to the session's identity: DataRow values by the
 * columns RowDescription names (plus what `maskedOutputColumns` derives from the SQL for aliases and expressions)
 * and by the content detectors; json/jsonb values key by key; COPY TO STDOUT rows in text or CSV by the
 * detectors; error and notice texts by the detectors. It keeps its own queue of what the client asked for, because
 * the backend answers strictly in order: a simple Query (a round, ended by ReadyForQuery), Describe (ended by
 * RowDescription or NoData), Execute (ended by CommandComplete, EmptyQueryResponse, PortalSuspended or an error)
 * and Sync. Binary results are read and written in their type's binary form (binary-values.ts); values it cannot
 * mask safely (a column rule on a number in binary, binary COPY) are refused at Bind when the columns are known
 * then, and otherwise end the session with an error instead of passing.
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
  /** The layout whose row actions were worked out last, and those actions (a result's rows share one layout). */
  #actionsLayout: ColumnPlan[] | undefined;
  #actions: RowAction[] = [];

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

  /**
   * The statement at the head entered copy-in mode and the server ignores the next `n` Syncs (see ResultTracker
   * copyIn). False when something else waits between them (a Describe sent during the COPY): not pairable.
   */
  dropSyncs(n: number): boolean {
    if (n === 0) return true;
    if (this.#queue.length < 1 + n || this.#queue.slice(1, 1 + n).some((p) => p.kind !== 'sync')) return false;
    this.#queue.splice(1, n);
    return true;
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
   * Why binding `statement` with these result formats cannot be masked (naming the column), or undefined when it
   * can — or when the columns are not known yet: the masker then learns them from a Describe of the portal before
   * its rows arrive (the client's own, or one `describeBeforeExecute` asks for).
   */
  bindRefusal(statement: string, formats: number[]): string | undefined {
    if (!formats.includes(1)) return undefined;
    const rows = this.#statementRows.get(statement);
    if (!rows) return undefined;
    const refused = this.#layout(rows, formats, this.#statementSql.get(statement) ?? null, 0).find((c) => c.mode === 'refuse');
    return refused ? binaryRefusal(refused) : undefined;
  }

  /**
   * Whether an Execute of `portal` would bring binary rows whose types the masker does not know and no Describe
   * will tell (pgjdbc binds a statement it has seen described under another name, with no Describe of its own).
   * The proxy then sends a Describe of the portal first, registered by `describeHidden`.
   */
  describeBeforeExecute(portal: string): boolean {
    const bound = this.#portals.get(portal);
    if (!bound || !bound.formats.includes(1)) return false;
    if (this.#portalRows.has(portal) || this.#statementRows.has(bound.statement)) return false;
    return !this.#queue.some((p) => p.kind === 'describe' && p.target === 'portal' && p.name === portal);
  }

  /** A Describe of `portal` the proxy sent on its own: its answer is learnt from and not forwarded. */
  describeHidden(portal: string): void {
    this.#queue.push({ kind: 'describe', target: 'portal', name: portal, hidden: true });
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
        return this.#rowDescription(parseRowDescription(frame.body));
      case BackendCode.NoData: {
        const head = this.#queue[0];
        if (head?.kind === 'describe') {
          this.#queue.shift();
          this.#storeRows(head, null);
          if (head.hidden) return HIDDEN;
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

  #rowDescription(fields: RowField[]): Buffer | undefined {
    const head = this.#queue[0];
    if (head?.kind === 'round') {
      head.layout = this.#layout(fields, undefined, head.sql, head.statementIndex);
      const refused = head.layout.find((c) => c.mode === 'refuse');
      if (refused) throw unmaskable(binaryRefusal(refused));
    } else if (head?.kind === 'describe') {
      this.#queue.shift();
      this.#storeRows(head, fields);
      if (head.hidden) return HIDDEN;
    }
    return undefined;
  }

  #storeRows(describe: Extract<Pending, { kind: 'describe' }>, fields: RowField[] | null): void {
    if (describe.target === 'statement') {
      this.#statementRows.set(describe.name, fields);
      return;
    }
    this.#portalRows.set(describe.name, fields);
    // A portal's columns are its statement's (only the formats differ): pgjdbc describes a portal once, then binds
    // the statement again and again with binary formats and no Describe at all.
    const bound = this.#portals.get(describe.name);
    if (bound && !this.#statementRows.has(bound.statement)) {
      this.#statementRows.set(bound.statement, fields && fields.map((f) => ({ ...f, format: 0 })));
    }
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

  /** The column plans for the rows of an Execute of `portal`. */
  #executeLayout(portal: string, width: number): ColumnPlan[] {
    const bound = this.#portals.get(portal);
    const sql = bound ? (this.#statementSql.get(bound.statement) ?? null) : null;
    const rows = this.#portalRows.get(portal) ?? (bound ? this.#statementRows.get(bound.statement) : undefined);
    if (rows) return this.#layout(rows, rows === this.#portalRows.get(portal) ? undefined : bound?.formats, sql, 0);
    // Rows nobody described: names unknown, so only what the SQL shows decides; otherwise every column is masked.
    const formats = bound?.formats ?? [];
    const derived = sql !== null && this.#plan.columns.length > 0 ? outputColumnMasks(sql, this.#plan) : 'unknown';
    return Array.from({ length: width }, (_, i): ColumnPlan => {
      const column = { name: `column ${i + 1}`, typeOid: 0, binary: formatAt(formats, i) === 1 };
      if (column.binary) return { ...column, mode: 'refuse' };
      if (this.#plan.columns.length === 0) return { ...column, mode: 'text' };
      if (derived === 'unknown' || derived.length !== width) return { ...column, mode: 'whole' };
      return { ...column, mode: derived[i].masked ? 'whole' : 'text' };
    });
  }

  #layout(fields: RowField[], formats: number[] | undefined, sql: string | null, statementIndex: number): ColumnPlan[] {
    const derived =
      sql !== null && this.#plan.columns.length > 0 ? outputColumnMasks(sql, this.#plan, statementIndex) : 'unknown';
    const flags = Array.isArray(derived) && derived.length === fields.length ? derived : undefined;
    return fields.map((f, i): ColumnPlan => {
      const binary = (formats ? formatAt(formats, i) : f.format) === 1;
      const named = columnMatches(this.#plan, { column: f.name });
      const derived = flags?.[i]?.masked ?? false;
      const column = { name: f.name, typeOid: f.typeOid, binary, ...(flags?.[i]?.json ? { shape: flags[i].json } : {}) };
      const textMode: ColumnMode = JSON_TYPES.has(f.typeOid)
        ? named
          ? 'json-whole'
          : derived
            ? 'json-derived'
            : 'json'
        : named || derived
          ? 'whole'
          : 'text';
      return { ...column, mode: binary ? this.#binaryMode(f.typeOid, textMode) : textMode };
    });
  }

  /** How a binary column is masked, given how it would be masked in text. */
  #binaryMode(typeOid: number, textMode: ColumnMode): ColumnMode {
    const whole = textMode === 'whole' || textMode === 'json-whole' || textMode === 'json-derived';
    const kind = binaryKind(typeOid);
    if (kind === 'text' || kind === 'jsonb') return textMode;
    // bytea's text form is hex, in which the detectors find nothing: it is masked only when a rule names it.
    if (kind === 'bytes') return whole ? 'whole' : 'pass';
    if (whole) return this.#plan.strategy === 'null' ? 'null' : 'refuse';
    if (this.#plan.detectors.length === 0 || kind === 'opaque') return 'pass';
    return kind === 'unknown' ? 'refuse' : 'checked';
  }

  #dataRow(frame: ScannedFrame): Buffer | undefined {
    return this.dataRows(frame.bytes);
  }

  /**
   * DataRow frames, one or several back to back (whole frames, header included, as the frame scanner's runs give
   * them): the bytes to send instead, or undefined when no value changes. Each column's treatment is worked out
   * once per result (see #actionFor); values are read where they lie, rows nothing changes in are copied as they
   * are, and the rewritten rows of the whole run go into one buffer.
   */
  dataRows(run: Buffer): Buffer | undefined {
    const head = this.#queue[0];
    let layout: ColumnPlan[] | undefined;
    if (head?.kind === 'round') layout = head.layout;
    else if (head?.kind === 'execute' && run.length >= 7) layout = head.layout ??= this.#executeLayout(head.portal, run.readInt16BE(5));
    const actions = layout ? this.#actionsFor(layout) : undefined;
    let out: RowWriter | undefined;
    // run[copied, …) is not in `out` yet: unchanged bytes go in with one copy when something after them changes.
    let copied = 0;
    let pos = 0;
    while (pos < run.length) {
      if (run.length - pos < 7) throw protocolViolation('message too short for a DataRow');
      const rowLength = int32(run, pos + 1);
      const rowEnd = pos + 1 + rowLength;
      const width = (run[pos + 5] << 8) | run[pos + 6];
      if (rowEnd > run.length || rowEnd < pos + 7 || width >= 0x8000) throw protocolViolation('message too short for a DataRow');
      // A row the queue cannot place (it should not happen) is masked as if every column were named by a rule.
      const rowActions = actions ?? this.#unplacedActions(width);
      /** Where this row's header is in `out`, once one of its values changed (its length is set at the end). */
      let rewritten = -1;
      /** How much longer (or shorter) the rewritten row is than the original. */
      let grown = 0;
      let at = pos + 7;
      for (let i = 0; i < width; i++) {
        if (rowEnd - at < 4) throw protocolViolation('message too short for an int32');
        const length = int32(run, at);
        const valueStart = at + 4;
        const valueEnd = length === -1 ? valueStart : valueStart + length;
        if (length < -1 || valueEnd > rowEnd) throw protocolViolation(`message too short for ${length} bytes`);
        const masked = length === -1 ? undefined : this.#maskAt(run, valueStart, valueEnd, rowActions[i] ?? EXTRA_COLUMN);
        if (masked !== undefined) {
          out ??= new RowWriter(run.length + 256);
          if (rewritten === -1) rewritten = out.length + (pos - copied);
          out.copy(run, copied, at);
          grown += out.value(masked) - length;
          copied = valueEnd;
        }
        at = valueEnd;
      }
      if (rewritten !== -1) {
        if (at !== rowEnd) {
          // Bytes after the last value (none in a well-formed row) are dropped from a rewritten row.
          out!.copy(run, copied, at);
          copied = rowEnd;
          grown -= rowEnd - at;
        }
        // The values after the last change go in with the next copy (the next changed row's or the run's end).
        out!.setInt32(rewritten + 1, rowLength + grown);
      }
      pos = rowEnd;
    }
    if (!out) return undefined;
    out.copy(run, copied, run.length);
    return out.bytes();
  }

  /** The row actions for a layout, worked out once per layout. */
  #actionsFor(layout: ColumnPlan[]): RowAction[] {
    if (layout !== this.#actionsLayout) {
      this.#actions = layout.map((c) => this.#actionFor(c));
      this.#actionsLayout = layout;
    }
    return this.#actions;
  }

  #actionFor(column: ColumnPlan): RowAction {
    const { strategy } = this.#plan;
    if (column.binary) {
      if (column.mode === 'pass') return KEEP;
      if (column.mode === 'null') return NULL_VALUE;
      return { kind: 'value', column };
    }
    if (column.mode === 'text') return this.#plan.detectors.length === 0 ? KEEP : DETECT;
    if (column.mode === 'whole' && (strategy === 'redact' || strategy === 'null')) {
      const replacement = maskWhole('', strategy, this.#key);
      return replacement === null ? NULL_VALUE : { kind: 'constant', bytes: Buffer.from(replacement, 'utf8') };
    }
    return { kind: 'value', column };
  }

  #unplacedActions(width: number): RowAction[] {
    const mode: ColumnMode = this.#plan.columns.length > 0 ? 'whole' : 'text';
    return Array.from({ length: width }, (_, i) => this.#actionFor({ name: `column ${i + 1}`, typeOid: 0, binary: false, mode }));
  }

  /** The value in run[start, end) masked by `action`: undefined when it stays as it is, null for SQL NULL. */
  #maskAt(run: Buffer, start: number, end: number, action: RowAction): Buffer | string | null | undefined {
    switch (action.kind) {
      case 'keep':
        return undefined;
      case 'constant':
        return action.bytes;
      case 'detect':
        return maskTextBytes(run, start, end, this.#plan.detectors, this.#plan.strategy, this.#key);
      case 'value': {
        const v = run.subarray(start, end);
        const masked = action.column.binary ? this.#maskBinary(v, action.column) : this.#maskTextValue(v, action.column);
        return masked === v ? undefined : masked;
      }
    }
  }

  #maskTextValue(v: Buffer, column: ColumnPlan): Buffer | string | null {
    if (column.mode !== 'whole' && column.mode !== 'json-whole' && column.mode !== 'json' && column.mode !== 'json-derived' && column.mode !== 'text') {
      // Only binary columns get the other modes; a text one here is a bug, and masking it whole is the safe side.
      return maskWhole(v.toString('utf8'), this.#plan.strategy, this.#key);
    }
    // Text under detectors alone and whole-value redaction never come here: #actionFor gives them their own actions.
    const masked = this.#maskValue(v.toString('utf8'), column.mode, column.shape);
    return masked.changed ? masked.text : v;
  }

  /** One binary value: read as text, masked as its text form would be, written back in its type's binary form. */
  #maskBinary(v: Buffer, column: ColumnPlan): Buffer | null {
    switch (column.mode) {
      case 'pass':
        return v;
      case 'null':
        return null;
      case 'refuse':
        throw unmaskable(binaryRefusal(column));
      case 'checked': {
        const text = this.#readBinary(v, column);
        const r = maskText(text, this.#plan.detectors, this.#plan.strategy, this.#key);
        if (r.text === text) return v;
        if (this.#plan.strategy === 'null') return null;
        throw unmaskable(`column "${column.name}" (${typeName(column.typeOid)}) holds a value a detector matches, and a masked value cannot be sent in its binary form; ${TEXT_RESULTS_HINT}`);
      }
      default: {
        const masked = this.#maskValue(this.#readBinary(v, column), column.mode, column.shape);
        if (!masked.changed) return v;
        if (masked.text === null) return null;
        const bytes = holdsText(column.typeOid) ? binaryValueFromText(column.typeOid, masked.text) : undefined;
        if (bytes === undefined) throw unmaskable(binaryRefusal(column));
        return bytes;
      }
    }
  }

  #readBinary(v: Buffer, column: ColumnPlan): string {
    try {
      return binaryValueText(column.typeOid, v);
    } catch (e) {
      if (e instanceof BinaryValueError) throw unmaskable(`column "${column.name}" sent a binary value that could not be read (${e.message})`);
      throw e;
    }
  }

  #maskValue(value: string, mode: TextMode, shape?: JsonShape): { changed: boolean; text: string | null } {
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
        const r = maskDerivedJson(value, this.#plan, this.#key, shape);
        return { changed: r.text !== value, text: r.text };
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
    if (!this.#copyColumns) {
      // Detectors only: judged on the row's bytes, decoded only when one of them may match.
      if (this.#plan.detectors.length === 0) return undefined;
      const strategy = this.#plan.strategy === 'null' ? 'redact' : this.#plan.strategy;
      const masked = maskTextBytes(frame.body, 0, frame.body.length, this.#plan.detectors, strategy, this.#key);
      return masked == null ? undefined : createCopyData(masked);
    }
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

type TextMode = Extract<ColumnMode, 'whole' | 'json-whole' | 'json' | 'json-derived' | 'text'>;

/** How the row loop treats one column's values; worked out from its ColumnPlan once per result. */
type RowAction =
  /** Passes as it is: text with no detectors, binary of a type nothing is masked in. */
  | { kind: 'keep' }
  /** Replaced by the same bytes whatever the value (a column rule that redacts; null: SQL NULL). */
  | { kind: 'constant'; bytes: Buffer | null }
  /** Text under the content detectors: judged from its bytes where it lies, decoded only when one may match. */
  | { kind: 'detect' }
  /** Anything else: taken out and masked by its ColumnPlan. */
  | { kind: 'value'; column: ColumnPlan };

const KEEP: RowAction = { kind: 'keep' };
const DETECT: RowAction = { kind: 'detect' };
const NULL_VALUE: RowAction = { kind: 'constant', bytes: null };
/** A value beyond the columns RowDescription announced: masked whole, the safe side. */
const EXTRA_COLUMN: RowAction = { kind: 'value', column: { name: 'unannounced column', typeOid: 0, binary: false, mode: 'whole' } };

/** A big-endian int32 at `at` (the caller has checked the bounds): cheaper than readInt32BE in the row loop. */
function int32(buf: Buffer, at: number): number {
  return (buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3];
}

/** The rewritten rows of a run, in one buffer that grows as needed. */
class RowWriter {
  #buf: Buffer;
  length = 0;

  constructor(capacity: number) {
    this.#buf = Buffer.allocUnsafe(capacity);
  }

  #reserve(n: number): void {
    if (this.length + n <= this.#buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.length + n));
    this.#buf.copy(bigger, 0, 0, this.length);
    this.#buf = bigger;
  }

  /** src[from, to) as it is. */
  copy(src: Buffer, from: number, to: number): void {
    const n = to - from;
    if (n <= 0) return;
    this.#reserve(n);
    if (n <= 64) {
      // A few bytes (a length and a short value): a loop costs less than a call into the copy.
      const buf = this.#buf;
      for (let i = 0, at = this.length; i < n; i++, at++) buf[at] = src[from + i];
    } else src.copy(this.#buf, this.length, from, to);
    this.length += n;
  }

  /** One value with its length in front: SQL NULL, bytes, or text written as UTF-8. Returns its bytes (0 for NULL). */
  value(v: Buffer | string | null): number {
    if (v === null) {
      this.#reserve(4);
      this.#buf.writeInt32BE(-1, this.length);
      this.length += 4;
      return 0;
    }
    if (typeof v === 'string') {
      this.#reserve(4 + v.length * 3);
      const buf = this.#buf;
      const from = this.length + 4;
      let n = 0;
      if (v.length <= 64) {
        // A short replacement ([REDACTED:email], a hash) is ASCII: a loop costs less than a call into the encoder.
        for (; n < v.length; n++) {
          const c = v.charCodeAt(n);
          if (c > 127) break;
          buf[from + n] = c;
        }
      }
      if (n < v.length) n = buf.write(v, from, 'utf8');
      buf.writeInt32BE(n, this.length);
      this.length += 4 + n;
      return n;
    }
    this.#reserve(4);
    this.#buf.writeInt32BE(v.length, this.length);
    this.length += 4;
    this.copy(v, 0, v.length);
    return v.length;
  }

  setInt32(at: number, value: number): void {
    this.#buf.writeInt32BE(value, at);
  }

  bytes(): Buffer {
    return this.#buf.subarray(0, this.length);
  }
}

/** What backendFrame returns for a frame that must not reach the client (the answer to a hidden Describe). */
const HIDDEN = Buffer.alloc(0);

const TYPE_NAMES = new Map<number, string>(Object.entries(TypeOid).map(([name, oid]) => [oid, name]));

function typeName(typeOid: number): string {
  return TYPE_NAMES.get(typeOid) ?? `type ${typeOid}`;
}

/** Why a binary column cannot be masked, naming it and what to set instead. */
function binaryRefusal(column: ColumnPlan): string {
  const why = holdsText(column.typeOid) || binaryKind(column.typeOid) !== 'unknown'
    ? 'a mask rule names it and its binary form cannot hold a masked value'
    : 'its binary form cannot be read to run the detectors';
  return `column "${column.name}" (${typeName(column.typeOid)}) cannot be masked in binary format: ${why}; ${TEXT_RESULTS_HINT}`;
}

function formatAt(formats: number[], i: number): number {
  return formats.length === 0 ? 0 : formats.length === 1 ? formats[0] : (formats[i] ?? 0);
}

function unmaskable(what: string): PgWireError {
  return new PgWireError('FATAL', SqlState.InsufficientPrivilege, `hoopctl: ${what}; the session was ended so that no unmasked value is sent`);
}
