import { readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { z } from 'zod';
import { describeIssue, parseConfigSource, type ConfigSource } from './config-diagnostics.js';
import { UserError } from '../lib/errors.js';
import { FetchedSecret, FileSecret, Secret } from '../lib/secret.js';
import { runCredentialHelper } from '../lib/credential-helper.js';
import { duration, secretSource, sessionLimitsSchema, type AccessConfig, type ConnectionBase, type CredentialSource } from './protocols/connection-schema.js';
import { PROTOCOLS, protocolOf, type Connection } from './protocols/registry.js';
import type { PostgresConnection } from './protocols/postgres/config.js';
import type { SshConnection } from './protocols/ssh/config.js';
import type { HttpConnection, KubernetesConnection } from './protocols/http/index.js';
import type { ExportSinkConfig } from './export/event-export.js';
import type { NotifyTarget } from './reviews/review-notify.js';

/**
 * The broker's configuration file. Every field is validated here; an error names the field's path.
 * Secrets (backend credentials) are resolved once at load time into `Secret` values whose JSON and
 * inspect forms are redacted, so they cannot leak through the API or a log line by accident.
 */

export { Secret };

const exportName = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'use lower-case letters, digits, ".", "_" or "-"');
const batchSize = z.number().int().min(1).max(10_000).default(500);

/** Each entry is validated by its type's module (src/broker/protocols/<type>/config.ts). */
const connectionSchema = z.discriminatedUnion('type', PROTOCOLS.map((p) => p.schema) as unknown as [z.ZodObject, ...z.ZodObject[]]);

/** What GitHub Actions and GitLab CI put in their job tokens: kept with the identity unless an issuer says otherwise. */
export const DEFAULT_IDENTITY_CLAIMS = [
  'repository', 'repository_owner', 'workflow', 'job_workflow_ref', 'ref', 'ref_type', 'environment', 'run_id', 'run_attempt',
  'actor', 'sha', 'event_name', 'project_path', 'namespace_path', 'pipeline_id', 'job_id',
] as const;

