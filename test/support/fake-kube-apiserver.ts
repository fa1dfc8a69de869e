/**
 * A small Kubernetes API server for the kubectl tests: the discovery kubectl 1.32 reads (legacy discovery — the
 * aggregated kind is not offered, so kubectl falls back to /api, /apis, /api/v1), pods and namespaces, and
 * `pods/exec` over WebSocket (`v5.channel.k8s.io`: channel byte 1 stdout, 2 stderr, 3 the closing Status), and
 * `pods/portforward` as kubectl 1.31+ speaks it: SPDY/3.1 inside a WebSocket (`SPDY/3.1+portforward.k8s.io`), each
 * forwarded connection a pair of streams (`streamtype: error` and `data`, same `requestid`) relayed to a real TCP
 * port on loopback (`portForward` maps pod ports to them).
 * Every request must carry the bearer token the broker injects, or (over HTTPS) the client certificate it
 * presents; anything else gets 401.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { connect as tcpConnect, type AddressInfo, type Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  controlStreamId, createDataFrame, createPing, createRstStream, createSynReply, headerBlockOf, HeaderBlockDeflater, HeaderBlockInflater,
  SpdyFlag, SpdyFrameReader, SpdyRst, SpdyType, type SpdyFrame,
} from '../../src/broker/protocols/http/spdy.js';

export interface KubeSeen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

export interface FakeKubeApiServer {
  url: string;
  seen: KubeSeen[];
  /** Namespaces deleted (a deny rule must keep this empty). */
  deleted: string[];
  /** Pod port → loopback TCP port for port-forward; may be filled in after start. */
  portForward: Record<number, number>;
  close(): Promise<void>;
}

const created = '2026-01-01T00:00:00Z';

export const PORT_FORWARD_PROTOCOL = 'SPDY/3.1+portforward.k8s.io';

function pod(namespace: string, name: string) {
  return {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: { name, namespace, uid: `uid-${namespace}-${name}`, resourceVersion: '100', creationTimestamp: created, labels: { app: name } },
    spec: { containers: [{ name: 'app', image: 'busybox:1.36' }] },
    status: { phase: 'Running', containerStatuses: [{ name: 'app', ready: true, restartCount: 0, image: 'busybox:1.36', imageID: '', started: true, state: { running: { startedAt: created } } }] },
  };
}

function namespaceObject(name: string) {
  return { kind: 'Namespace', apiVersion: 'v1', metadata: { name, uid: `uid-ns-${name}`, resourceVersion: '10', creationTimestamp: created }, spec: { finalizers: ['kubernetes'] }, status: { phase: 'Active' } };
}

function status(code: number, reason: string, message: string) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

