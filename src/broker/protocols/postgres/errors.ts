import { HoopError } from '../../../lib/errors.js';
import { createErrorResponse } from '../../../lib/pg-wire/error-response.js';

/** SQLSTATE codes the broker itself raises towards PostgreSQL clients. */
export const SqlState = {
  ProtocolViolation: '08P01',
  ConnectionFailure: '08006',
  InvalidAuthorization: '28000',
  /** The startup asked for a database the connection does not serve. */
  InvalidCatalogName: '3D000',
  FeatureNotSupported: '0A000',
  /** A policy rule refused the statement. */
  InsufficientPrivilege: '42501',
  SystemError: '58000',
  QueryCanceled: '57014',
  /** A portal that does not exist (PostgreSQL's own answer to Execute of one). */
  InvalidCursorName: '34000',
  AdminShutdown: '57P01',
  /** hoopctl's own (class R is implementation-defined): held for review, client asked not to wait. */
  HeldForReview: 'RV001',
} as const;

export type Severity = 'ERROR' | 'FATAL';

/**
 * An error that knows its wire form. It is the only kind of error the proxy ever sends to a PostgreSQL
 * client; anything else is logged and the connection closed.
 */
export class PgWireError extends Error {
  readonly severity: Severity;
  readonly sqlState: string;

  constructor(severity: Severity, sqlState: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.severity = severity;
    this.sqlState = sqlState;
  }

  /** The ErrorResponse message for this error. */
  toWire(): Buffer {
    return createErrorResponse({ severity: this.severity, code: this.sqlState, message: this.message });
  }
}

/** The client broke the protocol: the session ends with SQLSTATE 08P01. */
export function protocolViolation(detail: string): PgWireError {
  return new PgWireError('FATAL', SqlState.ProtocolViolation, `protocol violation: ${detail}`);
}

/**
 * Reaching or authenticating to the backend failed. `sqlState` is the server's own code when the
 * server answered with an ErrorResponse, otherwise 08006. The message never contains the credential.
 */
export class BackendConnectError extends HoopError {
  readonly sqlState: string;

  constructor(
    message: string,
    options: { code: 'BACKEND_UNREACHABLE' | 'BACKEND_TLS' | 'BACKEND_AUTH_FAILED' | 'BACKEND_AUTH_UNSUPPORTED' | 'BACKEND_PROTOCOL'; sqlState?: string; cause?: unknown },
  ) {
    super(message, { code: options.code, cause: options.cause });
    this.sqlState = options.sqlState ?? SqlState.ConnectionFailure;
  }
}
