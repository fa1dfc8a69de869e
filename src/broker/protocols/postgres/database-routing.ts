import type { PostgresConnection } from './config.js';

/** Where a client's startup goes, or why it is refused. */
export type DatabaseRoute =
  | { served: true; database: string }
  | { served: false; message: string };

/**
 * Decides which database a client's startup reaches. The startup's `user` is not an identity (the token is), but
 * its `database` is what the client means to change: landing in another database than the one asked for
 * restored a dump into the wrong place. So:
 * - no database, or an empty one → the connection's `target.database`;
 * - a database the connection serves (`target.databases`, else only `target.database`) → that one;
 * - a database equal to the startup user that is not served → `target.database`: libpq sends the user name as
 *   the database when none is given (`psql postgresql://127.0.0.1:5433`), and that is not a choice;
 * - anything else → refused, naming what the connection serves.
 * Names compare exactly, as PostgreSQL compares them on the wire.
 */
export function routeStartupDatabase(conn: PostgresConnection, parameters: Record<string, string>): DatabaseRoute {
  const { database: fallback } = conn.target;
  const served = conn.target.databases ?? [fallback];
  const requested = parameters.database;
  if (requested === undefined || requested === '') return { served: true, database: fallback };
  if (served.includes(requested)) return { served: true, database: requested };
  if (requested === parameters.user) return { served: true, database: fallback };
  const message =
    served.length === 1
      ? `connection "${conn.name}" serves database "${fallback}", not "${requested}"; ask for it (or leave dbname out)`
      : `connection "${conn.name}" serves databases ${served.map((d) => `"${d}"`).join(', ')}, not "${requested}"; ask for one of them (or leave dbname out for "${fallback}")`;
  return { served: false, message };
}
