import type { IncomingMessage, ServerResponse } from 'node:http';
import { HoopError } from '../lib/errors.js';

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

export function sendError(res: ServerResponse, e: HoopError): void {
  sendJson(res, e.status ?? 500, { error: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) } });
}

export function bearerToken(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m ? m[1] : undefined;
}

/** Where a request (or any client socket) comes from. */
export function clientAddress(req: ClientPeer): string {
  const s = req.socket;
  return s.remoteAddress ? `${s.remoteAddress}:${s.remotePort}` : 'unknown';
}

/** What names a client's address: an HTTP request, or a holder of a raw socket (the PostgreSQL front door). */
export interface ClientPeer {
  socket: { remoteAddress?: string | undefined; remotePort?: number | undefined };
}

export const errors = {
  notFound: (what: string) => new HoopError(`${what} not found`, { code: 'NOT_FOUND', status: 404 }),
  denied: (message: string) => new HoopError(message, { code: 'ACCESS_DENIED', status: 403 }),
  missingToken: () =>
    new HoopError('no access token: send Authorization: Bearer <token>', { code: 'TOKEN_MISSING', status: 401, hint: 'run `hoopctl login`' }),
};

/** Reads a small JSON body; anything else is a 400 naming the problem. */
export async function readJsonBody(req: IncomingMessage, limit = 64 * 1024): Promise<Record<string, unknown>> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new HoopError(`request body over ${limit} bytes`, { code: 'BAD_REQUEST', status: 413 });
    chunks.push(chunk);
  }
  if (size === 0) return {};
  try {
    const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new HoopError('request body must be a JSON object', { code: 'BAD_REQUEST', status: 400 });
}

export function optionalString(body: Record<string, unknown>, field: string): string | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new HoopError(`${field} must be a string`, { code: 'BAD_REQUEST', status: 400 });
  return v;
}
