/**
 * The PostgreSQL local listener's per-tunnel password: after encryption is settled, the listener reads the client's
 * startup, asks for a password (AuthenticationCleartextPassword: the hop is loopback, and the password opens this one
 * tunnel only), checks it, and then puts the startup back for the broker, which answers AuthenticationOk as it always
 * did — the broker's own credential to the database is untouched. A CancelRequest carries no password: it already
 * holds a key only the tunnel's own clients were given.
 */
import { timingSafeEqual, createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import { HoopError } from '../lib/errors.js';
import { createErrorResponse } from '../lib/pg-wire/error-response.js';
import { CLIENT_GONE, PEER_REFUSED } from './local-listener.js';
import { readAtLeast } from './pg-encryption.js';

const CANCEL_REQUEST = 80877102;
/** Startup packets are small; libpq caps them at 10000 bytes, as does the server. */
const MAX_STARTUP = 10_000;
const MAX_PASSWORD_MESSAGE = 1024;
const GATE_TIMEOUT_MS = 60_000;

/** AuthenticationCleartextPassword: 'R', length 8, code 3. */
const ASK_PASSWORD = Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 3]);

/** Constant-time comparison of what the client sent with the tunnel's password. */
export function passwordMatches(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/**
 * Resolves with the socket, its startup put back, once the client gave `password`; rejects with PEER_REFUSED (the
 * client was told with a FATAL 28P01) or CLIENT_GONE.
 */
export async function requirePostgresPassword(socket: Socket, password: string): Promise<Socket> {
  const timer = setTimeout(() => socket.destroy(), GATE_TIMEOUT_MS);
  try {
    const startup = await readFrame(socket, 0);
    if (startup.length >= 8 && startup.readInt32BE(4) === CANCEL_REQUEST) {
      socket.unshift(startup);
      return socket;
    }
    socket.write(ASK_PASSWORD);
    const reply = await readFrame(socket, 1).catch((e: unknown) => {
      throw isGone(e) ? refused('the client closed the connection instead of giving the tunnel password') : e;
    });
    if (reply[0] !== 0x70) throw refuse(socket, 'the client did not answer the password request');
    const given = reply.subarray(5, reply.length - (reply.at(-1) === 0 ? 1 : 0)).toString('utf8');
    if (!passwordMatches(given, password)) throw refuse(socket, "wrong or no password for this tunnel (use the one `hoopctl connect` printed, or its pgpass file)");
    socket.unshift(startup);
    return socket;
  } finally {
    clearTimeout(timer);
  }
}

function isGone(e: unknown): boolean {
  return e instanceof HoopError && e.code === CLIENT_GONE;
}

function refused(message: string): HoopError {
  return new HoopError(message, { code: PEER_REFUSED });
}

/** Tells the client why (psql prints it) and returns the error to reject with. */
function refuse(socket: Socket, message: string): HoopError {
  socket.end(createErrorResponse({ severity: 'FATAL', code: '28P01', message: `hoopctl: ${message}` }));
  return refused(message);
}

/**
 * One length-prefixed frame: a startup (no type byte, `typeBytes` 0) or a typed message (1). Anything left over
 * after it is put back on the socket; a frame of an impossible length is a refusal.
 */
async function readFrame(socket: Socket, typeBytes: 0 | 1): Promise<Buffer> {
  let buf = await readAtLeast(socket, typeBytes + 4);
  const len = buf.readInt32BE(typeBytes);
  const max = typeBytes === 0 ? MAX_STARTUP : MAX_PASSWORD_MESSAGE;
  if (len < 4 + (typeBytes === 0 ? 4 : 0) || len > max) throw refuse(socket, 'the client did not speak the PostgreSQL protocol');
  const total = typeBytes + len;
  while (buf.length < total) {
    socket.unshift(buf);
    buf = await readAtLeast(socket, total);
  }
  if (buf.length > total) socket.unshift(buf.subarray(total));
  return buf.subarray(0, total);
}
