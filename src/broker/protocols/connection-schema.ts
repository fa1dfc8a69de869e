/**
 * What every connection entry of the broker config has, whatever its type: a name, who may open it (`access`),
 * who decides what its rules hold (`reviews`), and secrets given by source. Each protocol module builds its own
 * schema from these (src/broker/protocols/<type>/config.ts); the broker's config loader takes the union the
 * registry makes of them. Kept here, below the broker, so a protocol never imports the broker's config.
 */
import { z } from 'zod';
import { parseDuration } from '../../lib/duration.js';
import type { Secret } from '../../lib/secret.js';

/** `30s`, `15m`, `8h`, `2d` or milliseconds → milliseconds. */
export const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseDuration(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
});

/** A secret: from the environment, a file (relative to the config file), or inline. */
export const secretSource = z.union([
  z.object({ env: z.string().min(1) }).strict(),
  z.object({ file: z.string().min(1) }).strict(),
  z.object({ value: z.string() }).strict(),
]);
export type SecretSource = z.infer<typeof secretSource>;

/**
 * A backend credential: a secret as above, or what a credential helper prints (`{ command: [vault, kv, get, …] }`):
 * run without a shell when a session needs it (at most every `cacheFor`), killed after `timeout`. A helper that
 * fails, hangs or prints nothing refuses the session. A relative program path is relative to the config file.
 */
export const credentialSource = z.union([
  ...secretSource.options,
  z
    .object({
      command: z.array(z.string().min(1)).min(1),
      /** How long a printed secret is reused; 0 runs the helper for every session. */
      cacheFor: duration.default(0),
      timeout: duration.default(10_000),
    })
    .strict(),
]);
export type CredentialSource = z.infer<typeof credentialSource>;

export const connectionName = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'use lower-case letters, digits, ".", "_" or "-"');

const approvalSchema = z
  .object({
    /** Who may approve. */
    groups: z.array(z.string().min(1)).min(1),
    minApprovals: z.number().int().min(1).default(1),
    /** Longest grant a requester may ask for. */
    maxDuration: duration.default(3_600_000),
    /** Whether the requester must give a reason. */
    reason: z.enum(['required', 'optional']).default('required'),
    /** A pending request expires after this long. */
    timeout: duration.default(900_000),
  })
  .strict();

/** How long a session may last, and how long it may sit with nothing from the client (Teleport's client_idle_timeout). */
export const sessionLimitsSchema = z
  .object({
    maxDuration: duration.optional(),
    idleTimeout: duration.optional(),
    /** End the session when the access token that opened it expires (Teleport's disconnect_expired_cert). */
    endWithToken: z.boolean().optional(),
    /** Sessions one identity may have open on a connection at once (a bot in a loop cannot open a thousand). */
    maxConcurrent: z.number().int().min(1).optional(),
  })
  .strict();

export const accessSchema = z
  .object({
    groups: z.array(z.string().min(1)).default([]),
    clientIds: z.array(z.string().min(1)).default([]),
    subjects: z.array(z.string().min(1)).default([]),
    /**
     * Admit by token claims (CI jobs): every listed claim must match one of its globs, e.g.
     * `{ repository: acme/deploy, ref: refs/heads/main, environment: production }`. `sub` can be matched too.
     */
    claims: z.record(z.string().min(1), z.union([z.string().min(1), z.array(z.string().min(1)).min(1)])).optional(),
    /** Just-in-time access: opening the connection needs an approved, time-boxed grant. */
    approval: approvalSchema.optional(),
    /** Limits of this connection's sessions (each field overrides the top-level `sessions`). */
    session: sessionLimitsSchema.optional(),
  })
  .strict();
export type AccessConfig = z.infer<typeof accessSchema>;

/** Who decides statements held by a `review` rule, and how long a held statement waits. */
export const reviewsSchema = z
  .object({
    groups: z.array(z.string().min(1)).min(1),
    minApprovals: z.number().int().min(1).default(1),
    timeout: duration.default(600_000),
    /** Whether approvers must give a reason to approve (rejecting always needs one). */
    reason: z.enum(['required', 'optional']).default('optional'),
  })
  .strict();
export type ReviewsConfig = z.infer<typeof reviewsSchema>;

/**
 * What an AI agent's tool call (hoopctl mcp, /mcp) gets back at most: rows and bytes of a result, so one query cannot
 * flood an agent's context; a result cut short says `truncated`. A size limit for the agent, not a security control.
 */
export const agentLimitsSchema = z
  .object({
    maxRows: z.number().int().positive().max(100_000).default(100),
    maxBytes: z.number().int().positive().max(16 * 1024 * 1024).default(64 * 1024),
  })
  .strict();
export type AgentLimits = z.infer<typeof agentLimitsSchema>;

/** The fields every connection entry starts with; a protocol adds `type`, `target`, `credentials` and its rules. */
export const connectionCommonShape = {
  name: connectionName,
  description: z.string().optional(),
  access: accessSchema,
  reviews: reviewsSchema.optional(),
  mcp: agentLimitsSchema.optional(),
};

/** What the broker knows of any connection, whatever its type. */
export interface ConnectionBase {
  name: string;
  type: string;
  description?: string;
  access: AccessConfig;
  reviews?: ReviewsConfig;
  mcp?: AgentLimits;
  /** A protocol's rules, where it has any: each carries a name and an action (deny, review, allow, mask). */
  rules?: ReadonlyArray<{ name?: string; action?: string }>;
}

/** How a protocol resolves the secrets and files of a parsed entry: the broker's, so errors name the field. */
export interface ResolveContext {
  /** `resolveSecret(source, 'connections[2].credentials.password')`; a helper's secret is fetched per session. */
  secret(source: CredentialSource, field: string): Secret;
  /** Reads a file named by the config (relative to the config file); errors name the field. */
  readFile(path: string, field: string): string;
  /** The entry's path in the config (`connections[2]`), for messages. */
  field: string;
  /** Offline tools (policy check) never reach a backend: secrets are left out. */
  skipSecrets: boolean;
}
