import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { errorMessage } from '../../lib/errors.js';

/**
 * Requests Node's HTTP parser refuses before any route sees them: headers (a token, a URL) over the server's
 * `maxHeaderSize` get 431, other unparseable requests 400, each with a JSON body like every other refusal and an
 * audit event (`request-rejected`), since an oversized bearer token is a token attack nobody would otherwise see.
 */
export function refuseMalformedRequests(server: Server, deps: { audit(type: string, data: Record<string, unknown>): Promise<void>; logger: Logger }): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
    const [status, text, code, message] = tooLarge
      ? [431, 'Request Header Fields Too Large', 'HEADERS_TOO_LARGE', 'request headers (a token, the URL) are too large']
      : [400, 'Bad Request', 'BAD_REQUEST', 'the request is not well-formed HTTP'];
    const body = JSON.stringify({ error: { code, message } });
    socket.end(`HTTP/1.1 ${status} ${text}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    const s = socket as Duplex & { remoteAddress?: string; remotePort?: number };
    const clientAddr = s.remoteAddress ? `${s.remoteAddress}:${s.remotePort}` : 'unknown';
    deps.logger.info({ code, clientAddr, parser: err.code }, 'malformed request refused');
    deps.audit('request-rejected', { code, reason: message, clientAddr, parser: err.code }).catch((e: unknown) =>
      deps.logger.error({ err: errorMessage(e) }, 'could not record a refused request'),
    );
  });
}
