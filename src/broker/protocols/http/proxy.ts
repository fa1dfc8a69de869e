/**
 * The reverse proxy behind `http` and `kubernetes` connections. One call serves one client TCP connection carried
 * over the tunnel (HTTP/1.1, keep-alive: many requests) with a node `http.Server` of its own, and relays each
 * request with http-proxy-3 to the target, the broker's credential injected and the client's own dropped.
 *
 * Per request: judged by the connection's rules (Kubernetes requests by what their API path means) → deny (403:
 * a JSON body naming the rule, for Kubernetes a `Status` kubectl prints) · review (held through `ctx.reviews`;
 * no reviews configured → refused, fail closed) · allow → `request-start` recorded, then forwarded. The response
 * comes back through the masks (JSON paths and detectors; watches and text line by line) and a `request` event
 * records method, path, status, duration, sizes and, when configured, both bodies masked and capped.
 *
 * Upgrades: WebSocket is proxied (kubectl exec/attach since 1.30, port-forward since 1.31, any WebSocket API). Exec
 * and attach streams are recorded as terminals (asciicast `cast` events, like SSH); port-forward, SPDY carried in the
 * WebSocket, is read for which pod ports were reached and how much crossed. Port-forward over a plain SPDY upgrade
 * (older kubectl) is relayed by hand and read the same way. Exec/attach over plain SPDY are refused (their streams are
 * not read); a refusal repeats the decision kubectl's WebSocket attempt got a moment before, so the user sees the
 * rule or the reviewer's reason.
 */
import { createServer, type Agent as HttpAgent, type IncomingMessage, type ServerResponse, type IncomingHttpHeaders } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ProxyServer } from 'http-proxy-3';
import type { SessionRecorder } from '../../recording/recorder.js';
import type { StatementReviews, HoldOutcome } from '../protocol.js';
import type { OutputMask } from '../ssh/recordings.js';
import { errorMessage } from '../../../lib/errors.js';
import type { MaskKey } from '../../../policy/masking.js';
import type { PolicyIdentity } from '../../../policy/rules.js';
import { judgeWebRequest, type RequestVerdict, type WebConnectionPolicy } from '../../../policy/http-rules.js';
import type { KubeRequest } from '../../../policy/kube-path.js';
import { parseJsonPath } from '../../../policy/http-json-mask.js';
import type { ResolvedWebConnection } from './config.js';
import { BodySample, maskPlainText, type BodyMask } from './body-masking.js';
import { recalledRefusal, rememberRefusal, sendRefusal, writeRawRefusal, type Refusal } from './refusals.js';
import { createUpstream } from './upstream.js';
import type { RequestState, UpgradeState } from './request-state.js';
import { UpgradeRecordings } from './upgrades.js';
import { recordedBody, relayResponse } from './response-pipeline.js';

export interface HttpSessionContext {
  connection: ResolvedWebConnection;
  recorder: SessionRecorder;
  identity: PolicyIdentity;
  logger: Logger;
  /** Decides requests held by `review` rules; absent → such requests are refused. */
  reviews?: StatementReviews;
  /** Aborted when the session must end (its access grant ran out): the connection is closed. */
  signal?: AbortSignal;
  /** Key of the `hash` masking strategy (random per process when absent). */
  maskKey?: MaskKey;
}

export interface HttpSessionSummary {
  outcome: 'closed' | 'failed';
  requestCount: number;
  /** Requests refused (rules, reviews) or failed (backend unreachable, unmaskable body). */
  errorCount: number;
  error?: string;
}

const processMaskKey = randomBytes(32);

/** How long a connection whose client sent EOF may still flush before it is destroyed. */
const CLOSE_GRACE_MS = 2_000;


interface Judgement {
  verdict: RequestVerdict;
  kube?: KubeRequest;
  /** One line for approvers: `POST /api/v1/namespaces/default/pods/web/exec?command=echo&command=hi`. */
  statement: string;
}

/** Serves one client connection of an http or kubernetes connection until it closes. */
const MALFORMED_TARGET = { status: 400, message: 'hoopctl: malformed request target' };

