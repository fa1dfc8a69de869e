import { EventEmitter } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createSecureContext, TLSSocket, type SecureContext } from 'node:tls';
import { HoopError, errorMessage } from '../../lib/errors.js';
import { createErrorResponse } from '../../lib/pg-wire/error-response.js';
import { AuthCode, BackendCode, FrontendCode, StartupCode } from '../../lib/pg-wire/message-codes.js';
import { Writer } from '../../lib/pg-wire/buffer-writer.js';
import type { AuthenticateToken } from '../auth/request-auth.js';
import { splitHostPort } from '../config.js';
import { clientAddress } from '../http-util.js';
import { createStartupMessage, parseStartupMessage, type StartupMessage } from '../protocols/postgres/messages.js';
import { StreamEndedError, StreamReader } from '../protocols/postgres/stream-reader.js';
import { fetchSessionCredentials } from '../session-credentials.js';
import { openSession, runSession, type AdmittedSession, type OpenedSession, type SessionRunnerDeps } from '../session-runner.js';
import { storeUnavailable } from '../store/store-errors.js';

/** Largest startup-phase message, as in PostgreSQL (MAX_STARTUP_PACKET_LENGTH). */
const MAX_STARTUP_PACKET = 10_000;
/** Largest password message: an access token (JWTs with many groups run to a few kilobytes). */
const MAX_PASSWORD_MESSAGE = 64 * 1024;
/** A client that has not authenticated by then is disconnected, as PostgreSQL's authentication_timeout (60 s). */
const HANDSHAKE_TIMEOUT_MS = 60_000;
/** The `via` recorded in a front-door session's client info. */
export const FRONT_DOOR_VIA = 'pg-front-door';
/** The `path` of a front-door token rejection in the audit stream (the HTTP side records the request path). */
export const FRONT_DOOR_AUDIT_PATH = 'postgres-front-door';

export interface PgFrontDoorDeps extends SessionRunnerDeps {
  authenticateToken: AuthenticateToken;
  /** Whether the broker is draining (SIGTERM): it then takes no new sessions, as at the tunnel endpoint. */
  draining?: () => boolean;
}

export interface PgFrontDoorOptions {
  listen: string;
  /** The broker's certificate and key (server.tls): clients then must use TLS. Absent: plain, loopback only (config checks that). */
  tls?: { cert: Buffer; key: Buffer };
}

export interface PgFrontDoor {
  /** host:port the listener is bound to. */
  address: string;
  close(): Promise<void>;
}

/** A refusal the client reads as an ErrorResponse: FATAL, its SQLSTATE and message. */
class Refusal extends Error {
  constructor(readonly code: string, message: string, readonly hint?: string) {
    super(message);
  }
}

/**
 * The broker's PostgreSQL listener: any PostgreSQL client connects without hoopctl. Per connection: SSLRequest → TLS
 * (or 'N' on a plain loopback listener); StartupMessage, whose `database` names the connection (`<connection>` or
 * `<connection>/<database>`); AuthenticationCleartextPassword, whose answer is the OIDC access token, verified and
 * audited as the HTTP side's bearer tokens; admission as a tunnel's (locks, access, grants, slots); then the same
 * session runner as a tunnel, handed the client's socket with its startup message re-emitted (the database rewritten
 * to the one inside the connection, the token never) — the postgres module answers that startup as it does a tunnel's.
 */
