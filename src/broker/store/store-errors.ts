import { HoopError } from '../../lib/errors.js';

/** SQLite result codes (better-sqlite3 `code`) and PostgreSQL SQLSTATEs that mean "the store takes no writes now". */
const SQLITE_UNWRITABLE = /^SQLITE_(FULL|READONLY|IOERR|CANTOPEN|CORRUPT|NOTADB|BUSY|LOCKED)/;
const PG_UNWRITABLE = new Set(['53100', '53200', '25006', '57P01', '57P02', '57P03', '08006', '08003', '08001']);

/**
 * A store that stopped taking writes (a full disk, a read-only file or database, a store gone away) is not a bug of
 * the request that met it: the broker refuses what it cannot record, says so, and logs it. Returns the refusal to
 * send (HTTP 503, code STORE_UNAVAILABLE) naming the store's own reason, or undefined for any other error.
 */
export function storeUnavailable(e: unknown): HoopError | undefined {
  if (e instanceof HoopError && e.code === 'STORE_UNAVAILABLE') return e;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !(SQLITE_UNWRITABLE.test(code) || PG_UNWRITABLE.has(code))) return undefined;
  const reason = e instanceof Error ? e.message : code;
  return new HoopError(`the broker cannot record sessions now, so it opens none and forwards nothing: its store refused a write (${reason})`, {
    code: 'STORE_UNAVAILABLE', status: 503, hint: 'an operator must make the broker\'s store writable again (free disk space, fix its permissions); try again then', cause: e,
  });
}
