/**
 * Per-session PostgreSQL roles (`credentials.dynamic`). Holding the connection's admin credential, the broker creates
 * a role for each session — LOGIN, a random password that is never stored or logged (PostgreSQL gets only its SCRAM
 * verifier), VALID UNTIL the session's latest end, IN ROLE the grant roles — connects as it, and drops it when the
 * session ends, terminating what is left of its backends first. The role is named after the session
 * (`hoopctl_ses_…`), so pg_stat_activity and the server log name the recorded session; its COMMENT marks it as the
 * broker's, and only roles with both the prefix and the mark are ever swept.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { FetchedSecret, Secret } from '../../../lib/secret.js';
import { AdminSql, AdminSqlError, quoteIdent, quoteLiteral } from './admin-sql.js';
import { connectBackend, type BackendSession, type ConnectBackendOptions } from './backend.js';
import type { DynamicRolesConfig, PostgresConnection } from './config.js';
import { BackendConnectError } from './errors.js';
import { scramVerifier } from './scram.js';

export const SESSION_ROLE_PREFIX = 'hoopctl_';
const MARK = 'hoopctl session role:';
/** VALID UNTIL of a session with no maximum duration: the role is dropped at its end anyway. */
const DEFAULT_VALIDITY_MS = 24 * 3_600_000;

export function sessionRoleName(sessionId: string): string {
  return `${SESSION_ROLE_PREFIX}${sessionId}`;
}

/** The grant roles of an identity: those of the first `byGroup` entry naming one of its groups, else `grantRoles`. */
export function grantRolesFor(dynamic: DynamicRolesConfig, groups: readonly string[]): string[] {
  return dynamic.byGroup.find((b) => b.groups.some((g) => groups.includes(g)))?.grantRoles ?? dynamic.grantRoles;
}

/** Runs `work` on a connection of the admin credential (the connection's own `user` and `password`). */
export async function withAdmin<T>(conn: PostgresConnection, work: (sql: AdminSql) => Promise<T>): Promise<T> {
  // A helper's admin password is fetched by sessions; a sweep at start may come first.
  if (conn.credentials.password instanceof FetchedSecret && !conn.credentials.password.known) await conn.credentials.password.refresh();
  const sql = new AdminSql(await connectBackend(conn, { application_name: 'hoopctl-broker' }));
  try {
    return await work(sql);
  } finally {
    sql.close();
  }
}

export interface SessionRoleEvents {
  record(type: string, data: Record<string, unknown>): Promise<void>;
}

/**
 * One session's role: `connect` (the proxy's connectBackend) creates it and logs in as it; `drop` removes it once
 * the proxy is done. Both are recorded in the session's stream.
 */
export class SessionRole {
  readonly role: string;
  #created = false;

  constructor(
    readonly conn: PostgresConnection,
    readonly sessionId: string,
    readonly grantRoles: string[],
    readonly endsAt: number,
    readonly events: SessionRoleEvents,
    readonly logger: Logger,
  ) {
    this.role = sessionRoleName(sessionId);
  }

  /** The proxy's connectBackend: creates the role, then authenticates as it. Errors are BackendConnectError. */
  readonly connect = async (conn: PostgresConnection, params: Record<string, string>, options?: ConnectBackendOptions): Promise<BackendSession> => {
    const password = randomBytes(24).toString('base64url');
    const validUntil = new Date(this.endsAt).toISOString();
    const role = quoteIdent(this.role);
    try {
      await withAdmin(this.conn, (sql) =>
        sql.query(
          `CREATE ROLE ${role} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD ${quoteLiteral(scramVerifier(password))} ` +
            `VALID UNTIL ${quoteLiteral(validUntil)} IN ROLE ${this.grantRoles.map(quoteIdent).join(', ')}; ` +
            `COMMENT ON ROLE ${role} IS ${quoteLiteral(`${MARK} session=${this.sessionId} connection=${this.conn.name}`)}`,
        ),
      );
    } catch (e) {
      const reason = e instanceof AdminSqlError || e instanceof BackendConnectError ? e.message : String(e);
      await this.events.record('credential-create-failed', { role: this.role, error: reason }).catch(() => undefined);
      throw new BackendConnectError(`could not create the session's database role: ${reason}`, {
        code: 'BACKEND_AUTH_FAILED',
        sqlState: e instanceof AdminSqlError ? e.code : undefined,
      });
    }
    this.#created = true;
    await this.events.record('credential-created', { role: this.role, grantRoles: this.grantRoles, validUntil });
    return connectBackend({ ...conn, credentials: { user: this.role, password: new Secret(password) } }, params, options);
  };

