/**
 * Configuration of `http` and `kubernetes` connections: their zod schemas (the registry puts them in the broker's
 * connection union), and the resolver that turns secret sources into values the proxy can reveal.
 *
 * ```yaml
 * - name: billing-api
 *   type: http
 *   target: { url: https://billing.internal:8443, tls: { ca: /etc/ssl/billing-ca.pem } }
 *   credentials: { bearer: { env: BILLING_TOKEN } }    # | { header: { name: X-Api-Key, value: {…} } }
 *                                                      # | { basic: { user: svc, password: {…} } }
 *   access: { groups: [payments] }
 *   reviews: { groups: [payments-leads] }              # who decides requests a review rule holds
 *   defaultAction: allow
 *   rules:
 *     - { name: no-admin, match: { path: "/admin/*" }, action: deny }
 *     - { name: refunds, match: { method: POST, path: "/refunds*" }, action: review }
 *   mask: { jsonPaths: ["$.users[*].email"], detectors: [credit_card, email], strategy: redact }
 *   recordBodies: { maxBytes: 4096 }                   # request and response bodies in the recording (masked)
 *
 * - name: k8s-prod
 *   type: kubernetes
 *   target: { url: https://10.0.0.1:6443, ca: /etc/hoopctl/k8s-ca.pem }
 *   credentials: { bearer: { file: /var/run/secrets/hoopctl/k8s-token } }   # | { clientCert: { cert: {…}, key: {…} } }
 *   access: { groups: [sre] }
 *   defaultAction: deny
 *   rules:
 *     - { name: read-only, match: { verb: [get, list, watch] }, action: allow }
 *     - { name: keep-namespaces, match: { verb: delete, resource: namespaces }, action: deny }
 *     - { name: exec-needs-approval, match: { verb: create, resource: pods/exec }, action: review }
 * ```
 * Rules: src/policy/http-rules.ts. JSON paths: src/policy/http-json-mask.ts.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { z } from 'zod';
import { DETECTOR_NAMES, MASK_STRATEGIES } from '../../../policy/mask-plan.js';
import { httpPolicyShape, kubePolicyShape } from '../../../policy/http-rules.js';
import { parseJsonPath } from '../../../policy/http-json-mask.js';
import { connectionCommonShape, credentialSource, secretSource, type CredentialSource } from '../connection-schema.js';

/** What the proxy needs of a secret: the broker's `Secret` fits. */
export interface RevealableSecret {
  reveal(): string;
}

/** The broker's secret resolution (`resolveSecret(source, 'connections[2].credentials.bearer')`). */
export type ResolveSecret<S> = (source: S, fieldPath: string) => RevealableSecret;

const httpUrl = z
  .string()
  .url()
  .refine((u) => /^https?:$/.test(new URL(u).protocol), { message: 'expected an http:// or https:// URL' });

const detectorName = z.preprocess((v) => (v === 'aws_key' ? 'aws_access_key' : v), z.enum(DETECTOR_NAMES));

const jsonPath = z.string().superRefine((p, ctx) => {
  try {
    parseJsonPath(p);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
});

/** Largest JSON body the proxy buffers to mask (default 8 MiB); a larger one is refused, never passed unmasked. */
export const DEFAULT_MASK_MAX_BYTES = 8 * 1024 * 1024;

const maskSchema = z
  .strictObject({
    jsonPaths: z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(jsonPath)).default([]),
    detectors: z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(detectorName)).default([]),
    strategy: z.enum(MASK_STRATEGIES).default('redact'),
    maxBytes: z.number().int().min(1024).default(DEFAULT_MASK_MAX_BYTES),
  })
  .refine((m) => m.jsonPaths.length + m.detectors.length > 0, { message: 'a mask needs jsonPaths or detectors' });

const recordBodiesSchema = z.strictObject({ maxBytes: z.number().int().min(0).max(1024 * 1024).default(4096) });

const httpCredentials = z.union([
  z.strictObject({ header: z.strictObject({ name: z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'not an HTTP header name'), value: credentialSource }) }),
  z.strictObject({ bearer: credentialSource }),
  z.strictObject({ basic: z.strictObject({ user: z.string().min(1), password: credentialSource }) }),
]);

export const httpConnectionSchema = z.strictObject({
  ...connectionCommonShape,
  type: z.literal('http'),
  target: z.strictObject({
    url: httpUrl,
    tls: z
      .strictObject({
        /** A PEM file (relative to the config file) or inline PEM text. */
        ca: z.string().min(1).optional(),
        insecureSkipVerify: z.boolean().default(false),
        /** Mutual TLS: the certificate and key the broker presents to the backend. */
        clientCert: z.strictObject({ cert: secretSource, key: secretSource }).optional(),
      })
      .optional(),
  }),
  credentials: httpCredentials.optional(),
  ...httpPolicyShape,
  mask: maskSchema.optional(),
  recordBodies: recordBodiesSchema.optional(),
});

export const kubernetesConnectionSchema = z.strictObject({
  ...connectionCommonShape,
  type: z.literal('kubernetes'),
  target: z.strictObject({
    url: httpUrl,
    /** The API server's CA: a PEM file (relative to the config file) or inline PEM text. */
    ca: z.string().min(1).optional(),
    insecureSkipVerify: z.boolean().default(false),
  }),
  credentials: z.union([
    z.strictObject({ bearer: credentialSource }),
    z.strictObject({ clientCert: z.strictObject({ cert: secretSource, key: secretSource }) }),
  ]),
  ...kubePolicyShape,
  mask: maskSchema.optional(),
  recordBodies: recordBodiesSchema.optional(),
});

