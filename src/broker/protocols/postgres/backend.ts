import { readFileSync } from 'node:fs';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { checkServerIdentity, connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import type { PostgresConnection } from './config.js';
import { BackendConnectError } from './errors.js';
import { BackendCode, codeName } from '../../../lib/pg-wire/message-codes.js';
import {
  createPasswordMessage,
  createSASLInitialResponse,
  createSASLResponse,
  createSSLRequest,
  createStartupMessage,
  parseAuthentication,
  parseBackendKeyData,
  parseErrorResponse,
  parseParameterStatus,
  parseReadyForQuery,
  type CancelKey,
  type ErrorFields,
  type TransactionStatus,
} from './messages.js';
import { md5PasswordResponse, SCRAM_MECHANISM, ScramError, scramClientFinal, scramClientFirst, verifyScramServerFinal } from './scram.js';
import { StreamReader } from './stream-reader.js';

/** A backend connection that completed startup and authentication and is ready for queries. */
export interface BackendSession {
  /** A net.Socket, or a tls.TLSSocket when the session is encrypted; paused, ready for the relay. */
  socket: Socket;
  /** ParameterStatus values in the order the server sent them. */
  parameters: Array<{ name: string; value: string }>;
  /** The server's BackendKeyData, needed to cancel a running query. */
  key?: CancelKey;
  transactionStatus: TransactionStatus;
  /** Bytes the server sent after ReadyForQuery, to be relayed first. */
  leftover: Buffer;
  tls: boolean;
  notices: ErrorFields[];
  /** The role it logged in as. */
  user?: string;
  /** Set when the backend came through a pool (backend-pool.ts): how the session reads it and gives it back. */
  lease?: BackendLease;
}

/** What a session holds of a backend from a pool (backend-pool.ts), beside the socket. */
export interface BackendLease {
  /** The pool's name of the backend (`b7`): recorded, so sessions that shared one can be told; never its pid. */
  readonly id: string;
  /** Whether an earlier session used the backend. */
  readonly reused: boolean;
  /** Aborted when the backend is handed back: the relay stops reading (pumpChunks) and leaves the socket open. */
  readonly handedBack: AbortSignal;
  /**
   * Hands the backend back, to be reset and kept; the caller must not touch the socket after true. False when the
   * pool will not take it (closed, reloaded, too old, unread bytes): the caller closes it as any backend.
   */
  giveBack(): boolean;
}

export interface ConnectBackendOptions {
  /** Opens the TCP connection; injected by tests. Defaults to net.connect. */
  connect?: (host: string, port: number) => Socket;
  /** The database to start in, as routed from the client's startup; default `conn.target.database`. */
  database?: string;
}

/** Startup parameters a client may pass through to the backend; matched case-insensitively. */
export const FORWARDED_PARAMETERS = ['application_name', 'client_encoding', 'DateStyle', 'TimeZone', 'IntervalStyle', 'extra_float_digits'];

/** Largest message accepted from a server during authentication. */
const MAX_HANDSHAKE_MESSAGE = 1024 * 1024;

/**
 * Connects to the connection's target as its configured user: TCP, TLS per `sslmode`, StartupMessage,
 * authentication (trust, cleartext, md5, SCRAM-SHA-256), then collects ParameterStatus and
 * BackendKeyData until ReadyForQuery. Errors are BackendConnectError; their messages are the server's
 * own words or a description of the network failure, never the password.
 */
export async function connectBackend(
  conn: PostgresConnection,
  params: Record<string, string>,
  options: ConnectBackendOptions = {},
): Promise<BackendSession> {
  const { host, port, connectTimeout } = conn.target;
  const password = conn.credentials.password?.reveal();
  const open = options.connect ?? ((h: string, p: number) => netConnect({ host: h, port: p }));
  let socket: Socket = open(host, port);
  const timer = setTimeout(() => {
    socket.destroy(new BackendConnectError(`timed out after ${connectTimeout} ms connecting to ${host}:${port}`, { code: 'BACKEND_UNREACHABLE' }));
  }, connectTimeout);
  try {
    await waitConnected(socket, host, port);
    const upgraded = await negotiateTls(socket, conn);
    socket = upgraded.socket;
    const reader = new StreamReader(socket);
    const startup: Record<string, string> = { user: conn.credentials.user, database: options.database ?? conn.target.database };
    for (const [name, value] of Object.entries(params)) if (!(name in startup)) startup[name] = value;
    socket.write(createStartupMessage(startup));
    const session = await authenticate(socket, reader, conn.credentials.user, password, upgraded.tls);
    session.leftover = reader.release();
    session.user = conn.credentials.user;
    socket.setNoDelay(true);
    // The relay installs its own handlers; until then a late error must not crash the process.
    socket.on('error', () => undefined);
    return session;
  } catch (e) {
    socket.destroy();
    throw toBackendError(e, host, port, password);
  } finally {
    clearTimeout(timer);
  }
}

function waitConnected(socket: Socket, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      socket.off('connect', onConnect);
      reject(err instanceof BackendConnectError ? err : new BackendConnectError(`cannot reach ${host}:${port}: ${describeNetError(err)}`, { code: 'BACKEND_UNREACHABLE', cause: err }));
    };
    const onConnect = () => {
      socket.off('error', onError);
      resolve();
    };
    socket.once('error', onError);
    socket.once('connect', onConnect);
  });
}

