/**
 * Configuration of `postgres` connections.
 *
 * ```yaml
 * - name: pg-prod
 *   type: postgres
 *   target: { host: db.internal, port: 5432, database: app, sslmode: verify-full, sslrootcert: /etc/ssl/db-ca.pem }
 *   credentials: { user: app_rw, password: { env: PG_PROD_PASSWORD } }
 *   access: { groups: [dba] }
 *   rules: [...]            # statement and masking rules: src/policy/rules.ts
 *   pool: { idle: 8 }       # optional: keep up to 8 logged-in backends for new sessions (backend-pool.ts)
 * ```
 */
import { z } from 'zod';
import { connectionPolicyShape } from '../../../policy/rules.js';
import type { Secret } from '../../../lib/secret.js';
import { connectionCommonShape, credentialSource, duration, type ResolveContext } from '../connection-schema.js';

const roleNames = z.array(z.string().min(1).max(63)).min(1);

/**
 * `credentials.dynamic`: the role a session gets is a member of `grantRoles` (or of the first `byGroup` entry naming
 * one of the identity's groups), so it has exactly their privileges; it is swept every `sweepEvery` when a crash left
 * it behind.
 */
export const dynamicRolesSchema = z
  .object({
    grantRoles: roleNames,
    byGroup: z.array(z.object({ groups: z.array(z.string().min(1)).min(1), grantRoles: roleNames }).strict()).default([]),
    sweepEvery: duration.default(300_000),
  })
  .strict();
export type DynamicRolesConfig = z.infer<typeof dynamicRolesSchema>;

/**
 * `pool`: backends logged in with the static credential are kept after a session that ended cleanly (reset with
 * DISCARD ALL) and lent to the next session, which then skips PostgreSQL's fork and SCRAM login. Off when absent.
 */
export const backendPoolSchema = z
  .object({
    /** The most backends kept idle for this connection. */
    idle: z.number().int().min(1).max(1000),
    /** An idle backend is closed after this long unused. */
    idleTimeout: duration.default(60_000),
    /** A backend is closed once this old (when next returned, or while idle), whatever its use. */
    maxLifetime: duration.default(1_800_000),
  })
  .strict();
export type BackendPoolConfig = z.infer<typeof backendPoolSchema>;

export const postgresConnectionSchema = z
  .object({
    ...connectionCommonShape,
    type: z.literal('postgres'),
    target: z
      .object({
        host: z.string().min(1),
        port: z.number().int().min(1).max(65535).default(5432),
        /** The database a client gets when it names none (or only libpq's default, its user name). */
        database: z.string().min(1),
        /**
         * Databases a client may ask for by name (`psql …/scratch`), `database` among them; absent, only `database`.
         * Any other name is refused, never silently replaced.
         */
        databases: z.array(z.string().min(1)).min(1).optional(),
        sslmode: z.enum(['disable', 'prefer', 'require', 'verify-ca', 'verify-full']).default('prefer'),
        sslrootcert: z.string().optional(),
        connectTimeout: duration.default(10_000),
      })
      .strict()
      .refine((t) => !t.databases || t.databases.includes(t.database), {
        path: ['databases'],
        message: 'list the default `database` among `databases` (it is where a client that names none goes)',
      }),
    credentials: z
      .object({
        /** With `dynamic`: the admin role that creates and drops the per-session roles (CREATEROLE). */
        user: z.string().min(1),
        password: credentialSource.optional(),
        /** Per-session roles: each session logs in as a role of its own, made for it and dropped after it. */
        dynamic: dynamicRolesSchema.optional(),
        /** Rotate the password this often (`hoopctl broker rotate` does it at once); it must come from a file. */
        rotateEvery: duration.optional(),
      })
      .strict()
      .refine((c) => c.rotateEvery === undefined || (c.password !== undefined && 'file' in c.password), {
        path: ['rotateEvery'],
        message: 'rotation writes the new password to the secret file: give credentials.password as { file: … }',
      }),
    pool: backendPoolSchema.optional(),
    /** Statement and masking rules (src/policy/rules.ts documents the schema). */
    ...connectionPolicyShape,
  })
  .strict()
  // A pooled backend stays logged in as one role with one password across sessions: per-session roles must never be
  // lent to another session, and a rotated password must end the backends it logged in (rotation by hand still
  // does: the pool keys backends by the exact password).
  .refine((c) => !c.pool || !c.credentials.dynamic, {
    path: ['pool'],
    message: 'a backend pool cannot be used with per-session roles (credentials.dynamic): each session must log in as its own role; remove one of them',
  })
  .refine((c) => !c.pool || c.credentials.rotateEvery === undefined, {
    path: ['pool'],
    message: 'a backend pool cannot be used with scheduled rotation (credentials.rotateEvery): pooled backends would outlive the password they logged in with; remove one of them',
  });

type RawPostgresConnection = z.infer<typeof postgresConnectionSchema>;

/** A postgres connection as the proxy sees it: the password resolved. */
export interface PostgresConnection extends Omit<RawPostgresConnection, 'credentials'> {
  credentials: { user: string; password?: Secret; dynamic?: DynamicRolesConfig; rotateEvery?: number };
  pool?: BackendPoolConfig;
}

export function resolvePostgresConnection(raw: RawPostgresConnection, ctx: ResolveContext): PostgresConnection {
  const password = raw.credentials.password && !ctx.skipSecrets ? ctx.secret(raw.credentials.password, `${ctx.field}.credentials.password`) : undefined;
  return { ...raw, credentials: { user: raw.credentials.user, password, ...(raw.credentials.dynamic ? { dynamic: raw.credentials.dynamic } : {}),
    ...(raw.credentials.rotateEvery !== undefined ? { rotateEvery: raw.credentials.rotateEvery } : {}) } };
}
