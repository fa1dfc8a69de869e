import ssh2, { type ConnectConfig } from 'ssh2';
import type { Duplex } from 'node:stream';
import type { SshConnection } from './config.js';
import { HoopError } from '../../../lib/errors.js';
import { fingerprintOf, pinHostKey } from './host-keys.js';

/** The backend presented a host key other than the pinned one. */
export class HostKeyMismatchError extends HoopError {
  constructor(readonly presented: string, readonly expected: string, where: string, cause?: unknown) {
    super(`the host key of ${where} does not match the pinned key: presented ${presented}, expected ${expected}`, { code: 'HOST_KEY_MISMATCH', cause });
  }
}

export interface BackendConnection {
  client: import('ssh2').Client;
  /** Fingerprint of the host key the backend presented (it matched the pin). */
  hostKey: string;
}

/**
 * Connects to the backend sshd as the connection's user with the credential the broker holds, trusting only
 * the pinned host key. A different key fails with code HOST_KEY_MISMATCH and the fingerprint it presented.
 */
export function connectBackend(connection: SshConnection, options: { sock?: Duplex } = {}): Promise<BackendConnection> {
  const pin = pinHostKey(connection.target.hostKey);
  const client = new ssh2.Client();
  let presented: string | undefined;
  let mismatch = false;
  const config: ConnectConfig = {
    host: connection.target.host,
    port: connection.target.port,
    username: connection.target.user,
    readyTimeout: connection.target.connectTimeout,
    keepaliveInterval: 30_000,
    hostVerifier: (key: Buffer) => {
      presented = fingerprintOf(key);
      mismatch = !pin.matches(key);
      return !mismatch;
    },
    ...(pin.algorithms ? { algorithms: { serverHostKey: pin.algorithms as never } } : {}),
    ...(connection.credentials.privateKey ? { privateKey: connection.credentials.privateKey.reveal() } : {}),
    ...(connection.credentials.passphrase ? { passphrase: connection.credentials.passphrase.reveal() } : {}),
    ...(connection.credentials.password ? { password: connection.credentials.password.reveal() } : {}),
    ...(options.sock ? { sock: options.sock as never } : {}),
  };
  return new Promise((resolve, reject) => {
    const fail = (e: Error & { level?: string }) => {
      client.end();
      if (mismatch) {
        reject(new HostKeyMismatchError(presented ?? 'unknown', pin.pinned, `${connection.target.host}:${connection.target.port}`, e));
      } else if (e.level === 'client-authentication') {
        reject(new HoopError(`the backend refused the broker's credential for ${connection.target.user}`, { code: 'BACKEND_AUTH_FAILED', cause: e }));
      } else {
        reject(new HoopError(`cannot reach ${connection.target.host}:${connection.target.port}: ${e.message}`, { code: 'BACKEND_UNREACHABLE', cause: e }));
      }
    };
    client.once('error', fail);
    client.once('ready', () => {
      client.off('error', fail);
      client.on('error', () => undefined);
      resolve({ client, hostKey: presented ?? 'unknown' });
    });
    client.connect(config);
  });
}