export async function proxyHttpTunnel(stream: Duplex, ctx: HttpSessionContext): Promise<HttpSessionSummary> {
  return new HttpTunnelSession(stream, ctx).run();
}

/** Gives a tunnel stream the socket methods node's http server and http-proxy-3 call on a connection. */
function asSocketLike(stream: Duplex): Socket {
  const s = stream as Duplex & Partial<Record<'setTimeout' | 'setNoDelay' | 'setKeepAlive' | 'destroySoon', (...a: unknown[]) => unknown>>;
  s.setTimeout ??= function (this: Duplex) {
    return this;
  };
  s.setNoDelay ??= function (this: Duplex) {
    return this;
  };
  s.setKeepAlive ??= function (this: Duplex) {
    return this;
  };
  s.destroySoon ??= function (this: Duplex) {
    if (this.writable) this.end(() => this.destroy());
    else this.destroy();
  };
  return s as unknown as Socket;
}

class HttpTunnelSession {
  readonly #stream: Duplex;
  readonly #ctx: HttpSessionContext;
  readonly #conn: ResolvedWebConnection;
  readonly #log: Logger;
  readonly #proxy: ProxyServer;
  readonly #agent: HttpAgent;
  readonly #origin: string;
  readonly #mask?: BodyMask;
  readonly #outputMask?: OutputMask;
  readonly #recordMax?: number;
  readonly #states = new WeakMap<IncomingMessage, RequestState>();
  readonly #upgrades = new WeakMap<IncomingMessage, UpgradeState>();
  readonly #pending = new Set<Promise<unknown>>();
  /**
   * Requests waiting for their response to close, each by its wake-up. A response still queued behind another on a
   * keep-alive connection (pipelining) never gets a socket, so it never emits 'close' when the connection goes: the
   * session's own close wakes them all, or the session would wait for them forever (and keep everything it holds).
   */
  readonly #inFlight = new Set<() => void>();
  #connectionClosed = false;
  readonly #upgradeRecordings: UpgradeRecordings;
  #requestCount = 0;
  #errorCount = 0;
  #failure?: string;

