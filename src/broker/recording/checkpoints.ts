/**
 * Signed checkpoints of event streams. The hash chain shows that no event was changed, reordered or dropped —
 * against anyone who cannot recompute it. Someone with write access to the store can rewrite a stream and its
 * hashes together; a checkpoint, the broker's Ed25519 signature over a stream's head (stream, seq, hash), is what
 * they cannot forge without the broker's key. `hoopctl audit verify` checks both, against a public key the
 * auditor pins (`--public-key`) or, failing that, the one the broker advertises.
 *
 * A checkpoint is itself an event of the stream (`checkpoint`: `{ seq, hash, keyId, signature }`, signing the
 * event before it). The broker writes one when a session ends and, for streams still growing (the audit stream,
 * long sessions), periodically.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { StoredEvent } from '../store/store.js';
import { UserError } from '../../lib/errors.js';

export const CHECKPOINT_EVENT = 'checkpoint';

/** What is signed: a domain-separated, unambiguous rendering of the head. */
export function checkpointMessage(stream: string, seq: number, hash: string): Buffer {
  return Buffer.from(`hoopctl-checkpoint/v1\n${stream}\n${seq}\n${hash}`, 'utf8');
}

/** `SHA256:<base64>` of the public key's SubjectPublicKeyInfo, as ssh-keygen prints fingerprints. */
export function keyIdOf(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return `SHA256:${createHash('sha256').update(der).digest('base64').replace(/=+$/, '')}`;
}

export interface CheckpointSigner {
  keyId: string;
  publicKeyPem: string;
  sign(stream: string, seq: number, hash: string): string;
}

function signerFrom(privateKey: KeyObject): CheckpointSigner {
  const publicKey = createPublicKey(privateKey);
  return {
    keyId: keyIdOf(publicKey),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    sign: (stream, seq, hash) => sign(null, checkpointMessage(stream, seq, hash), privateKey).toString('base64'),
  };
}

/** An Ed25519 private key in PEM; `where` (a config field or a path) names it in the error. */
export function parseCheckpointKey(pem: string, where: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (e) {
    throw new UserError(`invalid broker config:\n  ${where}: not a PEM private key (${(e as Error).message})`, { code: 'CONFIG_INVALID' });
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new UserError(`invalid broker config:\n  ${where}: the audit signing key must be Ed25519, not ${key.asymmetricKeyType}`, { code: 'CONFIG_INVALID' });
  }
  return key;
}

/**
 * The broker's signing key: configured (`audit.signingKey`, an Ed25519 private key in PEM), or kept next to the
 * store, created 0600 on first start. The configured form lets the key live apart from the data it vouches for.
 */
export function loadCheckpointSigner(configured: string | undefined, path: string): CheckpointSigner & { created: boolean } {
  const parse = parseCheckpointKey;
  if (configured) return { ...signerFrom(parse(configured, 'audit.signingKey')), created: false };
  if (existsSync(path)) return { ...signerFrom(parse(readFileSync(path, 'utf8'), path)), created: false };
  const { privateKey } = generateKeyPairSync('ed25519');
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  return { ...signerFrom(privateKey), created: true };
}

export interface CheckpointCheck {
  ok: boolean;
  /** How many checkpoints verified. */
  checkpoints: number;
  /** The last event a valid checkpoint covers (0: none). */
  signedThrough: number;
  /** Events after the last checkpoint (not yet vouched for by a signature). */
  unsignedTail: number;
  /** Key ids of the checkpoints (normally one). */
  keyIds: string[];
  brokenAt?: number;
  reason?: string;
}

/**
 * Checks every checkpoint of a stream whose hash chain is already known to be intact: it must sign the event
 * right before it (seq and hash), with the given public key.
 */
export function verifyCheckpoints(events: readonly StoredEvent[], publicKeyPem: string): CheckpointCheck {
  const publicKey = createPublicKey(publicKeyPem);
  const expectedKeyId = keyIdOf(publicKey);
  let signedThrough = 0;
  let checkpoints = 0;
  const keyIds = new Set<string>();
  const fail = (e: StoredEvent, reason: string): CheckpointCheck => ({ ok: false, checkpoints, signedThrough, unsignedTail: 0, keyIds: [...keyIds], brokenAt: e.seq, reason });
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    if (e.type !== CHECKPOINT_EVENT) continue;
    const d = e.data as { seq?: unknown; hash?: unknown; keyId?: unknown; signature?: unknown };
    const before = events[i - 1];
    if (!before || d.seq !== before.seq || d.hash !== before.hash) return fail(e, 'the checkpoint does not sign the event before it');
    if (typeof d.keyId === 'string') keyIds.add(d.keyId);
    if (d.keyId !== expectedKeyId) return fail(e, `signed by key ${String(d.keyId)}, not ${expectedKeyId}`);
    const ok = typeof d.signature === 'string' && verify(null, checkpointMessage(e.stream, before.seq, before.hash), publicKey, Buffer.from(d.signature, 'base64'));
    if (!ok) return fail(e, 'the signature does not match: the events it covers were rewritten');
    checkpoints++;
    signedThrough = e.seq;
  }
  const last = events.at(-1);
  return { ok: true, checkpoints, signedThrough, unsignedTail: last ? last.seq - signedThrough : 0, keyIds: [...keyIds] };
}
