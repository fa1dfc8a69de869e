import { USER_AGENT, brokerRefusal } from '../api/broker-client.js';
import type { Duplex } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { WebSocket, createWebSocketStream } from 'ws';
import { HoopError, UserError } from '../lib/errors.js';


export function tunnelUrl(broker: string, connection: string, query: Record<string, string> = {}): string {
  const u = new URL(`/api/v1/tunnel/${encodeURIComponent(connection)}`, broker);
  for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
}

/**
 * The client's frame mask, all zeros: ws then sends the payload as it is instead of copying it through an XOR
 * with fresh random bytes per frame (profiles of `hoopctl connect` under pgbench show that copy on every
 * message). Masking (RFC 6455 §10.3) protects intermediaries that parse the stream from bytes a hostile browser
 * script chose; this client is no browser, and off loopback the broker requires TLS (unless its operator forces
 * plain HTTP), which no intermediary parses. Frames are still marked masked, so the broker's check is unchanged.
 */
function zeroMask(mask: Buffer): void {
  mask.fill(0);
}

/**
 * Opens one tunnel: a WebSocket to the broker carrying one client connection's bytes. Resolves once
 * the broker has verified the token and admitted the identity; otherwise rejects with the broker's
 * own reason (401 token, 403 access, 404 connection).
 */
export function openTunnel(broker: string, connection: string, token: string, peer?: string, query?: Record<string, string>, headers: Record<string, string> = {}): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(tunnelUrl(broker, connection, query), {
      headers: { ...headers, authorization: `Bearer ${token}`, 'user-agent': USER_AGENT, ...(peer ? { 'x-hoopctl-peer': peer } : {}) },
      perMessageDeflate: false,
      handshakeTimeout: 15_000,
      maxPayload: 16 * 1024 * 1024,
      generateMask: zeroMask,
    });
    ws.once('open', () => {
      const stream = createWebSocketStream(ws);
      resolve(stream);
    });
    ws.once('unexpected-response', (_req, res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d.slice(0, 4096)));
      res.on('end', () => {
        ws.terminate();
        reject(brokerRefusal(res.statusCode ?? 0, body));
      });
    });
    ws.once('error', (e: Error) => {
      reject(new UserError(`cannot reach the broker at ${broker}: ${e.message}`, { code: 'BROKER_UNREACHABLE', hint: 'check the broker URL and that it is running' }));
    });
  });
}

export { USER_AGENT, brokerRefusal };

/** What a tunnel's owner tells the broker about a local client the tunnel turned away. */
export interface PeerRefusal {
  /** `127.0.0.1:40112`. */
  peer: string;
  reason: string;
  /** The OS user owning the peer's socket, where known. */
  uid?: number;
  /** Refusals this report stands for (several that came while the previous report was on its way). */
  count?: number;
}

/**
 * Records a refused local client with the broker: the tunnel endpoint takes `?report=peer-refused` from the
 * tunnel's owner (same token, same access) and answers 200 instead of upgrading. Resolves with the recorded
 * session id.
 */
export function reportPeerRefused(broker: string, connection: string, token: string, r: PeerRefusal): Promise<string> {
  const query: Record<string, string> = { report: 'peer-refused', peer: r.peer.slice(0, 100), reason: r.reason.slice(0, 500) };
  if (r.uid !== undefined) query.uid = String(r.uid);
  if (r.count && r.count > 1) query.count = String(r.count);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(tunnelUrl(broker, connection, query), {
      headers: { authorization: `Bearer ${token}`, 'user-agent': USER_AGENT },
      perMessageDeflate: false,
      handshakeTimeout: 15_000,
    });
    ws.once('open', () => {
      ws.terminate();
      reject(new HoopError('the broker opened a tunnel instead of recording the refusal (an older broker?)', { code: 'REPORT_UNSUPPORTED' }));
    });
    ws.once('unexpected-response', (_req, res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d.slice(0, 4096)));
      res.on('end', () => {
        ws.terminate();
        if (res.statusCode !== 200) return reject(brokerRefusal(res.statusCode ?? 0, body));
        try {
          resolve(String((JSON.parse(body) as { session?: string }).session ?? ''));
        } catch {
          resolve('');
        }
      });
    });
    ws.once('error', (e: Error) => reject(new UserError(`cannot reach the broker at ${broker}: ${e.message}`, { code: 'BROKER_UNREACHABLE' })));
  });
}
