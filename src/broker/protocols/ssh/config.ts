/**
 * Configuration of `ssh` connections.
 *
 * ```yaml
 * - name: web-1
 *   type: ssh
 *   target: { host: web-1.internal, user: deploy, hostKey: "ssh-ed25519 AAAA…" }   # the backend's key, pinned
 *   credentials: { privateKey: { file: /etc/hoopctl/web-1.key } }                  # | password
 *   access: { groups: [sre] }
 *   allow: { sftp: true, portForwarding: false, remoteForwarding: false }
 *   rules: [...]            # command rules: src/policy/shell-rules.ts
 * ```
 */
import { z } from 'zod';
import { DETECTOR_NAMES, MASK_STRATEGIES } from '../../../policy/mask-plan.js';
import { commandPolicyShape } from '../../../policy/shell-rules.js';
import type { Secret } from '../../../lib/secret.js';
import { connectionCommonShape, credentialSource, duration, type ResolveContext } from '../connection-schema.js';

/** A pinned SSH host key: the public key line (`ssh-ed25519 AAAA…`) or its `SHA256:…` fingerprint. */
const pinnedHostKey = z
  .string()
  .trim()
  .regex(/^(SHA256:[A-Za-z0-9+/]{43}=?|(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/]+=*( .*)?)$/, 'expected "ssh-ed25519 AAAA…" (a public key line) or "SHA256:…" (its fingerprint, as ssh-keygen -lf prints it)');

export const sshConnectionSchema = z
  .object({
    ...connectionCommonShape,
    type: z.literal('ssh'),
    target: z
      .object({
        host: z.string().min(1),
        port: z.number().int().min(1).max(65535).default(22),
        user: z.string().min(1),
        /** The backend's host key, pinned: any other key refuses the session. */
        hostKey: pinnedHostKey,
        connectTimeout: duration.default(10_000),
      })
      .strict(),
    credentials: z
      .object({
        privateKey: credentialSource.optional(),
        passphrase: credentialSource.optional(),
        password: credentialSource.optional(),
        /** Rotate the key this often (`hoopctl broker rotate` does it at once); it must come from a file. */
        rotateEvery: duration.optional(),
        /** Where rotation replaces the key on the backend (relative to the user's home). */
        authorizedKeys: z.string().min(1).default('.ssh/authorized_keys'),
      })
      .strict()
      .refine((c) => c.privateKey || c.password, { message: 'give privateKey or password (or both)' })
      .refine((c) => c.rotateEvery === undefined || (c.privateKey !== undefined && 'file' in c.privateKey && !c.passphrase), {
        path: ['rotateEvery'],
        message: 'rotation writes the new key to the key file: give credentials.privateKey as { file: … } (without a passphrase)',
      }),
    /** What besides shells and exec requests the client may do. */
    allow: z
      .object({
        sftp: z.boolean().default(true),
        /** `ssh -L` / `-W`: the client reaches hosts from the backend. */
        portForwarding: z.boolean().default(false),
        /** `ssh -R`: the backend listens and its connections reach the client's side. */
        remoteForwarding: z.boolean().default(false),
        /** Environment variables a client may set (globs); others are dropped. */
        env: z.array(z.string().min(1)).default(['LANG', 'LC_*', 'TZ']),
      })
      .strict()
      .default({ sftp: true, portForwarding: false, remoteForwarding: false, env: ['LANG', 'LC_*', 'TZ'] }),
    /** Masking of exec output and of recorded terminal output (src/policy/masking.ts detectors). */
    mask: z
      .object({
        detectors: z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(z.preprocess((v) => (v === 'aws_key' ? 'aws_access_key' : v), z.enum(DETECTOR_NAMES))).min(1)),
        strategy: z.enum(MASK_STRATEGIES).default('redact'),
      })
      .strict()
      .optional(),
    /** Command rules (src/policy/shell-rules.ts documents the schema). */
    ...commandPolicyShape,
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.dynamic === 'review' && c.rules.length > 0 && !c.reviews) {
      ctx.addIssue({ code: 'custom', path: ['dynamic'], message: 'dynamic: review needs connections[].reviews (who approves) on its connection' });
    }
  });

type RawSshConnection = z.infer<typeof sshConnectionSchema>;

/** An ssh connection as the proxy sees it: key, passphrase and password resolved. */
export interface SshConnection extends Omit<RawSshConnection, 'credentials'> {
  credentials: { privateKey?: Secret; passphrase?: Secret; password?: Secret; rotateEvery?: number; authorizedKeys: string };
}

export function resolveSshConnection(raw: RawSshConnection, ctx: ResolveContext): SshConnection {
  const secret = (source: RawSshConnection['credentials']['password'], name: string) =>
    source && !ctx.skipSecrets ? ctx.secret(source, `${ctx.field}.credentials.${name}`) : undefined;
  return {
    ...raw,
    credentials: {
      privateKey: secret(raw.credentials.privateKey, 'privateKey'),
      passphrase: secret(raw.credentials.passphrase, 'passphrase'),
      password: secret(raw.credentials.password, 'password'),
      authorizedKeys: raw.credentials.authorizedKeys,
      ...(raw.credentials.rotateEvery !== undefined ? { rotateEvery: raw.credentials.rotateEvery } : {}),
    },
  };
}
