import { Writer } from './buffer-writer.js';
import { BackendCode } from './message-codes.js';

/**
 * The one ErrorResponse writer: the broker's errors (PgWireError) and the client side's local refusals (a tunnel
 * that could not open, told to psql as a FATAL) both send it.
 */
/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-ERRORRESPONSE */
export function createErrorResponse(f: { severity: string; code: string; message: string; detail?: string; hint?: string; position?: string }): Buffer {
  const w = new Writer();
  w.addByte(0x53).addCString(f.severity); // S: localized severity
  w.addByte(0x56).addCString(f.severity); // V: severity, never localized
  w.addByte(0x43).addCString(f.code);
  w.addByte(0x4d).addCString(f.message);
  if (f.detail) w.addByte(0x44).addCString(f.detail);
  if (f.hint) w.addByte(0x48).addCString(f.hint);
  if (f.position) w.addByte(0x50).addCString(f.position); // P: 1-based character position in the query
  return w.addByte(0).frame(BackendCode.ErrorResponse);
}