const RESOURCES = {
  kind: 'APIResourceList',
  groupVersion: 'v1',
  resources: [
    { name: 'namespaces', singularName: 'namespace', namespaced: false, kind: 'Namespace', verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'], shortNames: ['ns'] },
    { name: 'pods', singularName: 'pod', namespaced: true, kind: 'Pod', verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'], shortNames: ['po'], categories: ['all'] },
    { name: 'pods/exec', singularName: '', namespaced: true, kind: 'PodExecOptions', verbs: ['create', 'get'] },
    { name: 'pods/log', singularName: '', namespaced: true, kind: 'Pod', verbs: ['get'] },
    { name: 'pods/portforward', singularName: '', namespaced: true, kind: 'PodPortForwardOptions', verbs: ['create', 'get'] },
  ],
};

export interface FakeKubeOptions {
  /** The bearer token a request must carry (unless it authenticates with a client certificate). */
  token?: string;
  /**
   * Serve HTTPS with this certificate; with `clientCa`, a client certificate that CA signed authenticates the
   * request as its CN, which must be `clientUser` (as the API server's x509 authenticator does).
   */
  tls?: { cert: string; key: string; clientCa?: string; clientUser?: string };
  namespaces?: string[];
  pods?: Record<string, string[]>;
  /** Pod port → a loopback TCP port that `kubectl port-forward` reaches (any pod). */
  portForward?: Record<number, number>;
}

export async function startFakeKubeApiServer(o: FakeKubeOptions): Promise<FakeKubeApiServer> {
  const seen: KubeSeen[] = [];
  const deleted: string[] = [];
  const namespaces = o.namespaces ?? ['default', 'prod', 'kube-system'];
  const pods = o.pods ?? { default: ['web', 'worker'] };
  const portForward: Record<number, number> = o.portForward ?? {};
  const authorized = (req: IncomingMessage) => {
    if (o.token !== undefined && req.headers.authorization === `Bearer ${o.token}`) return true;
    const socket = req.socket as TLSSocket;
    if (!o.tls?.clientCa || !socket.authorized) return false;
    return socket.getPeerCertificate().subject?.CN === o.tls.clientUser;
  };
  const send = (res: ServerResponse, code: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };

  const handle: RequestListener = (req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    req.resume();
    if (!authorized(req)) return send(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
    const url = new URL(req.url ?? '/', 'http://kube');
    const p = url.pathname.replace(/\/$/, '');
    const m = req.method;
    if (p === '/version') return send(res, 200, { major: '1', minor: '32', gitVersion: 'v1.32.0-fake', platform: 'linux/amd64' });
    if (p === '/api') return send(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1:6443' }] });
    if (p === '/apis') return send(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: [] });
    if (p === '/api/v1') return send(res, 200, RESOURCES);
    if (p === '/api/v1/namespaces' && m === 'GET') {
      return send(res, 200, { kind: 'NamespaceList', apiVersion: 'v1', metadata: { resourceVersion: '200' }, items: namespaces.map(namespaceObject) });
    }
    let r = /^\/api\/v1\/namespaces\/([^/]+)$/.exec(p);
    if (r) {
      const ns = decodeURIComponent(r[1]);
      if (!namespaces.includes(ns)) return send(res, 404, status(404, 'NotFound', `namespaces "${ns}" not found`));
      if (m === 'GET') return send(res, 200, namespaceObject(ns));
      if (m === 'DELETE') {
        deleted.push(ns);
        return send(res, 200, { ...namespaceObject(ns), status: { phase: 'Terminating' } });
      }
    }
    r = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(p);
    if (r && m === 'GET') {
      const ns = decodeURIComponent(r[1]);
      return send(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: '300' }, items: (pods[ns] ?? []).map((n) => pod(ns, n)) });
    }
    r = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(p);
    if (r && m === 'GET') {
      const [ns, name] = [decodeURIComponent(r[1]), decodeURIComponent(r[2])];
      if (!(pods[ns] ?? []).includes(name)) return send(res, 404, status(404, 'NotFound', `pods "${name}" not found`));
      return send(res, 200, pod(ns, name));
    }
    r = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/log$/.exec(p);
    if (r && m === 'GET') {
      // `kubectl logs -f`: a chunked text stream, one line every 100 ms, the last one carrying an email address.
      const lines = ['starting web', 'listening on :8080', 'GET /health 200', 'signup from jane.doe@example.com'];
      res.writeHead(200, { 'content-type': 'text/plain', 'transfer-encoding': 'chunked' });
      let n = 0;
      const follow = url.searchParams.get('follow') === 'true';
      const next = () => {
        if (n >= lines.length) return void res.end();
        res.write(`${lines[n++]}\n`);
        if (follow) setTimeout(next, 100);
        else next();
      };
      return next();
    }
    if (/\/exec$/.test(p)) return send(res, 400, status(400, 'BadRequest', 'this test API server speaks exec over WebSocket only'));
    send(res, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
  };
  const server: Server = o.tls
    ? createHttpsServer({ cert: o.tls.cert, key: o.tls.key, ...(o.tls.clientCa ? { ca: o.tls.clientCa, requestCert: true, rejectUnauthorized: false } : {}) }, handle)
    : createServer(handle);

  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (protocols) => {
      for (const p of [PORT_FORWARD_PROTOCOL, 'v5.channel.k8s.io', 'v4.channel.k8s.io']) if (protocols.has(p)) return p;
      return false;
    },
  });
  const portForwardUpgrades = new WeakSet<IncomingMessage>();
  const rawUpgrades = new Set<import('node:stream').Duplex>();
  wss.on('headers', (headers, req) => {
    if (portForwardUpgrades.has(req)) headers.push(`Sec-WebSocket-Protocol: ${PORT_FORWARD_PROTOCOL}`);
  });
  server.on('upgrade', (req, socket, head) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const reject = (code: number, body: unknown) => {
      const text = JSON.stringify(body);
      socket.end(`HTTP/1.1 ${code} Error\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`);
    };
    if (!authorized(req)) return reject(401, status(401, 'Unauthorized', 'Unauthorized'));
    const url = new URL(req.url ?? '/', 'http://kube');
    if (/^\/api\/v1\/namespaces\/[^/]+\/pods\/[^/]+\/portforward$/.test(url.pathname) && /^spdy\/3\.1$/i.test(String(req.headers.upgrade))) {
      // kubectl before 1.31, or with KUBECTL_PORT_FORWARD_WEBSOCKETS=false: SPDY on the upgraded connection itself.
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n');
      if (head.length > 0) socket.unshift(head);
      rawUpgrades.add(socket);
      socket.once('close', () => rawUpgrades.delete(socket));
      return runPortForward(overSocket(socket), portForward);
    }
    if (/^\/api\/v1\/namespaces\/[^/]+\/pods\/[^/]+\/portforward$/.test(url.pathname)) {
      const offered = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
      if (!offered.includes(PORT_FORWARD_PROTOCOL)) return reject(400, status(400, 'BadRequest', `this test API server forwards ports over ${PORT_FORWARD_PROTOCOL} only`));
      // ws refuses "/" in a subprotocol (not an RFC 7230 token), which the API server's Go WebSocket accepts: the
      // header is taken out of ws's sight and the chosen protocol put back into the 101 answer.
      delete req.headers['sec-websocket-protocol'];
      portForwardUpgrades.add(req);
      return wss.handleUpgrade(req, socket, head, (ws) => runPortForward(overWebSocket(ws), portForward));
    }
    if (!/^\/api\/v1\/namespaces\/[^/]+\/pods\/[^/]+\/exec$/.test(url.pathname)) return reject(404, status(404, 'NotFound', 'not found'));
    wss.handleUpgrade(req, socket, head, (ws) => runExec(ws, url.searchParams));
  });

  const sockets = new Set<Socket>();

  /**
   * The kubelet's side of port-forward: answers each SYN_STREAM, pairs the error and data streams of a request,
   * relays the data stream to the mapped TCP port (half-closes both ways), and reports a failure on the error stream.
   */
  /** The SPDY byte stream of a port-forward: inside WebSocket messages (kubectl 1.31+) or a plain upgraded socket. */
  interface SpdyTransport {
    onData(cb: (chunk: Buffer) => void): void;
    send(frame: Buffer): void;
    kill(): void;
    onClose(cb: () => void): void;
  }
  const overWebSocket = (ws: WebSocket): SpdyTransport => ({
    onData: (cb) => ws.on('message', (d: Buffer) => cb(d)),
    send: (frame) => void (ws.readyState === ws.OPEN && ws.send(frame)),
    kill: () => ws.terminate(),
    onClose: (cb) => ws.on('close', cb),
  });
  const overSocket = (sock: import('node:stream').Duplex): SpdyTransport => ({
    onData: (cb) => {
      sock.on('data', cb);
      // The server's upgraded sockets are half-open capable: the peer going away ends this side too.
      sock.on('end', () => sock.destroy());
    },
    send: (frame) => void (!sock.destroyed && sock.write(frame)),
    kill: () => sock.destroy(),
    onClose: (cb) => sock.on('close', cb),
  });

  function runPortForward(t: SpdyTransport, ports: Record<number, number>): void {
    const reader = new SpdyFrameReader();
    const inflater = new HeaderBlockInflater();
    const deflater = new HeaderBlockDeflater();
    const requests = new Map<string, { error?: number; data?: number; socket?: Socket }>();
    const dataStreams = new Map<number, Socket>();
    let chain = Promise.resolve();
    const send = (frame: Buffer) => t.send(frame);
    const endStream = (id: number) => send(createDataFrame(id, Buffer.alloc(0), SpdyFlag.Fin));
    t.onData((data: Buffer) => {
      for (const f of reader.push(data)) {
        chain = chain.then(() => onFrame(f)).catch((e: unknown) => {
          if (process.env.HOOP_TEST_LOG) console.error('test API server, port-forward:', e);
          t.kill();
        });
      }
      if (reader.broken) t.kill();
    });
    t.onClose(() => {
      for (const s of dataStreams.values()) s.destroy();
      inflater.close();
      deflater.close();
    });
    async function onFrame(f: SpdyFrame): Promise<void> {
      if (!f.control) {
        const socket = dataStreams.get(f.streamId);
        if (socket && f.payload.length > 0) socket.write(f.payload);
        if (socket && f.flags & SpdyFlag.Fin) socket.end();
        return;
      }
      if (f.type === SpdyType.Ping) return void send(createPing(f.payload.readUInt32BE(0)));
      if (f.type === SpdyType.RstStream) return void dataStreams.get(controlStreamId(f)!)?.destroy();
      if (f.type !== SpdyType.SynStream) return;
      const id = controlStreamId(f)!;
      const h = await inflater.inflate(headerBlockOf(f)!);
      send(createSynReply(id, await deflater.deflate({})));
      const requestId = h.get('requestid')?.[0] ?? '';
      const port = Number(h.get('port')?.[0]);
      const pair = requests.get(requestId) ?? {};
      requests.set(requestId, pair);
      if (h.get('streamtype')?.[0] === 'error') pair.error = id;
      else if (h.get('streamtype')?.[0] === 'data') pair.data = id;
      else return void send(createRstStream(id, SpdyRst.ProtocolError));
      if (pair.error === undefined || pair.data === undefined || pair.socket) return;
      const { error: errorId, data: dataId } = pair;
      const target = ports[port];
      if (target === undefined) {
        send(createDataFrame(errorId, Buffer.from(`error forwarding port ${port}: the test pod does not listen on it`)));
        endStream(errorId);
        return endStream(dataId);
      }
      const socket = tcpConnect(target, '127.0.0.1');
      pair.socket = socket;
      sockets.add(socket);
      dataStreams.set(dataId, socket);
      socket.on('data', (c: Buffer) => send(createDataFrame(dataId, c)));
      socket.on('end', () => {
        endStream(dataId);
        endStream(errorId);
      });
      socket.on('error', (e) => {
        send(createDataFrame(errorId, Buffer.from(`error forwarding port ${port}: ${e.message}`)));
        endStream(errorId);
      });
      socket.on('close', () => {
        sockets.delete(socket);
        dataStreams.delete(dataId);
      });
    }
  }

  /** Runs the "command": `echo …` prints its arguments; `fail` exits 3 with stderr; `cat` echoes stdin once. */
  function runExec(ws: WebSocket, q: URLSearchParams): void {
    const command = q.getAll('command');
    const frame = (channel: number, data: string | Buffer) => ws.send(Buffer.concat([Buffer.from([channel]), Buffer.from(data)]));
    const finish = (exit: number) => {
      const st =
        exit === 0
          ? { metadata: {}, status: 'Success' }
          : { metadata: {}, status: 'Failure', message: `command terminated with non-zero exit code: ${exit}`, reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: String(exit) }] } };
      frame(3, JSON.stringify(st));
      ws.close(1000);
    };
    // A real process takes a moment to start; output in the very first instant races kubectl setting up its
    // streams ("Unknown stream id 1, discarding message"), which no kubelet does. (`cat` answers stdin, so it waits anyway.)
    const soon = (f: () => void) => setTimeout(f, 100);
    if (command[0] === 'echo') {
      return soon(() => {
        frame(1, `${command.slice(1).join(' ')}\n`);
        finish(0);
      });
    }
    if (command[0] === 'fail') {
      return soon(() => {
        frame(2, 'it failed\n');
        finish(3);
      });
    }
    if (command[0] === 'cat') {
      ws.on('message', (data: Buffer) => {
        if (data[0] === 0 && data.length > 1) {
          frame(1, data.subarray(1));
          finish(0);
        }
      });
      return;
    }
    soon(() => {
      frame(2, `${command[0] ?? ''}: not found\n`);
      finish(127);
    });
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.on('close', () => sockets.forEach((s) => s.destroy()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `${o.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    seen,
    deleted,
    portForward,
    async close() {
      for (const c of wss.clients) c.terminate();
      for (const sock of rawUpgrades) sock.destroy();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