  /** Terminates the role's remaining backends and drops it; recorded. Never throws (a failure is swept later). */
  async drop(): Promise<void> {
    if (!this.#created) return;
    try {
      const terminated = await withAdmin(this.conn, (sql) => dropSessionRole(sql, this.role));
      await this.events.record('credential-dropped', { role: this.role, terminated });
    } catch (e) {
      const error = e instanceof Error ? e.message : String(e);
      this.logger.warn({ role: this.role, err: error }, 'could not drop the session role; the sweep retries');
      await this.events.record('credential-drop-failed', { role: this.role, error }).catch(() => undefined);
    }
  }
}

/** The latest moment a session may still be running: VALID UNTIL of its role. */
export function roleValidUntil(endsAt: number | undefined, now = Date.now()): number {
  return endsAt ?? now + DEFAULT_VALIDITY_MS;
}

/**
 * Ends the role's backends, then drops it. A role that owns objects (a table the session created) has them
 * reassigned to the admin and dropped with it; if even that is refused, it loses LOGIN and the error is thrown.
 * Returns how many backends were terminated.
 */
async function dropSessionRole(sql: AdminSql, role: string): Promise<number> {
  let terminated = 0;
  try {
    const rows = await sql.query(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = ${quoteLiteral(role)}`);
    terminated = Number(rows[0]?.[0] ?? 0);
  } catch (e) {
    // Without pg_signal_backend the admin cannot end another role's backends; the drop still goes on.
    if (!(e instanceof AdminSqlError && e.code === '42501')) throw e;
  }
  try {
    await sql.query(`DROP ROLE IF EXISTS ${quoteIdent(role)}`);
  } catch (e) {
    if (!(e instanceof AdminSqlError && e.code === '2BP01')) throw e;
    try {
      await sql.query(`REASSIGN OWNED BY ${quoteIdent(role)} TO CURRENT_USER; DROP OWNED BY ${quoteIdent(role)}; DROP ROLE ${quoteIdent(role)}`);
    } catch (again) {
      await sql.query(`ALTER ROLE ${quoteIdent(role)} NOLOGIN`).catch(() => undefined);
      throw again;
    }
  }
  return terminated;
}

/**
 * Drops the roles a broker that stopped without cleaning up left behind: marked as this connection's, and
 * whose session is no longer open. Returns the roles dropped.
 */
export async function sweepSessionRoles(conn: PostgresConnection, sessionOpen: (id: string) => Promise<boolean>): Promise<Array<{ role: string; session: string }>> {
  return withAdmin(conn, async (sql) => {
    const rows = await sql.query(
      `SELECT r.rolname, d.description FROM pg_roles r JOIN pg_shdescription d ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass ` +
        `WHERE starts_with(r.rolname, ${quoteLiteral(SESSION_ROLE_PREFIX)}) AND starts_with(d.description, ${quoteLiteral(MARK)})`,
    );
    const dropped: Array<{ role: string; session: string }> = [];
    for (const [role, description] of rows) {
      const m = /^hoopctl session role: session=(\S+) connection=(\S+)$/.exec(description ?? '');
      if (!role || !m || m[2] !== conn.name || role !== sessionRoleName(m[1]!)) continue;
      if (await sessionOpen(m[1]!)) continue;
      await dropSessionRole(sql, role);
      dropped.push({ role, session: m[1]! });
    }
    return dropped;
  });
}