export async function startPgFrontDoor(deps: PgFrontDoorDeps, options: PgFrontDoorOptions): Promise<PgFrontDoor> {
  const { logger } = deps;
  const secureContext = options.tls ? createSecureContext({ cert: options.tls.cert, key: options.tls.key }) : undefined;
  const sockets = new Set<Socket>();
  const running = new Set<Promise<void>>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const served = serveClient(deps, socket, secureContext).catch((e: unknown) => {
      logger.error({ err: errorMessage(e) }, 'postgres front door: client failed');
      socket.destroy();
    });
    running.add(served);
    void served.finally(() => running.delete(served));
  });
  const [host, port] = splitHostPort(options.listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (e) => logger.error({ err: errorMessage(e) }, 'postgres front door listener failed'));
  const a = server.address() as AddressInfo;
  const address = `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  logger.info({ address, tls: Boolean(secureContext) }, 'postgres front door listening');
  return {
    address,
    async close() {
      // Live sessions are told why they end by the session registry (the tunnel endpoint's close ends them all);
      // here the listener stops and what is left is cut once they had their moment.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.race([Promise.allSettled([...running]), delay(2000)]);
      for (const s of sockets) s.destroy();
      await Promise.race([Promise.allSettled([...running]), delay(5000)]);
      await closed;
    },
  };
}

async function serveClient(deps: PgFrontDoorDeps, raw: Socket, secureContext: SecureContext | undefined): Promise<void> {
  const { logger } = deps;
  raw.setNoDelay(true);
  const clientAddr = clientAddress({ socket: raw });
  let socket: Socket = raw;
  let reader = new StreamReader(socket);
  const timer = setTimeout(() => socket.destroy(), HANDSHAKE_TIMEOUT_MS);
  const refuse = async (r: Refusal) => {
    reader.release();
    await write(socket, createErrorResponse({ severity: 'FATAL', code: r.code, message: r.message, ...(r.hint ? { hint: r.hint } : {}) }));
    socket.end();
  };
  let startup: StartupMessage;
  let token: string;
  try {
    // ---- encryption negotiation and the startup message
    let tls = false;
    for (;;) {
      const length = (await reader.read(4)).readInt32BE(0);
      if (length < 8 || length > MAX_STARTUP_PACKET) throw new Refusal('08P01', `invalid startup packet length ${length}`);
      const body = await reader.read(length - 4);
      const code = body.readInt32BE(0);
      if (code === StartupCode.SSLRequest && !tls) {
        if (length !== 8) throw new Refusal('08P01', 'invalid length of encryption request');
        if (!secureContext) {
          await write(socket, Buffer.from('N'));
          continue;
        }
        // Nothing may follow the SSLRequest before the handshake (CVE-2021-23214): bytes already buffered are refused.
        const early = reader.release();
        if (early.length > 0) {
          socket.destroy();
          return;
        }
        await write(socket, Buffer.from('S'));
        const secure = new TLSSocket(raw, { isServer: true, secureContext });
        secure.on('error', () => undefined);
        await new Promise<void>((resolve, reject) => {
          secure.once('secure', resolve);
          secure.once('error', reject);
          secure.once('close', () => reject(new Error('client closed during the TLS handshake')));
        });
        socket = secure;
        reader = new StreamReader(socket);
        tls = true;
        continue;
      }
      if (code === StartupCode.GSSENCRequest) {
        if (length !== 8) throw new Refusal('08P01', 'invalid length of encryption request');
        await write(socket, Buffer.from('N'));
        continue;
      }
      if (code === StartupCode.CancelRequest) {
        // A cancel carries no token: its key alone names the session, as with PostgreSQL, and only a session opened
        // here takes such a cancel (CancelRegistry.cancel). It is recorded in that session; no session of its own.
        clearTimeout(timer);
        const frame = Buffer.alloc(4);
        frame.writeInt32BE(length);
        socket.unshift(Buffer.concat([frame, body, reader.release()]));
        const runtime = deps.protocols.ofType('postgres');
        if (runtime.cancel) await runtime.cancel(socket, { clientAddr, via: FRONT_DOOR_VIA, logger });
        else socket.destroy();
        return;
      }
      if (code >>> 16 !== 3) throw new Refusal('08P01', `unsupported frontend protocol ${code >>> 16}.${code & 0xffff}: the broker supports 3.0`);
      if (secureContext && !tls) {
        throw new Refusal('28000', 'the hoopctl PostgreSQL front door requires TLS: the access token is sent as the password', 'connect with sslmode=verify-full (or sslmode=require)');
      }
      startup = parseStartupMessage(body);
      break;
    }
    // ---- the token, as a cleartext password (inside TLS, or on loopback)
    await write(socket, new Writer().addInt32(AuthCode.CleartextPassword).frame(BackendCode.Authentication));
    const head = await reader.read(5);
    if (head[0] !== FrontendCode.Password) throw new Refusal('08P01', `expected a password message, got message type 0x${head[0]!.toString(16)}`);
    const len = head.readInt32BE(1);
    if (len < 5 || len > MAX_PASSWORD_MESSAGE) throw new Refusal('08P01', `invalid password message length ${len}`);
    const body = await reader.read(len - 4);
    token = body.subarray(0, body.indexOf(0) >= 0 ? body.indexOf(0) : body.length).toString('utf8');
  } catch (e) {
    clearTimeout(timer);
    if (e instanceof Refusal) return refuse(e);
    reader.release();
    if (!(e instanceof StreamEndedError)) logger.debug({ err: errorMessage(e), clientAddr }, 'postgres front door: handshake failed');
    socket.destroy();
    return;
  }
  clearTimeout(timer);

  // ---- who, and where to
  const requested = startup.parameters.database ?? '';
  const slash = requested.indexOf('/');
  const name = slash >= 0 ? requested.slice(0, slash) : requested;
  const database = slash >= 0 ? requested.slice(slash + 1) : undefined;
  const peer = { socket: raw };
  let identity;
  try {
    identity = await deps.authenticateToken(token || undefined, { clientAddr, path: FRONT_DOOR_AUDIT_PATH });
  } catch (e) {
    return refuse(refusalOf(e, logger));
  }
  let admittedConn: Awaited<ReturnType<PgFrontDoorDeps['admission']['admitSession']>>;
  try {
    if (!name) throw new HoopError('no connection named: use dbname=<connection> (or <connection>/<database>)', { code: 'NOT_FOUND', status: 404 });
    if (deps.draining?.()) throw new Refusal('57P03', 'hoopctl: the broker is draining (shutting down): it takes no new sessions', 'connect again: the load balancer sends you to another broker');
    admittedConn = await deps.admission.admitSession(identity, name, peer);
  } catch (e) {
    return refuse(refusalOf(e, logger));
  }
  const { connection, grant, release } = admittedConn;
  let opened: OpenedSession;
  try {
    if (connection.type !== 'postgres') {
      const reason = `connection ${name} is a ${connection.type} connection; the PostgreSQL front door serves postgres connections`;
      await deps.sessions.refuse(identity, name, connection.type, clientAddr, reason);
      throw new Refusal('3D000', reason, `use \`hoopctl connect ${name}\``);
    }
    try {
      await fetchSessionCredentials(connection, logger);
    } catch (e) {
      await deps.sessions.refuse(identity, connection.name, connection.type, clientAddr, errorMessage(e));
      throw e;
    }
    const activity = new EventEmitter();
    const admitted: AdmittedSession = {
      identity, connection, clientAddr, activity, detach: false, cancelKeyAlone: true,
      client: {
        via: FRONT_DOOR_VIA, tls: socket instanceof TLSSocket,
        ...(startup.parameters.application_name ? { agent: startup.parameters.application_name.slice(0, 200) } : {}),
      },
      ...(grant ? { grant } : {}),
    };
    opened = await openSession(deps, admitted);
    // The module reads the client's startup itself, as a tunnel delivers it: re-emitted, with the database inside
    // the connection (or none: the connection's default) and without the token, ahead of whatever the client sent next.
    const { database: _asked, ...parameters } = startup.parameters;
    const rewritten = createStartupMessage(database ? { ...parameters, database } : parameters);
    const leftover = reader.release();
    socket.on('data', () => activity.emit('message'));
    socket.unshift(leftover.length > 0 ? Buffer.concat([rewritten, leftover]) : rewritten);
    await runSession(deps, socket, admitted, opened);
  } catch (e) {
    release();
    return refuse(e instanceof Refusal ? e : refusalOf(e, logger));
  }
  release();
}

