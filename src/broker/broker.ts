import { createServer as createHttpServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { WebSocketServer, createWebSocketStream, type WebSocket } from 'ws';
import type { BrokerConfig, Connection } from './config.js';
import { splitHostPort } from './config.js';
import type { Identity } from './identity.js';
import type { SessionRow, Store } from './store/store.js';
import { SqliteStore } from './store/sqlite-store.js';
import { SessionService, AUDIT_STREAM } from './session-service.js';
import { loadCheckpointSigner } from './recording/checkpoints.js';
import { createSink, EventExporter } from './export/event-export.js';
import { lockedError, lockFor, lockMatches, routeLocks } from './locks.js';
import { BrokerMetrics, registerBrokerGauges, serveMetrics } from './metrics.js';
import { enforceSessionLimits, followSession, type SessionLimits } from './live-sessions.js';
import { ReviewNotifier, type NotifyTransition } from './reviews/review-notify.js';
import { createTokenVerifier } from './auth/verify-token.js';
import { approvalRequiredReason, decideAccess } from '../policy/access.js';
import { HoopError, errorMessage } from '../lib/errors.js';
import { bearerToken, clientAddress, errors, sendError, sendJson } from './http-util.js';
import { proxyPostgresSession } from './protocols/postgres/proxy.js';
import { CancelRegistry } from './protocols/postgres/cancel-registry.js';
import type { StatementReviews } from './protocols/postgres/proxy.js';
import { SqlState } from './protocols/postgres/errors.js';
import { ReviewService } from './reviews/review-service.js';
import { routeReviews } from './reviews/review-routes.js';
import type { Review } from './reviews/review.js';
import type { StreamRecorder } from './recording/stream-recorder.js';
import { initPolicyEngine } from '../policy/index.js';
import { randomBytes } from 'node:crypto';
import { proxySshSession } from './protocols/ssh/proxy.js';
import { proxyHttpTunnel } from './protocols/http/proxy.js';
import { loadBrokerHostKey } from './protocols/ssh/host-keys.js';
import { openBrokerResources, type BrokerResources } from './broker-resources.js';

export interface RunningBroker {
  url: string;
  store: Store;
  /**
   * Takes the connections (targets, credentials, access, rules, masks, reviews, limits) of a re-read config: new
   * sessions follow them, running ones keep what they started with. Returns the top-level sections that changed
   * but only take effect after a restart.
   */
  reload(next: BrokerConfig): { connections: number; needRestart: string[] };
  close(): Promise<void>;
}

export interface BrokerDeps {
  logger?: Logger;
  store?: Store;
  /** Files and keys already opened (`prepareBroker`); opened here when absent. */
  resources?: BrokerResources;
}

const TUNNEL_PATH = /^\/api\/v1\/tunnel\/([a-z0-9][a-z0-9._-]{0,62})$/;

/** The composition root: wires config, store, identity, sessions and protocol proxies behind one port. */
export async function startBroker(config: BrokerConfig, deps: BrokerDeps = {}): Promise<RunningBroker> {
  const logger = deps.logger ?? pino({ level: config.logging.level, base: { service: 'hoopctl-broker' } }, pino.destination(2));
  // Every file and key is opened before anything is created: a config that fails here leaves no store and no key.
  const resources = deps.resources ?? openBrokerResources(config, { ownStore: deps.store !== undefined });
  const { storePath } = resources;
  const store = deps.store ?? new SqliteStore(storePath);
  const abandoned = await store.closeAbandonedSessions(Date.now());
  if (abandoned > 0) logger.warn({ sessions: abandoned }, 'marked sessions left open by a previous broker run as failed');
  // The key that signs checkpoints of every stream: configured, or kept next to the store like the SSH host key.
  const signer = loadCheckpointSigner(config.audit.signingKey?.reveal(), resources.auditKeyPath);
  logger.info({ keyId: signer.keyId, created: signer.created }, 'audit checkpoint key');
  const metrics = new BrokerMetrics();
  const sessions = await SessionService.create(store, signer, (s) => {
    const labels = { connection: s.connection, type: s.connectionType };
    metrics.sessions.inc({ ...labels, outcome: s.outcome });
    if (s.statementCount) metrics.statements.inc(labels, s.statementCount);
    if (s.errorCount) metrics.sessionErrors.inc(labels, s.errorCount);
  });
  const checkpointTimer = setInterval(() => {
    sessions.checkpointAll().catch((e: unknown) => logger.error({ err: errorMessage(e) }, 'checkpoint failed'));
  }, config.audit.checkpointSeconds * 1000);
  checkpointTimer.unref();
  const exporters = config.export.map((e) => new EventExporter(store, createSink(e), { name: e.name, batchSize: e.batchSize, logger }));
  for (const e of exporters) e.start();
  if (exporters.length > 0) logger.info({ exports: config.export.map((e) => `${e.name} (${e.type})`) }, 'exporting events');
  registerBrokerGauges(metrics, { store, exporters, liveConnections: () => [...liveSessions.values()].map((s) => s.connection) });
  let metricsServer: Server | undefined;
  if (config.metrics) {
    const [mhost, mport] = splitHostPort(config.metrics.listen);
    const served = await serveMetrics(metrics, mhost, mport, (e) => logger.error({ err: errorMessage(e) }, 'metrics failed'));
    metricsServer = served.server;
    logger.info({ url: served.url }, 'metrics listening');
  }
  const verifier = createTokenVerifier(config.auth.issuers);
  const cancels = new CancelRegistry();
  await initPolicyEngine();
  // Without a configured key, hashes are stable for this process only (they still join within it).
  const maskKey = config.masking.hashKey?.reveal() ?? randomBytes(32);
  const connections = new Map(config.connections.map((c) => [c.name, c]));
  // The broker is an SSH server to clients: its host key is configured, or kept next to the store.
  let sshHostKey: ReturnType<typeof loadBrokerHostKey> | undefined;
  /** Loads what a set of connections needs (the SSH host key) and says what in it deserves a warning. */
  const prepareConnections = (list: Connection[]) => {
    if (!sshHostKey && (list.some((c) => c.type === 'ssh') || config.ssh.hostKey)) {
      sshHostKey = loadBrokerHostKey(config.ssh.hostKey?.reveal(), resources.sshHostKeyPath);
      logger.info({ fingerprint: sshHostKey.fingerprint, created: sshHostKey.created }, 'ssh host key');
    }
    for (const c of list) {
      // Commands typed into a shell are not judged one by one: say so where that leaves a rule easy to walk around.
      if (c.type === 'ssh' && c.defaultAction === 'allow' && c.rules.some((r) => r.action !== 'allow' && !r.match?.shell) && !c.rules.some((r) => r.match?.shell)) {
        logger.warn({ connection: c.name }, 'ssh connection has command rules but allows interactive shells, where commands are recorded, not judged; add a rule with match: { shell: true }');
      }
    }
  };
  prepareConnections(config.connections);
  const auditGroups = new Set(config.audit.groups);
  const live = new Set<Duplex>();
  let stopping = false;
  /** Sessions running in this process: their recorder (one writer per stream) and how to end them. */
  const liveSessions = new Map<string, { recorder: StreamRecorder; identity: Identity; connection: Connection; grantId?: string; end(reason: string): void }>();
  const notifier = new ReviewNotifier(config.notify, logger);
  const notifications = new Set<Promise<void>>();
  const reviews = new ReviewService(store, config.connections, async (review: Review, transition, by, reason) => {
    if (config.notify.length > 0) {
      const sent = notifier.notify(review, transition as NotifyTransition, by?.subject, reason);
      notifications.add(sent);
      void sent.finally(() => notifications.delete(sent));
    }
    const data = { review: review.id, kind: review.kind, connection: review.connection, requester: review.requester.subject, status: review.status,
      ...(by ? { by: by.subject } : {}), ...(reason ? { reason } : {}), ...(review.statement ? { statement: review.statement } : {}),
      ...(review.grantExpiresAt ? { grantExpiresAt: review.grantExpiresAt } : {}) };
    await sessions.audit(`review-${transition}`, data);
    const holder = review.sessionId ? liveSessions.get(review.sessionId) : undefined;
    if (holder) await holder.recorder.record(`review-${transition}`, data);
  });
  await reviews.start();
  reviews.on('grant-ended', (grant) => {
    for (const s of liveSessions.values()) {
      if (s.grantId === grant.id) s.end(`access grant ${grant.id} ${grant.status === 'revoked' ? 'was revoked' : 'ended'}`);
    }
  });
  const running = new Set<Promise<void>>();

  async function authenticate(req: IncomingMessage): Promise<Identity> {
    const token = bearerToken(req);
    try {
      if (!token) throw errors.missingToken();
      return await verifier.verify(token);
    } catch (e) {
      const err = e instanceof HoopError ? e : new HoopError('access token rejected', { code: 'TOKEN_INVALID', status: 401, cause: e });
      metrics.tokenRejections.inc({ code: err.code });
      await sessions.audit('token-rejected', { code: err.code, reason: err.message, clientAddr: clientAddress(req), path: req.url?.split('?')[0] });
      logger.info({ code: err.code, clientAddr: clientAddress(req) }, 'access token rejected');
      throw new HoopError(err.message, { code: err.code, status: 401, hint: err.hint ?? 'run `hoopctl login` to get a fresh token' });
    }
  }

  /**
   * Resolves the connection an identity asks for and, for just-in-time connections, the grant that lets it in now.
   * A refusal is recorded as a refused session.
   */
  async function authorizeOpen(identity: Identity, name: string, req: IncomingMessage): Promise<{ connection: Connection; grant?: Review; release: () => void }> {
    const connection = await authorize(identity, name, req);
    let grant: Review | undefined;
    if (connection.access.approval) {
      grant = await reviews.activeGrant(identity, name);
      if (!grant) {
        const reason = approvalRequiredReason(name);
        await sessions.refuse(identity, name, connection.type, clientAddress(req), reason);
        throw new HoopError(reason, { code: 'APPROVAL_REQUIRED', status: 403, hint: `run \`hoopctl connect ${name} --reason "…" --duration 30m\`` });
      }
    }
    return { connection, grant, release: await takeSessionSlot(identity, connection, req) };
  }

  /**
   * `maxConcurrent`: a slot per session of one identity on one connection, taken before the tunnel opens (so a
   * burst of opens cannot slip past the count) and given back when the session ends. Returns the release.
   */
  const sessionSlots = new Map<string, number>();
  async function takeSessionSlot(identity: Identity, connection: Connection, req: IncomingMessage): Promise<() => void> {
    const max = limitsOf(connection).maxConcurrent;
    if (max === undefined) return () => undefined;
    const key = `${connection.name}\0${identity.issuer}\0${identity.subject}`;
    const open = sessionSlots.get(key) ?? 0;
    if (open >= max) {
      const reason = `${identity.name} already has ${open} session(s) open on ${connection.name}, the most this connection allows at once`;
      await sessions.refuse(identity, connection.name, connection.type, clientAddress(req), reason);
      throw new HoopError(reason, { code: 'ACCESS_DENIED', status: 403, hint: 'close a session first (hoopctl sessions --status open)' });
    }
    sessionSlots.set(key, open + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (sessionSlots.get(key) ?? 1) - 1;
      if (left > 0) sessionSlots.set(key, left);
      else sessionSlots.delete(key);
    };
  }

  /** `?claim=run_id=4242` filters → `{ run_id: '4242' }`; a malformed one is a 400. */
  function claimFilter(pairs: string[]): Record<string, string> | undefined {
    if (pairs.length === 0) return undefined;
    const out: Record<string, string> = {};
    for (const p of pairs) {
      const m = /^([A-Za-z0-9_]+)=(.*)$/.exec(p);
      if (!m) throw new HoopError(`claim filter must be NAME=VALUE (letters, digits, _), got "${p}"`, { code: 'BAD_REQUEST', status: 400 });
      out[m[1]!] = m[2]!;
    }
    return out;
  }

  /** A connection's session limits: its own `access.session`, field by field over the top-level `sessions`. */
  function limitsOf(connection: Connection): SessionLimits {
    return { ...config.sessions, ...Object.fromEntries(Object.entries(connection.access.session ?? {}).filter(([, v]) => v !== undefined)) };
  }

  /** Resolves the connection an identity asks for; a refusal is recorded as a refused session. */
  async function authorize(identity: Identity, name: string, req: IncomingMessage): Promise<Connection> {
    const lock = await lockFor(store, identity);
    if (lock) {
      const e = lockedError(lock);
      await sessions.refuse(identity, name, connections.get(name)?.type ?? 'unknown', clientAddress(req), e.message);
      logger.info({ subject: identity.subject, connection: name, lock: lock.id }, 'access refused: identity locked');
      throw e;
    }
    const connection = connections.get(name);
    if (!connection) {
      await sessions.refuse(identity, name, 'unknown', clientAddress(req), `no connection named ${name}`);
      throw errors.notFound(`connection ${name}`);
    }
    const decision = decideAccess(identity, connection.access, name);
    if (!decision.allowed) {
      await sessions.refuse(identity, name, connection.type, clientAddress(req), decision.reason);
      logger.info({ subject: identity.subject, connection: name }, 'access refused');
      throw errors.denied(decision.reason);
    }
    return connection;
  }

  const isAuditor = (id: Identity) => id.groups.some((g) => auditGroups.has(g));
  const adminGroups = new Set(config.admin.groups);
  const isAdmin = (id: Identity) => id.groups.some((g) => adminGroups.has(g));
  const lockRoutes = {
    store, isAdmin, isAuditor,
    audit: (type: string, data: Record<string, unknown>) => sessions.audit(type, data),
    endLockedSessions(lock: Parameters<typeof lockMatches>[0]): string[] {
      const ended: string[] = [];
      for (const [id, s] of liveSessions) {
        if (!lockMatches(lock, s.identity)) continue;
        ended.push(id);
        void s.recorder.record('ended', { by: lock.createdBy, reason: lock.reason, lock: lock.id }).catch(() => undefined);
        s.end(`${'subject' in lock.target ? `identity ${lock.target.subject}` : `client ${lock.target.clientId}`} was locked by ${lock.createdBy}: ${lock.reason}`);
      }
      return ended;
    },
    async endSession(id: string, reason: string, by: Identity): Promise<boolean> {
      const s = liveSessions.get(id);
      if (!s) return false;
      await s.recorder.record('ended', { by: by.subject, reason });
      s.end(`session ended by ${by.subject}: ${reason}`);
      return true;
    },
  };

  function describeConnection(c: Connection) {
    const target =
      c.type === 'ssh'
        ? { user: c.target.user, hostKeyFingerprint: sshHostKey?.fingerprint, hostKey: sshHostKey?.publicKey, allow: { sftp: c.allow.sftp, portForwarding: c.allow.portForwarding, remoteForwarding: c.allow.remoteForwarding } }
        : c.type === 'postgres'
          ? { database: c.target.database }
          : {};
    return { name: c.name, type: c.type, description: c.description, ...target, approval: c.access.approval ? { maxDuration: c.access.approval.maxDuration, reason: c.access.approval.reason } : undefined };
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://broker');
    const path = url.pathname;
    if (req.method === 'GET' && path === '/healthz') return sendJson(res, 200, { ok: true });
    if (req.method === 'GET' && path === '/api/v1/auth/config') {
      const primary = config.auth.issuers.find((i) => i.clientId) ?? config.auth.issuers[0]!;
      return sendJson(res, 200, { issuer: primary.issuer, clientId: primary.clientId, scopes: primary.scopes, audience: primary.audience });
    }
    if (!path.startsWith('/api/v1/')) throw errors.notFound(path);
    const identity = await authenticate(req);
    if (req.method === 'GET' && path === '/api/v1/whoami') {
      return sendJson(res, 200, { identity, auditor: isAuditor(identity), admin: isAdmin(identity) });
    }
    if (req.method === 'GET' && path === '/api/v1/connections') {
      const list = [...connections.values()].filter((c) => decideAccess(identity, c.access, c.name).allowed).map(describeConnection);
      return sendJson(res, 200, { connections: list });
    }
    let m = /^\/api\/v1\/connections\/([^/]+)$/.exec(path);
    if (req.method === 'GET' && m) {
      return sendJson(res, 200, { connection: describeConnection(await authorize(identity, decodeURIComponent(m[1]!), req)) });
    }
    if (await routeReviews({ reviews, connections, isAuditor, authorizeRequest: authorize }, req, res, identity, url)) return;
    if (await routeLocks(lockRoutes, req, res, identity, url)) return;
    if (req.method === 'GET' && path === '/api/v1/sessions') {
      const limit = Math.min(Number(url.searchParams.get('limit') ?? 50) || 50, 1000);
      const status = url.searchParams.get('status') ?? undefined;
      if (status !== undefined && !['open', 'closed', 'refused', 'failed'].includes(status)) {
        throw new HoopError('status must be open, closed, refused or failed', { code: 'BAD_REQUEST', status: 400 });
      }
      const list = await store.listSessions({
        subject: isAuditor(identity) ? (url.searchParams.get('subject') ?? undefined) : identity.subject,
        connection: url.searchParams.get('connection') ?? undefined,
        status: status as SessionRow['status'] | undefined,
        claims: claimFilter(url.searchParams.getAll('claim')),
        limit,
      });
      return sendJson(res, 200, { sessions: list });
    }
    m = /^\/api\/v1\/sessions\/([^/]+)\/stream$/.exec(path);
    if (req.method === 'GET' && m) {
      const session = await store.getSession(decodeURIComponent(m[1]!));
      if (!session || (!isAuditor(identity) && session.identity.subject !== identity.subject)) throw errors.notFound(`session ${m[1]}`);
      return followSession(store, req, res, session.id, Number(url.searchParams.get('after') ?? 0) || 0);
    }
    m = /^\/api\/v1\/sessions\/([^/]+)$/.exec(path);
    if (req.method === 'GET' && m) {
      const session = await store.getSession(decodeURIComponent(m[1]!));
      if (!session || (!isAuditor(identity) && session.identity.subject !== identity.subject)) throw errors.notFound(`session ${m[1]}`);
      return sendJson(res, 200, { session, events: await store.listEvents(session.id) });
    }
    if (req.method === 'GET' && path === '/api/v1/audit/key') {
      return sendJson(res, 200, { algorithm: 'ed25519', keyId: signer.keyId, publicKey: signer.publicKeyPem });
    }
    if (req.method === 'GET' && path === '/api/v1/audit') {
      if (!isAuditor(identity)) throw errors.denied('only members of the audit groups may read the audit stream');
      const after = Number(url.searchParams.get('after') ?? 0) || 0;
      return sendJson(res, 200, { events: await store.listEvents(AUDIT_STREAM, { afterSeq: after, limit: 1000 }) });
    }
    throw errors.notFound(`${req.method} ${path}`);
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    route(req, res).catch((e: unknown) => {
      if (e instanceof HoopError) return sendError(res, e);
      logger.error({ err: errorMessage(e), path: req.url }, 'request failed');
      sendError(res, new HoopError('internal error', { code: 'INTERNAL', status: 500 }));
    });
  };

  const server: Server = resources.tls
    ? createHttpsServer({ cert: resources.tls.cert, key: resources.tls.key }, onRequest)
    : createHttpServer(onRequest);

  const wss = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 * 1024, perMessageDeflate: false });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const m = TUNNEL_PATH.exec(new URL(req.url ?? '/', 'http://broker').pathname);
    const refuse = (e: HoopError) => {
      const body = JSON.stringify({ error: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) } });
      socket.end(
        `HTTP/1.1 ${e.status ?? 500} ${e.status === 401 ? 'Unauthorized' : e.status === 403 ? 'Forbidden' : e.status === 404 ? 'Not Found' : 'Error'}\r\n` +
          `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    };
    if (!m) return refuse(errors.notFound('tunnel endpoint'));
    (async () => {
      const identity = await authenticate(req);
      const { connection, grant, release } = await authorizeOpen(identity, m[1]!, req);
      let started = false;
      // A handshake that fails never reaches runTunnel: its session slot is given back when the socket goes.
      socket.once('close', () => {
        if (!started) release();
      });
      wss.handleUpgrade(req, socket, head, (ws) => {
        started = true;
        const session = runTunnel(ws, req, identity, connection, grant);
        running.add(session);
        void session.finally(() => {
          running.delete(session);
          release();
        });
      });
    })().catch((e: unknown) => {
      if (e instanceof HoopError) return refuse(e);
      logger.error({ err: errorMessage(e) }, 'tunnel upgrade failed');
      refuse(new HoopError('internal error', { code: 'INTERNAL', status: 500 }));
    });
  });

  /** How a session's held statements meet the review machinery. */
  function statementReviews(identity: Identity, connection: Connection, sessionId: string, detach: boolean, noun: 'statement' | 'command' | 'request' = 'statement'): StatementReviews {
    return {
      async hold(request, io) {
        const earlier = await reviews.consumeApproved(identity, connection.name, request.statement);
        if (earlier) return { approved: true, reviewId: earlier.id, message: `approved earlier in review ${earlier.id}` };
        const review = await reviews.requestStatement({
          requester: identity, connection: connection.name, sessionId: detach ? undefined : sessionId, statement: request.statement, rule: request.rule,
        });
        const who = `${review.minApprovals} approval(s) from ${review.approverGroups.join(', ')}`;
        if (detach) {
          return {
            approved: false, reviewId: review.id, sqlState: SqlState.HeldForReview,
            message: `hoopctl: ${noun} held for review ${review.id} by rule "${request.rule}"; it needs ${who}. Run it again once approved (hoopctl approve ${review.id})`,
          };
        }
        await io.notice(`hoopctl: ${noun} held for review ${review.id} by rule "${request.rule}": waiting for ${who}. An approver runs: hoopctl approve ${review.id}`);
        const decided = await reviews.waitForDecision(review.id, io.signal);
        if (decided.status === 'pending') {
          if (stopping) {
            await reviews.orphan(review.id, 'the broker holding it stopped');
            return { approved: false, reviewId: review.id, message: `hoopctl: review ${review.id} abandoned: the broker is stopping` };
          }
          await reviews.withdraw(review.id, String(io.signal.reason ?? 'withdrawn'));
          return { approved: false, reviewId: review.id, sqlState: SqlState.QueryCanceled, message: `canceling statement due to user request (review ${review.id} withdrawn)` };
        }
        if (decided.status === 'approved') {
          await reviews.consumeApproved(identity, connection.name, request.statement);
          return { approved: true, reviewId: review.id, message: `approved in review ${review.id}` };
        }
        const last = decided.decisions.at(-1);
        const why = decided.status === 'rejected' ? ` by ${last?.name}: ${last?.reason ?? 'no reason given'}` : decided.status === 'expired' ? ': nobody decided in time' : '';
        return { approved: false, reviewId: review.id, message: `hoopctl: review ${review.id} ${decided.status}${why}` };
      },
    };
  }

  async function runTunnel(ws: WebSocket, req: IncomingMessage, identity: Identity, connection: Connection, grant?: Review): Promise<void> {
    const started = Date.now();
    const stream = createWebSocketStream(ws);
    stream.on('error', () => undefined);
    live.add(stream);
    const keepalive = setInterval(() => ws.ping(), 30_000);
    const client = { agent: req.headers['user-agent'], peer: req.headers['x-hoopctl-peer'] };
    let sessionId: string | undefined;
    let limits: (() => void) | undefined;
    try {
      const { row, recorder } = await sessions.open(identity, connection, clientAddress(req), client);
      sessionId = row.id;
      const log = logger.child({ session: row.id, connection: connection.name, subject: identity.subject });
      const ending = new AbortController();
      liveSessions.set(row.id, { recorder, identity, connection, grantId: grant?.id, end: (reason) => ending.abort(reason) });
      if (grant) await recorder.record('grant', { review: grant.id, until: grant.grantExpiresAt });
      limits = enforceSessionLimits(ws, limitsOf(connection), identity.expiresAt, (reason) => {
        void recorder.record('ended', { by: 'broker', reason }).catch(() => undefined);
        ending.abort(reason);
      });
      log.info('session opened');
      const detach = new URL(req.url ?? '/', 'http://broker').searchParams.get('review') === 'detach';
      if (connection.type === 'ssh') {
        const ssh = await proxySshSession(stream, {
          connection, recorder, logger: log, identity, maskKey, signal: ending.signal, hostKey: sshHostKey!,
          reviews: connection.reviews ? statementReviews(identity, connection, row.id, detach, 'command') : undefined, detachedReviews: detach,
        });
        await sessions.close(row.id, recorder, {
          status: ssh.outcome, statementCount: ssh.requestCount, errorCount: ssh.errorCount, ...(ssh.error ? { error: ssh.error } : {}), durationMs: Date.now() - started,
        });
        log.info({ outcome: ssh.outcome, requests: ssh.requestCount }, 'session closed');
        return;
      }
      if (connection.type === 'http' || connection.type === 'kubernetes') {
        const web = await proxyHttpTunnel(stream, {
          connection, recorder, identity, logger: log, maskKey, signal: ending.signal,
          reviews: connection.reviews ? statementReviews(identity, connection, row.id, detach, 'request') : undefined,
        });
        await sessions.close(row.id, recorder, {
          status: web.outcome, statementCount: web.requestCount, errorCount: web.errorCount, ...(web.error ? { error: web.error } : {}), durationMs: Date.now() - started,
        });
        log.info({ outcome: web.outcome, requests: web.requestCount }, 'session closed');
        return;
      }
      const summary = await proxyPostgresSession(stream, {
        connection, recorder, cancels, logger: log, identity, maskKey, signal: ending.signal,
        reviews: connection.reviews ? statementReviews(identity, connection, row.id, detach) : undefined,
      });
      await sessions.close(row.id, recorder, {
        status: summary.outcome === 'failed' ? 'failed' : 'closed',
        statementCount: summary.statementCount,
        errorCount: summary.errorCount,
        ...(summary.error ? { error: summary.error } : {}),
        durationMs: Date.now() - started,
      });
      log.info({ outcome: summary.outcome, statements: summary.statementCount }, 'session closed');
    } catch (e) {
      logger.error({ err: errorMessage(e), session: sessionId }, 'session failed');
    } finally {
      limits?.();
      if (sessionId) liveSessions.delete(sessionId);
      clearInterval(keepalive);
      live.delete(stream);
      stream.destroy();
      if (ws.readyState === ws.OPEN) ws.close(1000);
    }
  }

  const [host, port] = splitHostPort(config.server.listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const scheme = config.server.tls ? 'https' : 'http';
  const url = config.server.publicUrl ?? `${scheme}://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  logger.info({ url, connections: config.connections.length, store: config.store.type }, 'broker listening');

  return {
    url,
    store,
    reload(next) {
      prepareConnections(next.connections);
      connections.clear();
      for (const c of next.connections) connections.set(c.name, c);
      reviews.setConnections(next.connections);
      // Secrets print as [redacted], so a changed secret alone is not noticed here; connections' secrets are reloaded.
      const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
      const needRestart = (['server', 'store', 'auth', 'audit', 'admin', 'sessions', 'export', 'notify', 'metrics', 'masking', 'ssh', 'logging'] as const).filter(
        (k) => !same(config[k], next[k]),
      );
      logger.info({ connections: next.connections.length, needRestart }, 'config reloaded');
      return { connections: next.connections.length, needRestart };
    },
    async close() {
      // Stop accepting, end live sessions, and let each record its close before the store goes.
      stopping = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Tell each session's client why it ends (FATAL), give them a moment, then cut what is left.
      for (const s of liveSessions.values()) s.end('the broker is stopping');
      await Promise.race([Promise.allSettled([...running]), new Promise((r) => setTimeout(r, 2000))]);
      for (const s of live) s.destroy();
      server.closeAllConnections();
      wss.close();
      await Promise.race([Promise.allSettled([...running]), new Promise((r) => setTimeout(r, 5000))]);
      await closed;
      reviews.close();
      clearInterval(checkpointTimer);
      await Promise.race([Promise.allSettled([...notifications]), new Promise((r) => setTimeout(r, 2000))]);
      await sessions.checkpointAll().catch((e: unknown) => logger.error({ err: errorMessage(e) }, 'checkpoint failed'));
      await Promise.all(exporters.map((e) => e.stop()));
      metricsServer?.close();
      await store.close();
    },
  };
}
