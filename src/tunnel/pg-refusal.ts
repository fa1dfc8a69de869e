import type { Duplex } from 'node:stream';
import { createErrorResponse } from '../lib/pg-wire/error-response.js';

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;

/**
 * When a tunnel cannot open (token expired, access refused), psql would otherwise just see a closed
 * socket. This answers the start of the PostgreSQL handshake locally so psql prints the reason:
 * decline SSL/GSS, read the startup packet, send a FATAL ErrorResponse, close.
 */
export function refusePostgresClient(socket: Duplex, message: string, sqlstate = '28000'): void {
  let buffered = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), 5000);
  const onData = (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 8) {
      const len = buffered.readInt32BE(0);
      if (len < 8 || len > 10_000) return finish();
      if (buffered.length < len) return;
      const code = buffered.readInt32BE(4);
      buffered = buffered.subarray(len);
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        socket.write('N');
        continue;
      }
      return finish();
    }
  };
  const finish = () => {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.end(createErrorResponse({ severity: 'FATAL', code: sqlstate, message }));
  };
  socket.on('data', onData);
  socket.resume();
}
