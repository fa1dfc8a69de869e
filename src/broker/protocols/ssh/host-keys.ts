import { createHash, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import ssh2 from 'ssh2';

// ssh2 is CommonJS: Node's ESM loader sees only its default export.
const { utils } = ssh2;
import { HoopError } from '../../../lib/errors.js';
import { generateParsableKeyPair } from '../../../lib/ssh-keys.js';

/** The broker's own host key: what `ssh` clients see on the tunnel, printed by `hoopctl connect`. */
export interface BrokerHostKey {
  /** OpenSSH private key text. */
  privateKey: string;
  /** `ssh-ed25519 AAAA…` */
  publicKey: string;
  /** `SHA256:…`, as `ssh-keygen -lf` and `ssh` print it. */
  fingerprint: string;
}

/** The OpenSSH fingerprint of a public key blob (the wire form of the key). */
export function fingerprintOf(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** Reads a broker host key (OpenSSH or PEM private key text); `where` names it in the error. */
export function describeKey(privateKey: string, where: string): BrokerHostKey {
  const parsed = utils.parseKey(privateKey);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key || key instanceof Error || key.getPrivatePEM() === null) {
    throw new HoopError(`the broker's SSH host key (${where}) is not a private key${key instanceof Error ? `: ${key.message}` : ''}`, { code: 'CONFIG_INVALID' });
  }
  const blob = key.getPublicSSH();
  return { privateKey, publicKey: `${key.type} ${blob.toString('base64')}`, fingerprint: fingerprintOf(blob) };
}

/**
 * The configured key, or the one kept at `path` (created there, mode 0600, on first start), so clients that
 * pinned the broker's key keep trusting it across restarts.
 */
export function loadBrokerHostKey(configured: string | undefined, path: string): BrokerHostKey & { created: boolean } {
  if (configured) return { ...describeKey(configured, 'ssh.hostKey'), created: false };
  if (existsSync(path)) return { ...describeKey(readFileSync(path, 'utf8'), path), created: false };
  const pair = generateParsableKeyPair('hoopctl-broker');
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, pair.private, { mode: 0o600, flag: 'wx' });
  return { ...describeKey(pair.private, path), created: true };
}

/** A backend host key pinned in config: a public key line or a `SHA256:` fingerprint. */
export interface PinnedHostKey {
  /** What the config says, for messages and events. */
  pinned: string;
  /** Host key algorithms to offer so the server presents the pinned key's type (absent for fingerprints). */
  algorithms?: string[];
  matches(blob: Buffer): boolean;
}

const ALGORITHMS_FOR_TYPE: Record<string, string[]> = {
  'ssh-rsa': ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'],
};

export function pinHostKey(pin: string): PinnedHostKey {
  const text = pin.trim();
  if (text.startsWith('SHA256:')) {
    const want = text.replace(/=+$/, '');
    return { pinned: want, matches: (blob) => fingerprintOf(blob) === want };
  }
  const [type = '', data = ''] = text.split(/\s+/);
  const expected = Buffer.from(data, 'base64');
  return {
    pinned: `${type} ${data}`,
    algorithms: ALGORITHMS_FOR_TYPE[type] ?? [type],
    matches: (blob) => blob.length === expected.length && timingSafeEqual(blob, expected),
  };
}
