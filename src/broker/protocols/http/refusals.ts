/**
 * What a client receives when the broker refuses a request: for `http` connections a JSON body naming the rule,
 * for `kubernetes` a `Status` object, which kubectl prints as `Error from server (Forbidden): …`.
 */
import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';

export interface Refusal {
  status: number;
  message: string;
  rule?: string;
  /** Kubernetes `reason`: Forbidden, ServiceUnavailable, BadGateway… */
  reason?: string;
  reviewId?: string;
}

const KUBE_REASONS: Record<number, string> = {
  400: 'BadRequest',
  403: 'Forbidden',
  413: 'RequestEntityTooLarge',
  502: 'InternalError',
  503: 'ServiceUnavailable',
};

export function refusalBody(kind: 'http' | 'kubernetes', r: Refusal): string {
  if (kind === 'kubernetes') {
    return JSON.stringify({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: r.message,
      reason: r.reason ?? KUBE_REASONS[r.status] ?? 'Unknown',
      details: { ...(r.rule ? { name: r.rule } : {}), causes: [{ reason: 'hoopctl', message: r.message }] },
      code: r.status,
    });
  }
  return JSON.stringify({ error: r.message, ...(r.rule ? { rule: r.rule } : {}), ...(r.reviewId ? { review: r.reviewId } : {}) });
}

export function sendRefusal(res: ServerResponse, kind: 'http' | 'kubernetes', r: Refusal): number {
  const body = refusalBody(kind, r);
  if (res.headersSent) {
    res.destroy();
    return 0;
  }
  res.writeHead(r.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-hoopctl-refused': r.rule ?? 'true' });
  res.end(body);
  return Buffer.byteLength(body);
}

/** The same on a connection that asked to upgrade (no ServerResponse exists then); the connection is closed. */
export function writeRawRefusal(socket: Duplex, kind: 'http' | 'kubernetes', r: Refusal): number {
  const body = refusalBody(kind, r);
  const head =
    `HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? 'Error'}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n`;
  socket.end(head + body);
  return Buffer.byteLength(body);
}

/** How long a WebSocket refusal is remembered for the SPDY retry kubectl makes right after it. */
const REFUSAL_MEMORY_MS = 30_000;
const recentRefusals = new Map<string, { refusal: Refusal; until: number }>();

export function rememberRefusal(key: string, refusal: Refusal): void {
  const now = Date.now();
  for (const [k, v] of recentRefusals) if (v.until < now) recentRefusals.delete(k);
  recentRefusals.set(key, { refusal, until: now + REFUSAL_MEMORY_MS });
}

export function recalledRefusal(key: string): Refusal | undefined {
  const hit = recentRefusals.get(key);
  if (!hit || hit.until < Date.now()) return undefined;
  return hit.refusal;
}