/** A broker refusal in PostgreSQL's terms: the SQLSTATE a client (and its user) expects for it. */
function refusalOf(e: unknown, logger: PgFrontDoorDeps['logger']): Refusal {
  if (e instanceof Refusal) return e;
  const unavailable = storeUnavailable(e);
  if (unavailable) {
    logger.error({ err: errorMessage(e) }, 'store refused a write: refusing a front-door session');
    return new Refusal('57P03', `hoopctl: ${unavailable.message}`);
  }
  if (e instanceof HoopError) {
    const text = `hoopctl: ${e.message}`;
    if (e.status === 401) return new Refusal('28P01', text, 'the password is an OIDC access token: pass a fresh one (PGPASSWORD="$(hoopctl connect --print-token <connection>)")');
    if (e.status === 404) return new Refusal('3D000', text, 'dbname names a hoopctl connection (`hoopctl connections`), optionally <connection>/<database>');
    if (e.status === 403) return new Refusal('42501', text, e.hint);
    return new Refusal('08006', text, e.hint);
  }
  logger.error({ err: errorMessage(e) }, 'postgres front door: session failed');
  return new Refusal('XX000', 'hoopctl: internal error');
}

function write(socket: Socket, data: Buffer): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed || !socket.writable) return resolve();
    socket.write(data, () => resolve());
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