const issuerSchema = z
  .object({
    issuer: z.url(),
    audience: z.string().min(1),
    /** Public client hoopctl uses for the device flow against this issuer. */
    clientId: z.string().min(1).optional(),
    scopes: z.array(z.string()).default(['openid', 'offline_access']),
    algorithms: z
      .array(z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']))
      .min(1)
      .default(['RS256', 'PS256', 'ES256', 'EdDSA']),
    maxTokenLifetime: duration.default(3_600_000),
    clockTolerance: duration.default(30_000),
    groupsClaim: z.string().default('groups'),
    /**
     * Group names this issuer may assert (`*`: any); others in its tokens are dropped. Absent: any for the first
     * issuer, none for the others, so a CI platform or a partner's IdP cannot hand itself `auditors` or the admin
     * groups of the login issuer. Identities of different issuers never merge: a subject is only unique within its issuer.
     */
    trustedGroups: z.array(z.string().min(1)).optional(),
    /**
     * Accepted `typ` headers (compared without case and `application/`). RFC 9068 access tokens say `at+jwt`, which
     * keeps an ID token or any other JWT of the issuer from passing as an access token; CI platforms' job tokens say
     * `JWT` (list it for such an issuer); `*` accepts any, or none.
     */
    tokenTypes: z.array(z.string().min(1)).min(1).default(['at+jwt']),
    /**
     * Token claims kept with the identity: recorded with every session and matched by `access.claims` and
     * `match.identity.claims`. The default names what CI platforms put in their tokens (GitHub Actions, GitLab CI).
     */
    identityClaims: z.array(z.string().min(1)).default([...DEFAULT_IDENTITY_CLAIMS]),
    /** Overrides discovery for the JWKS location (discovery is used when absent). */
    jwksUri: z.url().optional(),
  })
  .strict();

export const brokerConfigSchema = z
  .object({
    server: z
      .object({
        listen: z.string().regex(/^[^\s:]+:\d+$|^\[[0-9a-fA-F:]+\]:\d+$/, 'expected host:port').default('127.0.0.1:8080'),
        publicUrl: z.url().optional(),
        tls: z.object({ cert: z.string().min(1), key: z.string().min(1) }).strict().optional(),
        /** Plain HTTP on a non-loopback address sends tokens in clear; refused unless forced. */
        allowInsecureHttp: z.boolean().default(false),
        /** On SIGTERM: how long running sessions may go on (no new tunnels, /readyz 503) before they are ended. */
        drainGrace: duration.default(30_000),
      })
      .strict()
      .default({ listen: '127.0.0.1:8080', allowInsecureHttp: false, drainGrace: 30_000 }),
    /**
     * SQLite (embedded, one broker) or PostgreSQL (several replicas share it). The PostgreSQL `url` is a secret
     * (it carries the password); TLS follows the URL (`sslmode=verify-full&sslrootcert=…`).
     */
    store: z
      .union([
        z.object({ type: z.literal('sqlite').default('sqlite'), path: z.string().default('hoopctl-broker.db') }).strict(),
        z
          .object({
            type: z.literal('postgres'),
            url: secretSource,
            /** Connections each replica keeps open to the store. */
            poolSize: z.number().int().min(2).max(100).default(10),
          })
          .strict(),
      ])
      .default({ type: 'sqlite', path: 'hoopctl-broker.db' }),
    auth: z.object({ issuers: z.array(issuerSchema).min(1) }).strict(),
    /**
     * Groups that may list and replay every session; others see their own. `signingKey`: the Ed25519 private key
     * (PEM) that signs checkpoints of the event streams (generated next to the store when absent);
     * `checkpointSeconds`: how often the heads of growing streams are signed.
     */
    audit: z
      .object({
        groups: z.array(z.string()).default([]),
        signingKey: secretSource.optional(),
        checkpointSeconds: z.number().positive().max(86_400).default(60),
      })
      .strict()
      .default({ groups: [], checkpointSeconds: 60 }),
    /**
     * Replica liveness (PostgreSQL store): every broker process writes a heartbeat each `heartbeat`; a replica whose
     * last one is older than `lostAfter` is declared lost by a survivor, which ends its sessions ("broker lost") and
     * orphans the statements it held. Ignored with SQLite (one broker owns the file).
     */
    replicas: z
      .object({ heartbeat: duration.default(5_000), lostAfter: duration.default(20_000) })
      .strict()
      .refine((r) => r.heartbeat >= 50 && r.lostAfter >= 2 * r.heartbeat && r.lostAfter <= 30_000, {
        message: 'replicas: lostAfter must be at least twice heartbeat and at most 30s; heartbeat at least 50ms',
      })
      .default({ heartbeat: 5_000, lostAfter: 20_000 }),
    /** Defaults for every connection's session limits (`access.session` overrides per connection). */
    sessions: sessionLimitsSchema.default({}),
    /** Messages about reviews to chat (Slack incoming webhooks and alike: `{text}`) or to a JSON webhook. */
    notify: z
      .array(
        z
          .object({
            name: exportName,
            type: z.enum(['slack', 'webhook']),
            url: secretSource,
            on: z.array(z.enum(['requested', 'approved', 'rejected', 'expired', 'withdrawn', 'revoked', 'orphaned', 'consumed'])).min(1).default(['requested', 'approved', 'rejected', 'expired']),
            connections: z.array(z.string()).optional(),
          })
          .strict(),
      )
      .default([]),
    /** Prometheus metrics on a listener of their own (no token); loopback unless `allowRemote`. */
    metrics: z.object({ listen: z.string().regex(/^.+:\d{1,5}$/, 'host:port'), allowRemote: z.boolean().default(false) }).strict().optional(),
    /** Groups that may lock identities, lift locks and end live sessions (`hoopctl lock`, `hoopctl sessions end`). */
    admin: z.object({ groups: z.array(z.string()).default([]) }).strict().default({ groups: [] }),
    /** Key for the `hash` masking strategy: stable across restarts and replicas so masked values still join. */
    masking: z.object({ hashKey: secretSource.optional() }).strict().default({}),
    logging: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .strict()
      .default({ level: 'info' }),
    /**
     * Where every recorded event is also sent, in order, at least once (see src/broker/export/event-export.ts):
     * `file` (JSON lines), `stdout`, `webhook` (NDJSON POSTs; header values are secrets), `syslog` (RFC 5424).
     */
    export: z
      .array(
        z.discriminatedUnion('type', [
          z.object({ name: exportName, type: z.literal('file'), path: z.string().min(1), batchSize: batchSize }).strict(),
          z.object({ name: exportName, type: z.literal('stdout'), batchSize: batchSize }).strict(),
          z
            .object({
              name: exportName, type: z.literal('webhook'), url: z.url({ protocol: /^https?$/ }), batchSize: batchSize,
              headers: z.record(z.string().regex(/^[A-Za-z0-9-]+$/, 'a header name'), secretSource).default({}),
              timeoutSeconds: z.number().positive().max(300).default(10),
            })
            .strict(),
          z
            .object({
              name: exportName, type: z.literal('syslog'), batchSize: batchSize,
              address: z.string().regex(/^(udp|tcp):\/\/(\[[0-9a-fA-F:]+\]|[^:/\s]+):\d{1,5}$/, 'udp://host:port or tcp://host:port'),
              appName: z.string().min(1).max(48).default('hoopctl'),
            })
            .strict(),
        ]),
      )
      .default([])
      .superRefine((list, ctx) => {
        const seen = new Set<string>();
        list.forEach((e, i) => {
          if (seen.has(e.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `export name "${e.name}" is used twice (it keys the saved position)` });
          seen.add(e.name);
        });
      }),
    /**
     * The PostgreSQL front door: the broker speaks the PostgreSQL protocol on `listen`, so psql, pgbench or any driver
     * connects without hoopctl (dbname = the connection, or `<connection>/<database>`; the OIDC access token is the
     * password). TLS with `server.tls`; plain only on loopback. `publicHost` (host or host:port) is what clients are
     * told to use (`hoopctl connect --print-url`), when it differs from `listen`.
     */
    postgres: z
      .object({
        listen: z.string().regex(/^[^\s:]+:\d+$|^\[[0-9a-fA-F:]+\]:\d+$/, 'expected host:port'),
        publicHost: z.string().regex(/^[^\s/]+$/, 'a host or host:port').optional(),
      })
      .strict()
      .optional(),
    /** The broker's own SSH host key (what `ssh` clients see); generated next to the store when absent. */
    ssh: z.object({ hostKey: secretSource.optional() }).strict().default({}),
    connections: z.array(connectionSchema).default([]),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const seen = new Set<string>();
    (cfg.connections as unknown as ConnectionBase[]).forEach((c, i) => {
      if (seen.has(c.name)) ctx.addIssue({ code: 'custom', path: ['connections', i, 'name'], message: `duplicate connection name "${c.name}"` });
      seen.add(c.name);
      const reviewRule = (c.rules ?? []).findIndex((r) => r.action === 'review');
      if (reviewRule >= 0 && !c.reviews) {
        ctx.addIssue({ code: 'custom', path: ['connections', i, 'rules', reviewRule, 'action'], message: 'a review rule needs connections[].reviews (who approves) on its connection' });
      }
    });
  });

type RawConfig = z.infer<typeof brokerConfigSchema>;
export type IssuerConfig = RawConfig['auth']['issuers'][number];
/** Where the broker keeps its state; the PostgreSQL URL resolved to a secret. */
export type StoreConfig = { type: 'sqlite'; path: string } | { type: 'postgres'; url: Secret; poolSize: number };
export type { AccessConfig, Connection, PostgresConnection, SshConnection, HttpConnection, KubernetesConnection };

export interface BrokerConfig extends Omit<RawConfig, 'store' | 'connections' | 'masking' | 'ssh' | 'audit' | 'export' | 'notify'> {
  store: StoreConfig;
  connections: Connection[];
  notify: NotifyTarget[];
  export: ExportSinkConfig[];
  audit: { groups: string[]; signingKey?: Secret; checkpointSeconds: number };
  /** The broker's SSH host key, when configured (else the broker keeps one next to its store). */
  ssh: { hostKey?: Secret };
  /** Absent when not configured: the broker then uses a random per-process key (hashes do not survive a restart). */
  masking: { hashKey?: Secret };
  /** Directory the config file was read from; relative paths resolve against it. */
  baseDir: string;
}

/** Formats zod issues as `path.to.field: message` lines, with the file position and "did you mean" when known. */
function formatIssues(error: z.ZodError, input: unknown, source?: ConfigSource): string {
  return error.issues.flatMap((i) => describeIssue(i, brokerConfigSchema, input, source)).map((l) => `  ${l}`).join('\n');
}

export function resolveSecret(source: CredentialSource, field: string, env: NodeJS.ProcessEnv, baseDir: string): Secret {
  if ('value' in source) return new Secret(source.value);
  // A helper runs when a session needs its secret (src/broker/session-credentials.ts), not at load: a secret
  // manager that is down for a moment refuses sessions with the reason, it does not stop the broker.
  if ('command' in source) {
    return new FetchedSecret(() => runCredentialHelper(source.command, { timeoutMs: source.timeout, cwd: baseDir, env }), source.cacheFor);
  }
  if ('env' in source) {
    const v = env[source.env];
    if (v === undefined) throw new UserError(`invalid broker config:\n  ${field}: environment variable ${source.env} is not set`, { code: 'CONFIG_INVALID' });
    return new Secret(v);
  }
  const path = isAbsolute(source.file) ? source.file : join(baseDir, source.file);
  return new FileSecret(readConfigFile(source.file, field, baseDir).replace(/\r?\n$/, ''), path);
}

/** Reads a file the config names (relative to the config file); an error names the field. */
export function readConfigFile(file: string, field: string, baseDir: string): string {
  const path = isAbsolute(file) ? file : join(baseDir, file);
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new UserError(`invalid broker config:\n  ${field}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? e}`, { code: 'CONFIG_INVALID' });
  }
}

