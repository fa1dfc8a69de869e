import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import { HoopError, UserError } from '../lib/errors.js';
import { CLIENT_GONE } from './local-listener.js';

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
/** How long a client may take to ask for encryption and finish the TLS handshake. */
const NEGOTIATION_TIMEOUT_MS = 15_000;

export const VERIFY_HINT =
  'sslmode=verify-ca and verify-full cannot verify the local listener: its certificate is made fresh each start. ' +
  'Use sslmode=require (or prefer, or disable): this hop never leaves the machine, and TLS between the broker and ' +
  'the database is set on the broker (target.sslmode)';

/**
 * The local listener's side of PostgreSQL's encryption negotiation. A client that sends SSLRequest gets 'S' and a
 * TLS handshake with the loopback certificate; the stream returned is then the decrypted one, and the broker sees a
 * plain startup (it answers SSLRequest with 'N' for tunnel clients, who already settled encryption here).
 * GSSENCRequest gets 'N' (the client then asks for SSL or starts plain). Any other first packet — a startup, a
 * CancelRequest — is put back and the socket returned as it is, so plain clients pay nothing.
 */
export async function negotiatePostgresEncryption(socket: Socket, secureContext: () => SecureContext): Promise<Socket> {
  const timer = setTimeout(() => socket.destroy(new Error('the client did not start the PostgreSQL handshake in time')), NEGOTIATION_TIMEOUT_MS);
  try {
    for (;;) {
      const head = await readAtLeast(socket, 8);
      const code = head.readInt32BE(4);
      const isRequest = head.readInt32BE(0) === 8 && (code === SSL_REQUEST || code === GSSENC_REQUEST);
      if (!isRequest) {
        socket.unshift(head);
        return socket;
      }
      if (head.length > 8) {
        // Bytes sent before the answer could be taken as protected while they were not (CVE-2021-23214).
        throw new UserError('the client sent data before the answer to its encryption request', { code: 'PG_CLIENT_PROTOCOL' });
      }
      if (code === GSSENC_REQUEST) {
        socket.write('N');
        continue;
      }
      socket.write('S');
      return await handshake(socket, secureContext());
    }
  } finally {
    clearTimeout(timer);
  }
}

function handshake(socket: Socket, secureContext: SecureContext): Promise<Socket> {
  const secure = new TLSSocket(socket, { isServer: true, secureContext });
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      secure.off('secure', onSecure);
      secure.destroy();
      // OpenSSL's text spans lines and names source files; the alert the client sent is what says why.
      const alert = /\b(?:tlsv1|sslv3|tlsv13) alert [a-z ]+/i.exec(err.message)?.[0];
      reject(
        new UserError(`TLS handshake with the client failed (${alert ?? err.message.split('\n')[0]})`, {
          code: 'LOCAL_TLS_FAILED',
          hint: alert || /certificate/i.test(err.message) ? VERIFY_HINT : undefined,
        }),
      );
    };
    const onSecure = () => {
      secure.off('error', onError);
      secure.off('close', onClose);
      secure.pause();
      resolve(secure);
    };
    const onClose = () => onError(new Error('the client closed the connection; it may have rejected the certificate'));
    secure.once('error', onError);
    secure.once('close', onClose);
    secure.once('secure', onSecure);
  });
}

const CANCEL_REQUEST = 80877102;

/** Whether the client's first packet, once encryption is settled, is a CancelRequest (put back either way). */
export async function isCancelRequest(socket: Socket): Promise<boolean> {
  const head = await readAtLeast(socket, 8);
  socket.unshift(head);
  return head.readInt32BE(0) === 16 && head.readInt32BE(4) === CANCEL_REQUEST;
}

/** Resolves with everything buffered once at least `n` bytes came, leaving the socket paused. */
export function readAtLeast(socket: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      if (length < n) return;
      socket.pause();
      cleanup();
      resolve(Buffer.concat(chunks));
    };
    const onClose = () => {
      cleanup();
      reject(new HoopError('the client closed the connection before its startup', { code: CLIENT_GONE }));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.once('error', onError);
    socket.resume();
  });
}
