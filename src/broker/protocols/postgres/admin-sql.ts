/**
 * A few statements the broker itself runs on a backend (creating and dropping per-session roles, rotating a
 * password): simple-protocol queries over a connection made by connectBackend, so TLS and authentication follow the
 * connection's own settings. Never on a client's session, never with a client's text.
 */
import type { BackendSession } from './backend.js';
import { BackendCode } from '../../../lib/pg-wire/message-codes.js';
import { createQuery, createTerminate, parseDataRow, parseErrorResponse } from './messages.js';
import { StreamReader } from './stream-reader.js';

/** An ErrorResponse to a statement the broker ran; `code` is the SQLSTATE. */
export class AdminSqlError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** `"name"` with embedded quotes doubled: any role name is safe inside SQL. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** `'text'` with embedded quotes doubled (standard_conforming_strings, on since PostgreSQL 9.1). */
export function quoteLiteral(text: string): string {
  if (text.includes('\\')) throw new Error('a literal with a backslash is not sent by the broker');
  return `'${text.replace(/'/g, "''")}'`;
}

export class AdminSql {
  readonly #session: BackendSession;
  readonly #reader: StreamReader;

  constructor(session: BackendSession) {
    this.#session = session;
    this.#reader = new StreamReader(session.socket);
    if (session.leftover.length > 0) session.socket.unshift(session.leftover);
  }

  /** Runs `sql` (one or more statements) and returns the text rows of its results; rejects on an ErrorResponse. */
  async query(sql: string): Promise<Array<Array<string | null>>> {
    this.#session.socket.write(createQuery(sql));
    const rows: Array<Array<string | null>> = [];
    let error: AdminSqlError | undefined;
    for (;;) {
      const header = await this.#reader.read(5);
      const length = header.readInt32BE(1);
      const body = await this.#reader.read(length - 4);
      if (header[0] === BackendCode.DataRow) rows.push(parseDataRow(body).map((v) => (v === null ? null : v.toString('utf8'))));
      else if (header[0] === BackendCode.ErrorResponse) {
        const e = parseErrorResponse(body);
        error ??= new AdminSqlError(e.message, e.code);
      } else if (header[0] === BackendCode.ReadyForQuery) break;
    }
    if (error) throw error;
    return rows;
  }

  close(): void {
    this.#reader.release();
    this.#session.socket.end(createTerminate());
  }
}