/** The `field: problem` lines of a config error (a UserError from resolveSecret, or a plain `field: …` error). */
export function configProblemLines(e: unknown): string[] {
  const message = e instanceof Error ? e.message : String(e);
  return message.replace(/^invalid broker config:\n/, '').split('\n').map((l) => l.trim()).filter(Boolean);
}

export interface ParseOptions {
  env?: NodeJS.ProcessEnv;
  baseDir?: string;
  /** 'skip' leaves secrets unresolved: for offline tools (policy check) that never reach a backend. */
  secrets?: 'resolve' | 'skip';
  /**
   * Collects unreadable secrets and unsafe listen addresses here instead of throwing, so a caller can report them
   * together with the problems it finds itself (`hoopctl broker check`). The config returned then lacks those secrets.
   */
  problems?: string[];
  /** The YAML the input was read from, so a problem can name its line and column. */
  source?: ConfigSource;
}

export function parseBrokerConfig(input: unknown, options: ParseOptions = {}): BrokerConfig {
  const skipSecrets = options.secrets === 'skip';
  const env = options.env ?? process.env;
  const baseDir = options.baseDir ?? process.cwd();
  const result = brokerConfigSchema.safeParse(input ?? {});
  if (!result.success) {
    throw new UserError(`invalid broker config:\n${formatIssues(result.error, input, options.source)}`, { code: 'CONFIG_INVALID' });
  }
  const raw = result.data;
  // Every unreadable secret or file is reported at once (field by field), not only the first one met.
  const problems: string[] = [];
  const collect = <T>(read: () => T): T | undefined => {
    try {
      return read();
    } catch (e) {
      problems.push(...configProblemLines(e));
      return undefined;
    }
  };
  const secret = (source: CredentialSource | undefined, field: string) =>
    source && !skipSecrets ? collect(() => resolveSecret(source, field, env, baseDir)) : undefined;
  // A secret or file that cannot be read stands in as empty so the rest of its connection is still checked;
  // `problems` fails the load.
  const connections = raw.connections.map((c, i): Connection =>
    protocolOf((c as { type: string }).type).resolve(c, {
      secret: (source, field) => collect(() => resolveSecret(source, field, env, baseDir)) ?? new Secret(''),
      readFile: (path, field) => collect(() => readConfigFile(path, field, baseDir)) ?? '',
      field: `connections[${i}]`,
      skipSecrets,
    }),
  );
  if (raw.metrics && !raw.metrics.allowRemote && !isLoopback(splitHostPort(raw.metrics.listen)[0])) {
    problems.push('metrics.listen: metrics are served without a token; listen on loopback or set metrics.allowRemote: true');
  }
  const [host] = splitHostPort(raw.server.listen);
  if (!raw.server.tls && !raw.server.allowInsecureHttp && !isLoopback(host)) {
    problems.push(`server.listen: plain HTTP on non-loopback address ${host} would send tokens in clear; configure server.tls or set server.allowInsecureHttp: true`);
  }
  if (raw.postgres && !raw.server.tls && !isLoopback(splitHostPort(raw.postgres.listen)[0])) {
    problems.push(
      `postgres.listen: the PostgreSQL front door on non-loopback address ${splitHostPort(raw.postgres.listen)[0]} would take access tokens as passwords in clear; configure server.tls (its certificate serves the front door too) or listen on loopback`,
    );
  }
  const masking = { hashKey: secret(raw.masking.hashKey, 'masking.hashKey') };
  const ssh = { hostKey: secret(raw.ssh.hostKey, 'ssh.hostKey') };
  const audit = { ...raw.audit, signingKey: secret(raw.audit.signingKey, 'audit.signingKey') };
  const store: StoreConfig =
    raw.store.type === 'postgres'
      ? { type: 'postgres', url: secret(raw.store.url, 'store.url') ?? new Secret(''), poolSize: raw.store.poolSize }
      : { type: 'sqlite', path: raw.store.path };
  const exports: ExportSinkConfig[] = raw.export.map((e, i) => {
    if (e.type === 'webhook') {
      const headers = Object.fromEntries(Object.entries(e.headers).map(([k, v]) => [k, secret(v, `export[${i}].headers.${k}`)!]));
      return { ...e, headers };
    }
    if (e.type === 'file') return { ...e, path: isAbsolute(e.path) ? e.path : join(baseDir, e.path) };
    return e;
  });
  const notify: NotifyTarget[] = raw.notify.map((n, i) => ({ ...n, url: secret(n.url, `notify[${i}].url`)! }));
  if (problems.length > 0 && options.problems) options.problems.push(...problems);
  else if (problems.length > 0) throw new UserError(`invalid broker config:\n${problems.map((p) => `  ${p}`).join('\n')}`, { code: 'CONFIG_INVALID' });
  return { ...raw, store, connections, masking, ssh, audit, export: exports, notify, baseDir };
}

export function loadBrokerConfig(path: string, env: NodeJS.ProcessEnv = process.env, options: Pick<ParseOptions, 'secrets' | 'problems'> = {}): BrokerConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UserError(`cannot read broker config ${path}: ${(e as NodeJS.ErrnoException).code ?? e}`, { code: 'CONFIG_UNREADABLE' });
  }
  let parsed: ReturnType<typeof parseConfigSource>;
  try {
    parsed = parseConfigSource(path, text);
  } catch (e) {
    throw new UserError(`broker config ${path} is not valid YAML: ${(e as Error).message}`, { code: 'CONFIG_INVALID' });
  }
  const dir = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) || '/' : process.cwd();
  return parseBrokerConfig(parsed.value, { env, baseDir: dir.startsWith('/') ? dir : `${process.cwd()}/${dir}`, source: parsed.source, ...options });
}

export function splitHostPort(listen: string): [string, number] {
  const i = listen.lastIndexOf(':');
  return [listen.slice(0, i).replace(/^\[|\]$/g, ''), Number(listen.slice(i + 1))];
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
