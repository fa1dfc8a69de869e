import { Reader } from './buffer-reader.js';
import { Writer } from '../../../lib/pg-wire/buffer-writer.js';
import { AuthCode, BackendCode, FrontendCode, StartupCode } from '../../../lib/pg-wire/message-codes.js';

/**
 * Parse and create functions, one small group per message. Parse functions take the message BODY
 * (after the type byte and length) unless they say otherwise; create functions return a whole frame.
 * Layouts: @see https://www.postgresql.org/docs/current/protocol-message-formats.html
 */

// ---------------------------------------------------------------- startup phase (untyped messages)

export interface StartupMessage {
  major: number;
  minor: number;
  parameters: Record<string, string>;
}

/**
 * StartupMessage body after the length: int32 protocol version, then name/value C-string pairs, then NUL.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-STARTUPMESSAGE
 */
export function parseStartupMessage(body: Buffer): StartupMessage {
  const r = new Reader(body);
  const version = r.int32();
  const parameters: Record<string, string> = {};
  for (;;) {
    const name = r.cstring();
    if (name === '') break;
    parameters[name] = r.cstring();
  }
  return { major: version >>> 16, minor: version & 0xffff, parameters };
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-STARTUPMESSAGE */
export function createStartupMessage(parameters: Record<string, string>): Buffer {
  const w = new Writer().addInt32(StartupCode.ProtocolV3);
  for (const [name, value] of Object.entries(parameters)) w.addCString(name).addCString(value);
  return w.addByte(0).untyped();
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SSLREQUEST */
export function createSSLRequest(): Buffer {
  return new Writer().addInt32(StartupCode.SSLRequest).untyped();
}

export interface CancelKey {
  pid: number;
  secret: number;
}

/** CancelRequest body after the length: int32 code, int32 pid, int32 secret. */
export function parseCancelRequest(body: Buffer): CancelKey {
  const r = new Reader(body);
  r.int32();
  return { pid: r.int32(), secret: r.int32() };
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-CANCELREQUEST */
export function createCancelRequest(key: CancelKey): Buffer {
  return new Writer().addInt32(StartupCode.CancelRequest).addInt32(key.pid).addInt32(key.secret).untyped();
}

// ---------------------------------------------------------------- frontend messages

export const isQuery = (code: number): boolean => code === FrontendCode.Query;
export const isParse = (code: number): boolean => code === FrontendCode.Parse;
export const isBind = (code: number): boolean => code === FrontendCode.Bind;
export const isExecute = (code: number): boolean => code === FrontendCode.Execute;

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-QUERY */
export function parseQuery(body: Buffer): string {
  return new Reader(body).cstring();
}

export function createQuery(sql: string): Buffer {
  return new Writer().addCString(sql).frame(FrontendCode.Query);
}

export interface ParseMessage {
  name: string;
  sql: string;
  paramTypes: number[];
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PARSE */
export function parseParse(body: Buffer): ParseMessage {
  const r = new Reader(body);
  const name = r.cstring();
  const sql = r.cstring();
  const n = r.int16();
  const paramTypes: number[] = [];
  for (let i = 0; i < n; i++) paramTypes.push(r.uint32());
  return { name, sql, paramTypes };
}

export function createParse(m: { name?: string; sql: string; paramTypes?: number[] }): Buffer {
  const types = m.paramTypes ?? [];
  const w = new Writer().addCString(m.name ?? '').addCString(m.sql).addInt16(types.length);
  for (const t of types) w.addInt32(t | 0);
  return w.frame(FrontendCode.Parse);
}

export interface BindMessage {
  portal: string;
  statement: string;
  /** One format code per parameter (0 text, 1 binary), already expanded from the 0/1/n encoding. */
  paramFormats: number[];
  params: (Buffer | null)[];
  resultFormats: number[];
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BIND */
export function parseBind(body: Buffer): BindMessage {
  const r = new Reader(body);
  const portal = r.cstring();
  const statement = r.cstring();
  const nFormats = r.int16();
  const formats: number[] = [];
  for (let i = 0; i < nFormats; i++) formats.push(r.int16());
  const nParams = r.int16();
  const params: (Buffer | null)[] = [];
  for (let i = 0; i < nParams; i++) {
    const len = r.int32();
    params.push(len === -1 ? null : r.bytes(len));
  }
  const nResult = r.int16();
  const resultFormats: number[] = [];
  for (let i = 0; i < nResult; i++) resultFormats.push(r.int16());
  const paramFormats = params.map((_, i) => (nFormats === 0 ? 0 : nFormats === 1 ? formats[0] : (formats[i] ?? 0)));
  return { portal, statement, paramFormats, params, resultFormats };
}

export function createBind(m: { portal?: string; statement?: string; params?: (string | Buffer | null)[]; binary?: boolean[]; resultFormats?: number[] }): Buffer {
  const params = m.params ?? [];
  const w = new Writer().addCString(m.portal ?? '').addCString(m.statement ?? '');
  w.addInt16(params.length);
  for (let i = 0; i < params.length; i++) w.addInt16(m.binary?.[i] ? 1 : 0);
  w.addInt16(params.length);
  for (const p of params) {
    if (p === null) w.addInt32(-1);
    else {
      const b = typeof p === 'string' ? Buffer.from(p, 'utf8') : p;
      w.addInt32(b.length).addBytes(b);
    }
  }
  const rf = m.resultFormats ?? [];
  w.addInt16(rf.length);
  for (const f of rf) w.addInt16(f);
  return w.frame(FrontendCode.Bind);
}

/**
 * How a recorded parameter looks: text as is, binary as `\x<hex>` (PostgreSQL's bytea escape form),
 * SQL NULL as null.
 */
export function describeParam(value: Buffer | null, format: number): string | null {
  if (value === null) return null;
  return format === 1 ? `\\x${value.toString('hex')}` : value.toString('utf8');
}

export interface ExecuteMessage {
  portal: string;
  maxRows: number;
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-EXECUTE */
export function parseExecute(body: Buffer): ExecuteMessage {
  const r = new Reader(body);
  return { portal: r.cstring(), maxRows: r.int32() };
}

export function createExecute(m: { portal?: string; maxRows?: number } = {}): Buffer {
  return new Writer().addCString(m.portal ?? '').addInt32(m.maxRows ?? 0).frame(FrontendCode.Execute);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DESCRIBE */
export function createDescribe(kind: 'S' | 'P', name = ''): Buffer {
  return new Writer().addByte(kind.charCodeAt(0)).addCString(name).frame(FrontendCode.Describe);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-CLOSE */
export function parseClose(body: Buffer): { kind: 'statement' | 'portal'; name: string } {
  const r = new Reader(body);
  const kind = r.byte();
  return { kind: kind === 0x50 /* P */ ? 'portal' : 'statement', name: r.cstring() };
}

export function createClose(kind: 'S' | 'P', name = ''): Buffer {
  return new Writer().addByte(kind.charCodeAt(0)).addCString(name).frame(FrontendCode.Close);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SYNC */
export function createSync(): Buffer {
  return new Writer().frame(FrontendCode.Sync);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-TERMINATE */
export function createTerminate(): Buffer {
  return new Writer().frame(FrontendCode.Terminate);
}

export interface FunctionCallMessage {
  functionOid: number;
  argFormats: number[];
  args: (Buffer | null)[];
  resultFormat: number;
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-FUNCTIONCALL */
export function parseFunctionCall(body: Buffer): FunctionCallMessage {
  const r = new Reader(body);
  const functionOid = r.uint32();
  const nFormats = r.int16();
  const formats: number[] = [];
  for (let i = 0; i < nFormats; i++) formats.push(r.int16());
  const nArgs = r.int16();
  const args: (Buffer | null)[] = [];
  for (let i = 0; i < nArgs; i++) {
    const len = r.int32();
    args.push(len === -1 ? null : r.bytes(len));
  }
  const resultFormat = r.int16();
  const argFormats = args.map((_, i) => (nFormats === 0 ? 0 : nFormats === 1 ? formats[0] : (formats[i] ?? 0)));
  return { functionOid, argFormats, args, resultFormat };
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PASSWORDMESSAGE */
export function createPasswordMessage(password: string): Buffer {
  return new Writer().addCString(password).frame(FrontendCode.Password);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SASLINITIALRESPONSE */
export function createSASLInitialResponse(mechanism: string, data: string): Buffer {
  const bytes = Buffer.from(data, 'utf8');
  return new Writer().addCString(mechanism).addInt32(bytes.length).addBytes(bytes).frame(FrontendCode.Password);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SASLRESPONSE */
export function createSASLResponse(data: string): Buffer {
  return new Writer().addString(data).frame(FrontendCode.Password);
}

// ---------------------------------------------------------------- backend messages

export type AuthenticationRequest =
  | { type: 'ok' }
  | { type: 'cleartext' }
  | { type: 'md5'; salt: Buffer }
  | { type: 'sasl'; mechanisms: string[] }
  | { type: 'sasl-continue'; data: string }
  | { type: 'sasl-final'; data: string }
  | { type: 'unsupported'; code: number };

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONOK */
export function parseAuthentication(body: Buffer): AuthenticationRequest {
  const r = new Reader(body);
  const code = r.int32();
  switch (code) {
    case AuthCode.Ok:
      return { type: 'ok' };
    case AuthCode.CleartextPassword:
      return { type: 'cleartext' };
    case AuthCode.MD5Password:
      return { type: 'md5', salt: Buffer.from(r.bytes(4)) };
    case AuthCode.SASL: {
      const mechanisms: string[] = [];
      while (r.remaining > 0) {
        const m = r.cstring();
        if (m === '') break;
        mechanisms.push(m);
      }
      return { type: 'sasl', mechanisms };
    }
    case AuthCode.SASLContinue:
      return { type: 'sasl-continue', data: r.rest().toString('utf8') };
    case AuthCode.SASLFinal:
      return { type: 'sasl-final', data: r.rest().toString('utf8') };
    default:
      return { type: 'unsupported', code };
  }
}

export function createAuthenticationOk(): Buffer {
  return new Writer().addInt32(AuthCode.Ok).frame(BackendCode.Authentication);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PARAMETERSTATUS */
export function parseParameterStatus(body: Buffer): { name: string; value: string } {
  const r = new Reader(body);
  return { name: r.cstring(), value: r.cstring() };
}

export function createParameterStatus(name: string, value: string): Buffer {
  return new Writer().addCString(name).addCString(value).frame(BackendCode.ParameterStatus);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BACKENDKEYDATA */
export function parseBackendKeyData(body: Buffer): CancelKey {
  const r = new Reader(body);
  return { pid: r.int32(), secret: r.int32() };
}

export function createBackendKeyData(key: CancelKey): Buffer {
  return new Writer().addInt32(key.pid).addInt32(key.secret).frame(BackendCode.BackendKeyData);
}

export type TransactionStatus = 'I' | 'T' | 'E';

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-READYFORQUERY */
export function parseReadyForQuery(body: Buffer): TransactionStatus {
  const s = String.fromCharCode(new Reader(body).byte());
  return s === 'T' || s === 'E' ? s : 'I';
}

export function createReadyForQuery(status: TransactionStatus = 'I'): Buffer {
  return new Writer().addByte(status.charCodeAt(0)).frame(BackendCode.ReadyForQuery);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COMMANDCOMPLETE */
export function parseCommandComplete(body: Buffer): string {
  return new Reader(body).cstring();
}

export function createCommandComplete(tag: string): Buffer {
  return new Writer().addCString(tag).frame(BackendCode.CommandComplete);
}

/** Rows a command tag reports: `SELECT 5`, `INSERT 0 3`, `UPDATE 2`, `COPY 10`; 0 for tags without a count. */
export function rowsFromTag(tag: string): number {
  const m = /^(?:SELECT|INSERT \d+|UPDATE|DELETE|MERGE|COPY|FETCH|MOVE) (\d+)$/.exec(tag);
  return m ? Number(m[1]) : 0;
}

/** Field codes in ErrorResponse / NoticeResponse. */
const ErrorField = {
  S: 'severityLocalized',
  V: 'severity',
  C: 'code',
  M: 'message',
  D: 'detail',
  H: 'hint',
  P: 'position',
  W: 'where',
  R: 'routine',
} as const;

export interface ErrorFields {
  severity: string;
  code: string;
  message: string;
  detail?: string;
  hint?: string;
  [field: string]: string | undefined;
}

/** ErrorResponse and NoticeResponse share this layout: (byte field code, C-string value)*, NUL. */
export function parseErrorResponse(body: Buffer): ErrorFields {
  const r = new Reader(body);
  const out: ErrorFields = { severity: '', code: '', message: '' };
  for (;;) {
    const field = r.byte();
    if (field === 0) break;
    const ch = String.fromCharCode(field);
    const key = (ErrorField as Record<string, string>)[ch] ?? ch;
    out[key] = r.cstring();
  }
  if (!out.severity && out.severityLocalized) out.severity = out.severityLocalized;
  return out;
}

// ErrorResponse has one writer, shared with the client side's local refusals.
export { createErrorResponse } from '../../../lib/pg-wire/error-response.js';

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-NOTICERESPONSE */
export function createNoticeResponse(f: { severity: string; code: string; message: string; hint?: string }): Buffer {
  const fields: Array<[number, string]> = [[0x53, f.severity], [0x56, f.severity], [0x43, f.code], [0x4d, f.message]];
  if (f.hint) fields.push([0x48, f.hint]);
  return createResponseFields(BackendCode.NoticeResponse, fields);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-NEGOTIATEPROTOCOLVERSION */
export function createNegotiateProtocolVersion(newestMinor: number, unrecognized: string[]): Buffer {
  const w = new Writer().addInt32(newestMinor).addInt32(unrecognized.length);
  for (const o of unrecognized) w.addCString(o);
  return w.frame(BackendCode.NegotiateProtocolVersion);
}

// ---------------------------------------------------------------- result messages (decoded only when masking)

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DESCRIBE */
export function parseDescribe(body: Buffer): { kind: 'statement' | 'portal'; name: string } {
  const r = new Reader(body);
  const kind = r.byte();
  return { kind: kind === 0x50 /* P */ ? 'portal' : 'statement', name: r.cstring() };
}

export interface RowField {
  name: string;
  /** OID of the table the column comes from; 0 when it is not a plain table column. */
  tableOid: number;
  /** The column's attribute number in that table; 0 when not a plain table column. */
  attnum: number;
  typeOid: number;
  typeSize: number;
  typeModifier: number;
  /** 0 text, 1 binary (always 0 in a Describe of a statement: the format is chosen at Bind). */
  format: number;
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-ROWDESCRIPTION */
export function parseRowDescription(body: Buffer): RowField[] {
  const r = new Reader(body);
  const n = r.int16();
  const fields: RowField[] = [];
  for (let i = 0; i < n; i++) {
    fields.push({
      name: r.cstring(),
      tableOid: r.uint32(),
      attnum: r.int16(),
      typeOid: r.uint32(),
      typeSize: r.int16(),
      typeModifier: r.int32(),
      format: r.int16(),
    });
  }
  return fields;
}

export function createRowDescription(fields: RowField[]): Buffer {
  const w = new Writer().addInt16(fields.length);
  for (const f of fields) {
    w.addCString(f.name).addInt32(f.tableOid | 0).addInt16(f.attnum).addInt32(f.typeOid | 0).addInt16(f.typeSize).addInt32(f.typeModifier).addInt16(f.format);
  }
  return w.frame(BackendCode.RowDescription);
}

/**
 * DataRow values as views into the body; SQL NULL is null.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DATAROW
 */
export function parseDataRow(body: Buffer): (Buffer | null)[] {
  const r = new Reader(body);
  const n = r.int16();
  const values: (Buffer | null)[] = new Array<Buffer | null>(n);
  for (let i = 0; i < n; i++) {
    const len = r.int32();
    values[i] = len === -1 ? null : r.bytes(len);
  }
  return values;
}

export function createDataRow(values: (Buffer | string | null)[]): Buffer {
  // One allocation, strings encoded in place: the masker rewrites every row of a large result through here.
  let size = 1 + 4 + 2;
  for (const v of values) size += 4 + (v === null ? 0 : typeof v === 'string' ? Buffer.byteLength(v, 'utf8') : v.length);
  const out = Buffer.allocUnsafe(size);
  out[0] = BackendCode.DataRow;
  let at = out.writeInt32BE(size - 1, 1);
  at = out.writeInt16BE(values.length, at);
  for (const v of values) {
    if (v === null) {
      at = out.writeInt32BE(-1, at);
    } else if (typeof v === 'string') {
      const len = out.write(v, at + 4, 'utf8');
      at = out.writeInt32BE(len, at) + len;
    } else {
      at = out.writeInt32BE(v.length, at);
      at += v.copy(out, at);
    }
  }
  return out;
}

/**
 * CopyInResponse, CopyOutResponse and CopyBothResponse share this layout: overall format, then one format per column.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COPYOUTRESPONSE
 */
export function parseCopyResponse(body: Buffer): { format: number; columnFormats: number[] } {
  const r = new Reader(body);
  const format = r.byte();
  const n = r.int16();
  const columnFormats: number[] = [];
  for (let i = 0; i < n; i++) columnFormats.push(r.int16());
  return { format, columnFormats };
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COPYDATA */
export function createCopyData(data: Buffer | string): Buffer {
  return new Writer().addBytes(typeof data === 'string' ? Buffer.from(data, 'utf8') : data).frame(BackendCode.CopyData);
}

/** ErrorResponse / NoticeResponse fields in wire order, as (field code, value) pairs: for rewriting their text. */
export function parseResponseFields(body: Buffer): Array<[number, string]> {
  const r = new Reader(body);
  const out: Array<[number, string]> = [];
  for (;;) {
    const field = r.byte();
    if (field === 0) break;
    out.push([field, r.cstring()]);
  }
  return out;
}

export function createResponseFields(code: number, fields: Array<[number, string]>): Buffer {
  const w = new Writer();
  for (const [field, value] of fields) w.addByte(field).addCString(value);
  return w.addByte(0).frame(code);
}
