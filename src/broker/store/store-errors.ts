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
  return unavailable(`its store refused a write (${reason})`, 'an operator must make the broker\'s store writable again (free disk space, fix its permissions); try again then', e);
}

/**
 * The refusal for an append the SQLite store's event journal could not take (a full disk: ENOSPC, a read-only
 * filesystem), or that waited on a copy into SQLite that failed: named by the system's or SQLite's own reason.
 */
export function journalUnwritable(e: unknown): HoopError {
  const known = storeUnavailable(e);
  if (known) return known;
  const reason = e instanceof Error ? e.message : String(e);
  return unavailable(`its store refused a write (${reason})`, 'an operator must make the broker\'s store writable again (free disk space, fix its permissions); try again then', e);
}

/**
 * The same refusal for a store server the broker cannot reach at all (PostgreSQL stopped, the network cut): the
 * socket's error carries no SQLSTATE, so only the store itself knows that it was its connection that failed.
 */
export function storeUnreachable(e: unknown): HoopError {
  const reason = e instanceof Error ? e.message : String(e);
  return unavailable(`its store cannot be reached (${reason})`, 'an operator must bring the broker\'s store back (is PostgreSQL running and reachable?); try again then', e);
}

function unavailable(why: string, hint: string, cause: unknown): HoopError {
  return new HoopError(`the broker cannot record sessions now, so it opens none and forwards nothing: ${why}`, { code: 'STORE_UNAVAILABLE', status: 503, hint, cause });
}