  constructor(stream: Duplex, ctx: HttpSessionContext) {
    this.#stream = stream;
    this.#ctx = ctx;
    this.#conn = ctx.connection;
    this.#log = ctx.logger;
    const upstream = createUpstream(this.#conn);
    this.#origin = upstream.origin;
    this.#agent = upstream.agent;
    this.#proxy = upstream.proxy;
    const key = ctx.maskKey ?? processMaskKey;
    const m = this.#conn.mask;
    if (m) {
      this.#mask = { paths: m.jsonPaths.map(parseJsonPath), detectors: m.detectors, strategy: m.strategy, key, maxBytes: m.maxBytes };
      if (m.detectors.length > 0) this.#outputMask = { detectors: m.detectors, strategy: m.strategy, key };
    }
    this.#recordMax = this.#conn.recordBodies?.maxBytes;
    this.#proxy.on('error', (err: Error) => this.#log.debug({ err: err.message }, 'http proxy error'));
    this.#proxy.on('proxyRes', (proxyRes, req, res) => this.#respond(proxyRes, req, res));
    this.#upgradeRecordings = new UpgradeRecordings({
      recorder: ctx.recorder, logger: this.#log, outputMask: this.#outputMask,
      onError: () => this.#errorCount++,
      onRecordingFailed: (message) => (this.#failure = message),
    });
    this.#proxy.on('proxyReqWs', (proxyReq, req, socket) => {
      const state = this.#upgrades.get(req);
      if (state) this.#upgradeRecordings.watch(proxyReq, state, socket as unknown as Duplex);
    });
    this.#proxy.on('open', (backendSocket) => this.#upgradeRecordings.opened(backendSocket as unknown as Duplex));
  }

  async run(): Promise<HttpSessionSummary> {
    const socket = asSocketLike(this.#stream);
    const server = createServer({ requestTimeout: 0, keepAliveTimeout: 120_000 });
    server.on('request', (req, res) => this.#track(this.#onRequest(req, res)));
    server.on('upgrade', (req, sock: Duplex, head: Buffer) => this.#track(this.#onUpgrade(req, sock, head)));
    server.on('clientError', (err, sock: Duplex) => {
      this.#errorCount++;
      this.#log.debug({ err: err.message }, 'malformed HTTP from client');
      if (sock.writable) sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else sock.destroy();
    });
    this.#stream.on('error', (err) => this.#log.debug({ err: err.message }, 'tunnel stream error'));
    const closed = new Promise<void>((resolve) => {
      if (this.#stream.destroyed) resolve();
      else this.#stream.once('close', () => resolve());
    });
    // The client's EOF ends the session: node's http server does not serve half-open connections, and an upgraded
    // stream has no use for one. What is left to write gets a moment, then the stream goes (a tunnel stream whose
    // WebSocket already closed may never report its write side finished).
    let grace: NodeJS.Timeout | undefined;
    const windDown = () => {
      grace ??= setTimeout(() => this.#stream.destroy(), CLOSE_GRACE_MS);
    };
    this.#stream.once('end', windDown);
    this.#stream.once('finish', windDown);
    const onAbort = () => this.#stream.destroy();
    this.#ctx.signal?.addEventListener('abort', onAbort, { once: true });
    if (this.#ctx.signal?.aborted) onAbort();
    server.emit('connection', socket);
    await closed;
    this.#connectionClosed = true;
    for (const wake of this.#inFlight) wake();
    clearTimeout(grace);
    this.#ctx.signal?.removeEventListener('abort', onAbort);
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
    this.#agent.destroy();
    this.#proxy.close?.();
    return {
      outcome: this.#failure ? 'failed' : 'closed',
      requestCount: this.#requestCount,
      errorCount: this.#errorCount,
      ...(this.#failure ? { error: this.#failure } : {}),
    };
  }

  #track(p: Promise<unknown>): void {
    const tracked = p.catch((e) => {
      this.#log.error({ err: errorMessage(e) }, 'http request handling failed');
    });
    this.#pending.add(tracked);
    void tracked.finally(() => this.#pending.delete(tracked));
  }

  // ------------------------------------------------------------------ judging

  #judge(method: string, url: URL): Judgement {
    let query = url.search;
    try {
      query = decodeURIComponent(url.search.replace(/\+/g, ' '));
    } catch {
      // keep it raw
    }
    const statement = this.#maskLine(`${method} ${url.pathname}${query}`);
    return { ...judgeWebRequest(this.#conn as WebConnectionPolicy, this.#ctx.identity, method, url), statement };
  }

  #maskLine(text: string): string {
    return this.#mask ? maskPlainText(text, this.#mask) : text;
  }

  /** The base of a request's recorded events. */
  #baseEvent(seq: number, method: string, url: URL, j: Judgement): Record<string, unknown> {
    const k = j.kube;
    return {
      seq,
      method,
      path: this.#maskLine(url.pathname),
      ...(url.search ? { query: this.#maskLine(url.search.slice(1)) } : {}),
      verdict: j.verdict.action,
      ...(j.verdict.rule ? { rule: j.verdict.rule } : {}),
      ...(k
        ? {
            kube: {
              verb: k.verb,
              ...(k.nonResource ? {} : { apiGroup: k.apiGroup, resource: k.resource }),
              ...(k.subresource ? { subresource: k.subresource } : {}),
              ...(k.namespace ? { namespace: k.namespace } : {}),
              ...(k.name ? { name: k.name } : {}),
            },
          }
        : {}),
    };
  }

  /** Holds a request for review. Without reviews configured, refuses it (fail closed). */
  async #hold(j: Judgement, signal: AbortSignal): Promise<HoldOutcome> {
    const rule = j.verdict.rule ?? 'review';
    if (!this.#ctx.reviews) {
      return { approved: false, message: `hoopctl: this request needs approval (rule "${rule}") but no reviewers are configured for this connection` };
    }
    try {
      return await this.#ctx.reviews.hold({ statement: j.statement, rule, message: j.verdict.message }, { notice: async () => undefined, signal });
    } catch (e) {
      return { approved: false, message: `hoopctl: the review could not be filed: ${errorMessage(e)}` };
    }
  }

  #refusalFor(j: Judgement): Refusal {
    return { status: 403, message: `hoopctl: ${j.verdict.message}`, rule: j.verdict.rule };
  }

  #refusalKey(path: string): string {
    return `${this.#conn.name}\u0000${this.#ctx.identity.subject}\u0000${path}`;
  }

  // ------------------------------------------------------------------ plain requests

  /**
   * The request target as judged, or undefined (counted as an error) when it cannot be read. The request is then
   * forwarded with exactly this path: `/public/../admin` is judged and sent as `/admin`.
   */
  #requestTarget(req: IncomingMessage): URL | undefined {
    try {
      const url = new URL(req.url ?? '/', 'http://hoopctl.invalid');
      req.url = url.pathname + url.search;
      return url;
    } catch {
      this.#errorCount++;
      return undefined;
    }
  }

  async #onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const seq = ++this.#requestCount;
    const started = performance.now();
    const method = (req.method ?? 'GET').toUpperCase();
    const url = this.#requestTarget(req);
    if (!url) return void sendRefusal(res, this.#conn.type, MALFORMED_TARGET);
    const j = this.#judge(method, url);
    const base = this.#baseEvent(seq, method, url, j);
    const refuse = async (r: Refusal, extra: Record<string, unknown> = {}) => {
      this.#errorCount++;
      const bytes = sendRefusal(res, this.#conn.type, r);
      req.resume();
      await this.#record('request', { ...base, ...extra, status: r.status, durationMs: elapsed(started), requestBytes: 0, responseBytes: bytes, error: r.message });
    };
    if (j.verdict.action === 'deny') return refuse(this.#refusalFor(j));
    if (j.verdict.action === 'review') {
      const outcome = await this.#holdWhileConnected(j, res, base, started);
      if (!outcome) return;
      if (!outcome.approved) return refuse({ status: 403, message: outcome.message, rule: j.verdict.rule, reviewId: outcome.reviewId }, outcome.reviewId ? { review: outcome.reviewId } : {});
      base.review = outcome.reviewId;
    }
    if (!(await this.#record('request-start', base))) {
      return refuse({ status: 503, message: 'hoopctl: the session cannot be recorded, so the request was not forwarded', reason: 'ServiceUnavailable' });
    }
    const state: RequestState = {
      seq,
      started,
      base,
      watch: j.kube?.verb === 'watch' || /[?&]watch=(1|true)\b/i.test(url.search),
      requestBytes: 0,
      responseBytes: 0,
      done: false,
      requestType: req.headers['content-type'],
      ...(this.#recordMax !== undefined ? { requestSample: new BodySample(this.#recordMax) } : {}),
    };
    this.#states.set(req, state);
    // Tapped in the same turn as http-proxy-3 pipes the request on, so no chunk is missed.
    req.on('data', (c: Buffer) => {
      state.requestBytes += c.length;
      state.requestSample?.add(c);
    });
    let responded = false;
    let wake!: () => void;
    const finished = new Promise<void>((resolve) => (wake = resolve));
    this.#inFlight.add(wake);
    res.once('close', () => {
      responded = true;
      wake();
    });
    // Judged and recorded while the connection went: it is over already.
    if (this.#connectionClosed) wake();
    this.#injectCredentials(req.headers, false);
    this.#proxy.web(req, res, {}, (err: Error) => {
      state.error = `backend: ${err.message}`;
      this.#errorCount++;
      if (!res.headersSent) {
        const body = sendRefusal(res, this.#conn.type, { status: 502, message: `hoopctl: the backend could not be reached: ${err.message}`, reason: 'InternalError' });
        state.status = 502;
        state.responseBytes += body;
      } else res.destroy();
    });
    await finished;
    this.#inFlight.delete(wake);
    // The connection went while this response was still queued: it is never sent (recorded as 499). The backend's
    // request ends with the session's agent.
    if (!responded) {
      state.status = 499;
      state.error ??= 'the client connection closed before this response could be sent';
    }
    await this.#finish(state);
  }

  #injectCredentials(headers: IncomingHttpHeaders, upgrade: boolean): void {
    // The client's own credentials never reach the backend, nor may a Kubernetes client impersonate anyone.
    delete headers.authorization;
    delete headers['proxy-authorization'];
    if (this.#conn.type === 'kubernetes') {
      for (const h of Object.keys(headers)) if (h.startsWith('impersonate-')) delete headers[h];
      if ('bearer' in this.#conn.credentials) headers.authorization = `Bearer ${this.#conn.credentials.bearer.reveal()}`;
    } else {
      const c = this.#conn.credentials;
      if (c && 'header' in c) {
        delete headers[c.header.name.toLowerCase()];
        headers[c.header.name.toLowerCase()] = c.header.value.reveal();
      } else if (c && 'bearer' in c) headers.authorization = `Bearer ${c.bearer.reveal()}`;
      else if (c && 'basic' in c) headers.authorization = `Basic ${Buffer.from(`${c.basic.user}:${c.basic.password.reveal()}`).toString('base64')}`;
    }
    // Bodies the broker must read (masking, recording) come uncompressed; WebSocket frames likewise.
    if (!upgrade && (this.#mask || this.#recordMax !== undefined)) headers['accept-encoding'] = 'identity';
    if (upgrade) delete headers['sec-websocket-extensions'];
  }

  #respond(proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse): void {
    const state = this.#states.get(req);
    if (!state) {
      proxyRes.resume();
      res.destroy();
      return;
    }
    relayResponse(proxyRes, res, state, {
      mask: this.#mask, recordMax: this.#recordMax, kind: this.#conn.type, origin: this.#origin, onWithheld: () => this.#errorCount++,
    });
  }

  async #finish(state: RequestState): Promise<void> {
    if (state.done) return;
    state.done = true;
    const status = state.status ?? 499;
    const event: Record<string, unknown> = {
      ...state.base,
      status,
      durationMs: elapsed(state.started),
      requestBytes: state.requestBytes,
      responseBytes: state.responseBytes,
      ...(state.maskHits ? { masked: state.maskHits } : {}),
      ...(state.error ? { error: state.error } : {}),
    };
    const reqBody = recordedBody(state.requestSample, state.requestType, this.#mask);
    if (reqBody) event.requestBody = reqBody;
    const resBody = recordedBody(state.responseSample, state.responseType, this.#mask);
    if (resBody) event.body = resBody;
    await this.#record('request', event);
  }

  async #record(type: string, data: Record<string, unknown>): Promise<boolean> {
    try {
      await this.#ctx.recorder.record(type, data);
      return true;
    } catch (e) {
      this.#failure = `recording failed: ${errorMessage(e)}`;
      this.#log.error({ err: errorMessage(e), type }, 'recording failed');
      return false;
    }
  }

  // ------------------------------------------------------------------ upgrades

  async #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const seq = ++this.#requestCount;
    const started = performance.now();
    const method = (req.method ?? 'GET').toUpperCase();
    socket.on('error', (err) => this.#log.debug({ err: err.message }, 'upgraded client connection error'));
    const url = this.#requestTarget(req);
    if (!url) return void writeRawRefusal(socket, this.#conn.type, MALFORMED_TARGET);
    const protocol = String(req.headers.upgrade ?? '').toLowerCase();
    const j = this.#judge(method, url);
    const base = { ...this.#baseEvent(seq, method, url, j), upgrade: protocol };
    const refusalKey = this.#refusalKey(url.pathname);
    const refuse = async (r: Refusal, remember: boolean) => {
      this.#errorCount++;
      if (remember) rememberRefusal(refusalKey, r);
      const bytes = writeRawRefusal(socket, this.#conn.type, r);
      await this.#record('request', { ...base, status: r.status, durationMs: elapsed(started), requestBytes: 0, responseBytes: bytes, error: r.message });
    };

    // Port-forward over plain SPDY (kubectl before 1.31, or with KUBECTL_PORT_FORWARD_WEBSOCKETS=false) is read like
    // the SPDY inside a WebSocket; exec over plain SPDY is not (its streams are not read here), so it is refused.
    const spdyPortForward = protocol === 'spdy/3.1' && j.kube?.resource === 'pods' && j.kube.subresource === 'portforward';
    if (protocol.startsWith('spdy/')) {
      // kubectl retries over SPDY right after a refused WebSocket: it gets the same answer, not a second hold.
      const earlier = recalledRefusal(refusalKey);
      if (earlier) return refuse(earlier, false);
    }
    if (protocol !== 'websocket' && !spdyPortForward) {
      if (j.verdict.action === 'deny') return refuse(this.#refusalFor(j), false);
      return refuse(
        {
          status: 400,
          message: protocol.startsWith('spdy/')
            ? 'hoopctl: exec and attach over SPDY are not supported through the gate (they cannot be recorded); use kubectl 1.30 or newer, which streams over WebSocket, and do not set KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false'
            : `hoopctl: upgrading to "${protocol}" is not supported; only WebSocket`,
          reason: 'BadRequest',
        },
        false,
      );
    }
    if (j.verdict.action === 'deny') return refuse(this.#refusalFor(j), true);
    if (j.verdict.action === 'review') {
      const outcome = await this.#holdWhileConnected(j, socket, base, started);
      if (!outcome) return;
      if (!outcome.approved) return refuse({ status: 403, message: outcome.message, rule: j.verdict.rule, reviewId: outcome.reviewId }, true);
      (base as Record<string, unknown>).review = outcome.reviewId;
    }
    if (!(await this.#record('request-start', base))) {
      return refuse({ status: 503, message: 'hoopctl: the session cannot be recorded, so the request was not forwarded', reason: 'ServiceUnavailable' }, false);
    }
    let end!: () => void;
    const over = new Promise<void>((resolve) => (end = resolve));
    const state: UpgradeState = { seq, started, base, watch: false, requestBytes: 0, responseBytes: 0, done: false, over, end };
    this.#upgrades.set(req, state);
    const k = j.kube;
    const execLike = k !== undefined && k.resource === 'pods' && (k.subresource === 'exec' || k.subresource === 'attach');
    if (execLike) state.execWhere = { namespace: k.namespace, pod: k.name, subresource: k.subresource!, query: url.searchParams };
    if (k?.resource === 'pods' && k.subresource === 'portforward') state.portForwardWhere = { namespace: k.namespace, pod: k.name };
    if (socket.destroyed) end();
    socket.once('close', end);
    this.#injectCredentials(req.headers, true);
    if (spdyPortForward) this.#upgradeRecordings.relaySpdy(req, socket, head, state, { url: this.#conn.target.url, agent: this.#agent, kind: this.#conn.type });
    else {
      this.#proxy.ws(req, socket as unknown as Socket, head, {}, (err: Error) => {
        state.error = `backend: ${err.message}`;
        state.status ??= 502;
        this.#errorCount++;
        end();
      });
    }
    await over;
    const exec = await state.exec;
    if (exec) await exec.close().catch((e) => this.#log.error({ err: errorMessage(e) }, 'exec recording failed'));
    await state.portForward?.close().catch((e) => this.#log.error({ err: errorMessage(e) }, 'port-forward recording failed'));
    await this.#finish(state);
  }

  /**
   * Holds a request for review while its client waits; undefined (and a 499 recorded) when the client goes away
   * first, which withdraws the review.
   */
  async #holdWhileConnected(j: Judgement, client: { once(event: 'close', cb: () => void): unknown }, base: Record<string, unknown>, started: number): Promise<HoldOutcome | undefined> {
    const gone = new AbortController();
    client.once('close', () => gone.abort(new Error('client went away')));
    const outcome = await this.#hold(j, gone.signal);
    if (!gone.signal.aborted) return outcome;
    await this.#record('request', { ...base, status: 499, durationMs: elapsed(started), requestBytes: 0, responseBytes: 0, error: 'client went away while held' });
    return undefined;
  }
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}
