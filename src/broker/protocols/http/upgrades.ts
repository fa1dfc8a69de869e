/**
 * Upgraded requests, once their review and recording allowed them: a WebSocket's stream is tapped (kubectl exec and
 * attach recorded as terminals, port-forward's SPDY read for which pod ports were reached), and a plain SPDY
 * port-forward, which http-proxy-3 does not relay, is relayed here by hand and read the same way.
 */
import { request as httpRequest, type Agent, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { errorMessage } from '../../../lib/errors.js';
import type { SessionRecorder } from '../../recording/recorder.js';
import type { OutputMask } from '../ssh/recordings.js';
import { execInfoFromQuery, KubeExecRecording } from './kube-exec-recording.js';
import { KubePortForwardRecording, PORT_FORWARD_TUNNEL_PROTOCOL } from './kube-portforward-recording.js';
import { writeRawRefusal } from './refusals.js';
import type { UpgradeState } from './request-state.js';
import { WsFrameObserver, WsOpcode } from './ws-frames.js';

export interface UpgradeRecordingOptions {
  recorder: SessionRecorder;
  logger: Logger;
  /** Masks exec output before it is recorded. */
  outputMask?: OutputMask;
  /** A refused or failed upgrade, or a stream that could not be read: counted as an error of the session. */
  onError(): void;
  /** The recording itself failed: the session fails. */
  onRecordingFailed(message: string): void;
}

/** Taps the upgraded connections of one session for its recording. */
export class UpgradeRecordings {
  readonly #o: UpgradeRecordingOptions;
  /** Backend sockets whose 101 arrived, waiting for http-proxy-3 to have piped them before they are tapped. */
  readonly #opening = new WeakMap<Duplex, { state: UpgradeState; clientSocket: Duplex }>();
  #execChannel = 0;

  constructor(o: UpgradeRecordingOptions) {
    this.#o = o;
  }

  /** Reads a port-forward's SPDY for the recording; a stream it cannot read ends the connection (both sockets). */
  portForward(state: UpgradeState, client: Duplex, backend: Duplex): KubePortForwardRecording {
    const recording = new KubePortForwardRecording(this.#o.recorder, state.portForwardWhere ?? {}, (reason) => {
      state.error = reason;
      this.#o.onError();
      this.#o.logger.warn({ reason }, 'port-forward stream unreadable; connection closed');
      client.destroy();
      backend.destroy();
    });
    state.portForward = recording;
    return recording;
  }

  /** Sees the backend's answer to a WebSocket upgrade; once it switched protocols, `opened` taps both directions. */
  watch(proxyReq: ClientRequest, state: UpgradeState, clientSocket: Duplex): void {
    proxyReq.on('response', (r: IncomingMessage) => {
      state.status = r.statusCode;
      if ((r.statusCode ?? 0) >= 400) this.#o.onError();
    });
    proxyReq.on('upgrade', (proxyRes: IncomingMessage, backendSocket: Duplex) => {
      state.status = proxyRes.statusCode ?? 101;
      const protocol = proxyRes.headers['sec-websocket-protocol'];
      state.protocol = typeof protocol === 'string' ? protocol : undefined;
      if (state.protocol) state.base = { ...state.base, protocol: state.protocol };
      // Tapped on 'open', once http-proxy-3 has piped both ways: a 'data' listener added before its pipe would
      // take the bytes that came with the 101 response without them being forwarded.
      this.#opening.set(backendSocket, { state, clientSocket });
      backendSocket.once('close', () => state.end());
    });
  }

  opened(backendSocket: Duplex): void {
    const opening = this.#opening.get(backendSocket);
    if (!opening) return;
    this.#opening.delete(backendSocket);
    const { state, clientSocket } = opening;
    let fromClient: WsFrameObserver | undefined;
    let fromServer: WsFrameObserver | undefined;
    if (state.execWhere && state.protocol && /channel\.k8s\.io$/.test(state.protocol)) {
      const where = state.execWhere;
      const info = execInfoFromQuery(where.query, { namespace: where.namespace, pod: where.pod, subresource: where.subresource });
      const channel = this.#execChannel++;
      state.exec = KubeExecRecording.start(this.#o.recorder, info, { channel, protocol: state.protocol, mask: this.#o.outputMask }).catch((e) => {
        this.#o.onRecordingFailed(`recording failed: ${errorMessage(e)}`);
        return undefined;
      });
      const exec = state.exec;
      fromClient = new WsFrameObserver((m) => void exec.then((r) => r?.fromClient(m)));
      fromServer = new WsFrameObserver((m) => void exec.then((r) => r?.fromServer(m)));
    }
    if (state.portForwardWhere && state.protocol?.toLowerCase() === PORT_FORWARD_TUNNEL_PROTOCOL) {
      const recording = this.portForward(state, clientSocket, backendSocket);
      // The SPDY stream is the binary messages' payloads joined; message boundaries mean nothing to it.
      fromClient = new WsFrameObserver((m) => m.opcode === WsOpcode.Binary && recording.fromClient(m.payload), { stream: true });
      fromServer = new WsFrameObserver((m) => m.opcode === WsOpcode.Binary && recording.fromServer(m.payload), { stream: true });
    }
    clientSocket.on('data', (c: Buffer) => {
      state.requestBytes += c.length;
      fromClient?.push(c);
    });
    backendSocket.on('data', (c: Buffer) => {
      state.responseBytes += c.length;
      fromServer?.push(c);
    });
  }

  /**
   * A plain SPDY upgrade (port-forward only): http-proxy-3 relays WebSocket upgrades alone, so this one is relayed
   * by hand — the request (credentials already swapped) to the target, its 101 back, then both sockets joined and
   * the SPDY read for the recording, as inside a WebSocket. An answer other than 101 is passed on as it is.
   */
  relaySpdy(req: IncomingMessage, client: Duplex, head: Buffer, state: UpgradeState, to: { url: string; agent: Agent; kind: 'http' | 'kubernetes' }): void {
    const target = new URL(to.url);
    const base = target.pathname === '/' ? '' : target.pathname.replace(/\/$/, '');
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    const headers: OutgoingHttpHeaders = { ...req.headers, host: target.host };
    const upstream = send({ method: req.method, hostname: target.hostname, port: target.port || undefined, path: `${base}${req.url ?? '/'}`, headers, agent: to.agent });
    const fail = (message: string) => {
      state.error = `backend: ${message}`;
      state.status ??= 502;
      this.#o.onError();
      if (!client.destroyed) writeRawRefusal(client, to.kind, { status: 502, message: `hoopctl: the backend could not be reached: ${message}`, reason: 'InternalError' });
      state.end();
    };
    upstream.on('error', (e) => fail(e.message));
    upstream.on('response', (res) => {
      // Not upgraded (a refusal of the API server's own): its status, headers and body go back as they are.
      state.status = res.statusCode;
      if ((res.statusCode ?? 0) >= 400) this.#o.onError();
      client.write(responseHead(res));
      res.on('data', (c: Buffer) => {
        state.responseBytes += c.length;
        client.write(c);
      });
      res.on('end', () => {
        client.end();
        state.end();
      });
    });
    upstream.on('upgrade', (res, backend, backendHead) => {
      state.status = res.statusCode ?? 101;
      state.protocol = String(res.headers['x-stream-protocol-version'] ?? 'portforward.k8s.io');
      state.base = { ...state.base, protocol: `SPDY/3.1+${state.protocol}` };
      client.write(responseHead(res));
      const recording = this.portForward(state, client, backend);
      const fromClient = (c: Buffer) => {
        state.requestBytes += c.length;
        recording.fromClient(c);
      };
      const fromServer = (c: Buffer) => {
        state.responseBytes += c.length;
        recording.fromServer(c);
      };
      if (backendHead.length > 0) {
        fromServer(backendHead);
        client.write(backendHead);
      }
      if (head.length > 0) {
        fromClient(head);
        backend.write(head);
      }
      client.on('data', fromClient);
      backend.on('data', fromServer);
      client.pipe(backend).pipe(client);
      backend.on('error', () => client.destroy());
      client.on('close', () => backend.destroy());
      backend.on('close', () => {
        client.destroy();
        state.end();
      });
    });
    upstream.end();
  }
}

/** An upstream answer's status line and headers, as received, for a connection relayed by hand. */
function responseHead(res: IncomingMessage): string {
  const lines = [`HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ''}`];
  for (let i = 0; i < res.rawHeaders.length; i += 2) lines.push(`${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}