async function negotiateTls(socket: Socket, conn: PostgresConnection): Promise<{ socket: Socket; tls: boolean }> {
  const { sslmode, sslrootcert, host } = conn.target;
  if (sslmode === 'disable') return { socket, tls: false };
  const reader = new StreamReader(socket);
  socket.write(createSSLRequest());
  const answer = (await reader.read(1))[0];
  const extra = reader.release();
  if (extra.length > 0) {
    // Bytes after the one-byte answer would be injected into the encrypted stream (CVE-2021-23222).
    throw new BackendConnectError('server sent unencrypted data after its SSL response', { code: 'BACKEND_TLS' });
  }
  if (answer === 0x4e /* N */) {
    if (sslmode === 'prefer') return { socket, tls: false };
    throw new BackendConnectError(`server does not support SSL, but sslmode is ${sslmode}`, { code: 'BACKEND_TLS' });
  }
  if (answer !== 0x53 /* S */) {
    throw new BackendConnectError(`server answered the SSL request with ${codeName(answer)}`, { code: 'BACKEND_PROTOCOL' });
  }
  // As in libpq, "require" with a root certificate configured verifies the chain like verify-ca.
  const verify = sslmode === 'verify-ca' || sslmode === 'verify-full' || (sslmode === 'require' && sslrootcert !== undefined);
  const tlsOptions: ConnectionOptions = { socket, rejectUnauthorized: verify };
  if (!isIP(host)) tlsOptions.servername = host;
  if (verify && sslrootcert) {
    try {
      tlsOptions.ca = readFileSync(sslrootcert);
    } catch (e) {
      throw new BackendConnectError(`cannot read sslrootcert ${sslrootcert}: ${(e as NodeJS.ErrnoException).code ?? e}`, { code: 'BACKEND_TLS' });
    }
  }
  // Explicit, because with an existing socket Node would otherwise check the name "localhost".
  tlsOptions.checkServerIdentity = sslmode === 'verify-full' ? (_name, cert) => checkServerIdentity(host, cert) : () => undefined;
  const tlsSocket = tlsConnect(tlsOptions);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => {
      tlsSocket.off('secureConnect', onSecure);
      reject(new BackendConnectError(`TLS handshake with the server failed: ${err.message}`, { code: 'BACKEND_TLS', cause: err }));
    };
    const onSecure = () => {
      tlsSocket.off('error', onError);
      resolve();
    };
    tlsSocket.once('error', onError);
    tlsSocket.once('secureConnect', onSecure);
  });
  return { socket: tlsSocket, tls: true };
}

/** One whole server message, read during startup or a pool's reset. */
export async function readMessage(reader: StreamReader): Promise<{ code: number; body: Buffer }> {
  const header = await reader.read(5);
  const code = header[0];
  const length = header.readInt32BE(1);
  if (length < 4 || length > MAX_HANDSHAKE_MESSAGE) {
    throw new BackendConnectError(`server sent a message of type ${codeName(code)} with invalid length ${length}`, { code: 'BACKEND_PROTOCOL' });
  }
  return { code, body: await reader.read(length - 4) };
}

