/**
 * Rotation of an ssh connection's key (`hoopctl broker rotate`, `credentials.rotateEvery`): a new Ed25519 key pair is
 * installed through the current key — beside each line of `authorized_keys` that holds the current key, with the
 * same options — then the new key must log in, then it is written atomically to the key file, and only then is the
 * old key removed (through the new one). A step that fails leaves a key that works in both places. The file on the
 * backend is edited over SFTP and replaced by rename, so no shell and no quoting are involved.
 */
import { existsSync } from 'node:fs';
import ssh2, { type SFTPWrapper } from 'ssh2';
import { HoopError } from '../../../lib/errors.js';
import { writeFileAtomic } from '../../../lib/atomic-file.js';
import { generateParsableKeyPair } from '../../../lib/ssh-keys.js';
import { FileSecret, Secret } from '../../../lib/secret.js';
import { connectBackend } from './backend.js';
import type { SshConnection } from './config.js';
import { fingerprintOf } from './host-keys.js';

/** The key type and base64 blob of an authorized_keys line (after any options), or undefined. */
export function authorizedKey(line: string): { type: string; blob: string } | undefined {
  const m = /(?:^|\s)((?:ssh|ecdsa-sha2|sk-ssh|sk-ecdsa-sha2)-[A-Za-z0-9@.-]+)\s+([A-Za-z0-9+/]+={0,2})(?:\s|$)/.exec(line);
  return m ? { type: m[1]!, blob: m[2]! } : undefined;
}

/** `text` with a line holding the key `blob` followed by the same line holding `next` instead (options kept). */
export function addKeyBeside(text: string, blob: string, next: { type: string; blob: string }): string {
  return text
    .split('\n')
    .flatMap((line) => {
      const key = authorizedKey(line);
      return key?.blob === blob ? [line, line.replace(`${key.type} ${key.blob}`, `${next.type} ${next.blob}`)] : [line];
    })
    .join('\n');
}

/** `text` without the lines holding the key `blob`. */
export function removeKey(text: string, blob: string): string {
  return text
    .split('\n')
    .filter((line) => authorizedKey(line)?.blob !== blob)
    .join('\n');
}

function sftpOf(client: ssh2.Client): Promise<SFTPWrapper> {
  return new Promise((resolve, reject) => client.sftp((err, sftp) => (err ? reject(err) : resolve(sftp))));
}

function readRemote(sftp: SFTPWrapper, path: string): Promise<string> {
  return new Promise((resolve, reject) => sftp.readFile(path, (err: Error | undefined, data: Buffer) => (err ? reject(err) : resolve(data.toString('utf8')))));
}

/** Writes `text` to a temporary file beside `path` (mode 0600) and renames it over `path`. */
async function replaceRemote(sftp: SFTPWrapper, path: string, text: string): Promise<void> {
  const temp = `${path}.hoopctl-${process.pid}-${Date.now()}`;
  await new Promise<void>((resolve, reject) => sftp.writeFile(temp, text, { mode: 0o600 }, (err) => (err ? reject(err) : resolve())));
  await new Promise<void>((resolve, reject) => sftp.ext_openssh_rename(temp, path, (err) => (err ? reject(err) : resolve())));
}

const publicBlobOf = (privateKey: string): string => {
  const parsed = ssh2.utils.parseKey(privateKey);
  if (parsed instanceof Error) throw new HoopError(`the current key cannot be read: ${parsed.message}`, { code: 'ROTATION_FAILED', status: 502 });
  return parsed.getPublicSSH().toString('base64');
};

export async function rotateSshKey(conn: SshConnection): Promise<Record<string, unknown>> {
  const secret = conn.credentials.privateKey;
  if (!(secret instanceof FileSecret) || conn.credentials.passphrase) {
    throw new HoopError(`connection ${conn.name}: rotation writes the new key to its file; give credentials.privateKey as { file: … } without a passphrase`, {
      code: 'ROTATION_UNSUPPORTED',
      status: 409,
    });
  }
  const path = conn.credentials.authorizedKeys;
  const oldBlob = publicBlobOf(secret.reveal());
  const pair = generateParsableKeyPair(`hoopctl ${conn.name} ${new Date().toISOString()}`);
  const next = authorizedKey(pair.public)!;

  // 1. Through the current key: the new key goes in beside the current one.
  const current = await connectBackend(conn);
  let original: string;
  try {
    const sftp = await sftpOf(current.client);
    original = await readRemote(sftp, path);
    if (!original.split('\n').some((l) => authorizedKey(l)?.blob === oldBlob)) {
      throw new HoopError(`the current key is not in ${path} of ${conn.target.user}; rotation cannot replace it (set credentials.authorizedKeys)`, { code: 'ROTATION_FAILED', status: 502 });
    }
    await replaceRemote(sftp, path, addKeyBeside(original, oldBlob, next));
  } finally {
    current.client.end();
  }

  // 2. The new key must log in before anything depends on it; if it does not, the file goes back as it was.
  let fresh: Awaited<ReturnType<typeof connectBackend>>;
  try {
    fresh = await connectBackend({ ...conn, credentials: { ...conn.credentials, privateKey: new Secret(pair.private) } });
  } catch (e) {
    const back = await connectBackend(conn);
    try {
      await replaceRemote(await sftpOf(back.client), path, original);
    } finally {
      back.client.end();
    }
    throw e;
  }

  // 3. The new key is the broker's; then the old one leaves authorized_keys (through the new key).
  try {
    writeFileAtomic(secret.path, pair.private);
    // A stale KEY.pub beside it would make OpenSSH (`ssh -i KEY`) offer the old public key.
    if (existsSync(`${secret.path}.pub`)) writeFileAtomic(`${secret.path}.pub`, `${pair.public}\n`);
    secret.replace(pair.private);
    const sftp = await sftpOf(fresh.client);
    await replaceRemote(sftp, path, removeKey(await readRemote(sftp, path), oldBlob));
  } finally {
    fresh.client.end();
  }
  return {
    user: conn.target.user,
    file: secret.path,
    fingerprint: fingerprintOf(Buffer.from(next.blob, 'base64')),
    previous: fingerprintOf(Buffer.from(oldBlob, 'base64')),
  };
}