export type HttpConnectionInput = z.infer<typeof httpConnectionSchema>;
export type KubernetesConnectionInput = z.infer<typeof kubernetesConnectionSchema>;
export type HttpMaskConfig = z.infer<typeof maskSchema>;

export type ResolvedHttpCredentials =
  | { header: { name: string; value: RevealableSecret } }
  | { bearer: RevealableSecret }
  | { basic: { user: string; password: RevealableSecret } };
export type ResolvedKubernetesCredentials = { bearer: RevealableSecret } | { clientCert: { cert: RevealableSecret; key: RevealableSecret } };

/** A connection as the proxy sees it: secrets resolved, the CA read. */
export interface ResolvedHttpConnection extends Omit<HttpConnectionInput, 'credentials' | 'target'> {
  target: { url: string; tls?: { ca?: string; insecureSkipVerify: boolean; clientCert?: { cert: RevealableSecret; key: RevealableSecret } }; caPem?: string };
  credentials?: ResolvedHttpCredentials;
}
export interface ResolvedKubernetesConnection extends Omit<KubernetesConnectionInput, 'credentials' | 'target'> {
  target: { url: string; ca?: string; insecureSkipVerify: boolean; caPem?: string };
  credentials: ResolvedKubernetesCredentials;
}
export type ResolvedWebConnection = ResolvedHttpConnection | ResolvedKubernetesConnection;

/** Reads a file the config names (relative to the config file); errors name the field. */
export type ReadConfigFile = (path: string, field: string) => string;

/** Reads a CA given as a file path or as inline PEM. */
function readCaPem(ca: string, readFile: ReadConfigFile, field: string): string {
  return ca.includes('-----BEGIN') ? ca : readFile(ca, field);
}

/** Files relative to `baseDir`, for callers (tools, tests) without the broker's config loader. */
function readFileFrom(baseDir: string): ReadConfigFile {
  return (ca, field) => {
    const path = isAbsolute(ca) ? ca : join(baseDir, ca);
    try {
      return readFileSync(path, 'utf8');
    } catch (e) {
      throw new Error(`${field}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
  };
}

/**
 * Resolves a parsed http/kubernetes connection: every secret through `resolveSecret` (the broker's, so env, file
 * and value sources behave as for other connections and errors name the field), the CA file read.
 * `field` is the connection's path in the config (`connections[3]`) for messages.
 */
export function resolveWebConnection<C extends { type: 'http' | 'kubernetes' }, Src = CredentialSource>(
  raw: C,
  resolveSecret: ResolveSecret<Src>,
  options: { field?: string; baseDir?: string; readFile?: ReadConfigFile } = {},
): C extends { type: 'kubernetes' } ? ResolvedKubernetesConnection : ResolvedHttpConnection {
  const field = options.field ?? 'connection';
  const readFile = options.readFile ?? readFileFrom(options.baseDir ?? process.cwd());
  type Out = C extends { type: 'kubernetes' } ? ResolvedKubernetesConnection : ResolvedHttpConnection;
  if (raw.type === 'kubernetes') {
    const k = raw as unknown as Omit<KubernetesConnectionInput, 'credentials'> & {
      credentials: { bearer: Src } | { clientCert: { cert: Src; key: Src } };
    };
    const credentials: ResolvedKubernetesCredentials =
      'bearer' in k.credentials
        ? { bearer: resolveSecret(k.credentials.bearer, `${field}.credentials.bearer`) }
        : {
            clientCert: {
              cert: resolveSecret(k.credentials.clientCert.cert, `${field}.credentials.clientCert.cert`),
              key: resolveSecret(k.credentials.clientCert.key, `${field}.credentials.clientCert.key`),
            },
          };
    const caPem = k.target.ca ? readCaPem(k.target.ca, readFile, `${field}.target.ca`) : undefined;
    return { ...k, target: { ...k.target, ...(caPem ? { caPem } : {}) }, credentials } as unknown as Out;
  }
  const h = raw as unknown as Omit<HttpConnectionInput, 'credentials' | 'target'> & {
    target: { url: string; tls?: { ca?: string; insecureSkipVerify: boolean; clientCert?: { cert: Src; key: Src } } };
    credentials?: { header: { name: string; value: Src } } | { bearer: Src } | { basic: { user: string; password: Src } };
  };
  let credentials: ResolvedHttpCredentials | undefined;
  if (h.credentials && 'header' in h.credentials) {
    credentials = { header: { name: h.credentials.header.name, value: resolveSecret(h.credentials.header.value, `${field}.credentials.header.value`) } };
  } else if (h.credentials && 'bearer' in h.credentials) {
    credentials = { bearer: resolveSecret(h.credentials.bearer, `${field}.credentials.bearer`) };
  } else if (h.credentials && 'basic' in h.credentials) {
    credentials = { basic: { user: h.credentials.basic.user, password: resolveSecret(h.credentials.basic.password, `${field}.credentials.basic.password`) } };
  }
  const caPem = h.target.tls?.ca ? readCaPem(h.target.tls.ca, readFile, `${field}.target.tls.ca`) : undefined;
  const cc = h.target.tls?.clientCert;
  const tls = h.target.tls && {
    ...h.target.tls,
    ...(cc
      ? { clientCert: { cert: resolveSecret(cc.cert, `${field}.target.tls.clientCert.cert`), key: resolveSecret(cc.key, `${field}.target.tls.clientCert.key`) } }
      : {}),
  };
  return { ...h, target: { ...h.target, ...(tls ? { tls } : {}), ...(caPem ? { caPem } : {}) }, credentials } as unknown as Out;
}