async function authenticate(socket: Socket, reader: StreamReader, user: string, password: string | undefined, tls: boolean): Promise<BackendSession> {
  const session: BackendSession = { socket, parameters: [], transactionStatus: 'I', leftover: Buffer.alloc(0), tls, notices: [] };
  const needPassword = (): string => {
    if (password === undefined) {
      throw new BackendConnectError('the server asked for a password but the connection has none configured', { code: 'BACKEND_AUTH_FAILED', sqlState: '28P01' });
    }
    return password;
  };
  let scram: { first: ReturnType<typeof scramClientFirst>; expected?: Buffer } | undefined;
  let authenticated = false;
  for (;;) {
    const { code, body } = await readMessage(reader);
    switch (code) {
      case BackendCode.Authentication: {
        const req = parseAuthentication(body);
        switch (req.type) {
          case 'ok':
            if (scram && !scram.expected) throw new BackendConnectError('server ended SCRAM authentication without proving it knows the password', { code: 'BACKEND_AUTH_FAILED' });
            if (scram?.expected) throw new BackendConnectError('server skipped the SCRAM final message', { code: 'BACKEND_AUTH_FAILED' });
            authenticated = true;
            break;
          case 'cleartext':
            socket.write(createPasswordMessage(needPassword()));
            break;
          case 'md5':
            socket.write(createPasswordMessage(md5PasswordResponse(user, needPassword(), req.salt)));
            break;
          case 'sasl': {
            if (!req.mechanisms.includes(SCRAM_MECHANISM)) {
              throw new BackendConnectError(`server offers only unsupported SASL mechanisms: ${req.mechanisms.join(', ')}`, { code: 'BACKEND_AUTH_UNSUPPORTED' });
            }
            needPassword();
            scram = { first: scramClientFirst() };
            socket.write(createSASLInitialResponse(SCRAM_MECHANISM, scram.first.message));
            break;
          }
          case 'sasl-continue': {
            if (!scram) throw new BackendConnectError('server sent SASLContinue before SASL started', { code: 'BACKEND_PROTOCOL' });
            const final = scramClientFinal(scram.first, req.data, needPassword());
            scram.expected = final.expectedServerSignature;
            socket.write(createSASLResponse(final.message));
            break;
          }
          case 'sasl-final':
            if (!scram?.expected) throw new BackendConnectError('server sent SASLFinal out of order', { code: 'BACKEND_PROTOCOL' });
            verifyScramServerFinal(req.data, scram.expected);
            scram = undefined;
            break;
          case 'unsupported':
            throw new BackendConnectError(`server requires an authentication method the broker does not support (code ${req.code}); use scram-sha-256, md5, password or trust`, {
              code: 'BACKEND_AUTH_UNSUPPORTED',
            });
        }
        break;
      }
      case BackendCode.ErrorResponse: {
        const err = parseErrorResponse(body);
        throw new BackendConnectError(err.message, { code: authenticated ? 'BACKEND_UNREACHABLE' : 'BACKEND_AUTH_FAILED', sqlState: err.code || undefined });
      }
      case BackendCode.NoticeResponse:
        session.notices.push(parseErrorResponse(body));
        break;
      case BackendCode.ParameterStatus:
        session.parameters.push(parseParameterStatus(body));
        break;
      case BackendCode.BackendKeyData:
        session.key = parseBackendKeyData(body);
        break;
      case BackendCode.NegotiateProtocolVersion:
        break;
      case BackendCode.ReadyForQuery:
        if (!authenticated) throw new BackendConnectError('server sent ReadyForQuery before authentication completed', { code: 'BACKEND_PROTOCOL' });
        session.transactionStatus = parseReadyForQuery(body);
        return session;
      default:
        throw new BackendConnectError(`server sent unexpected message ${codeName(code)} during startup`, { code: 'BACKEND_PROTOCOL' });
    }
  }
}

function toBackendError(e: unknown, host: string, port: number, password: string | undefined): BackendConnectError {
  let err: BackendConnectError;
  if (e instanceof BackendConnectError) err = e;
  else if (e instanceof ScramError) err = new BackendConnectError(e.message, { code: 'BACKEND_AUTH_FAILED', cause: e });
  else if (e instanceof Error && e.name === 'StreamEndedError') err = new BackendConnectError(`server ${host}:${port} closed the connection during startup`, { code: 'BACKEND_UNREACHABLE', cause: e });
  else err = new BackendConnectError(`cannot connect to ${host}:${port}: ${describeNetError(e)}`, { code: 'BACKEND_UNREACHABLE', cause: e });
  if (password && err.message.includes(password)) {
    // Defence in depth: no server should echo a password, but none may ever reach a client or a log.
    return new BackendConnectError(err.message.split(password).join('[redacted]'), { code: err.code as 'BACKEND_AUTH_FAILED', sqlState: err.sqlState });
  }
  return err;
}

function describeNetError(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code ?? (e instanceof Error ? e.message : String(e));
}
