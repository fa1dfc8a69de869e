import { createServer as createHttpServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import type { Identity } from '../api/identity.js';
import type { Review } from '../api/review.js';
import { HoopError, errorMessage } from '../lib/errors.js';
import { initPolicyEngine } from '../policy/index.js';
import { Admission } from './admission.js';
import { openBrokerResources, type BrokerResources } from './broker-resources.js';
import { requestAuthenticator, tokenAuthenticator } from './auth/request-auth.js';
import { startPgFrontDoor, type PgFrontDoor } from './front-door/pg-front-door.js';
import { createTokenVerifier } from './auth/verify-token.js';
import { splitHostPort, type BrokerConfig } from './config.js';
import { createSink, EventExporter } from './export/event-export.js';
import { sendError, sendJson } from './http-util.js';
import { LiveSessionRegistry } from './live-sessions.js';
import { describeLockTarget, lockHandlers, lockMatches } from './locks.js';
import type { IdentityLock } from '../api/session.js';
import type { Signal } from './store/signal-bus.js';
import { BrokerMetrics, registerBrokerGauges, serveMetrics } from './metrics.js';
import { ProtocolRuntimes } from './protocols/registry.js';
import { loadCheckpointSigner } from './recording/checkpoints.js';
import { ReviewNotifier, type NotifyTransition } from './reviews/review-notify.js';
import { reviewHandlers } from './reviews/review-routes.js';
import { ReviewService } from './reviews/review-service.js';
import { BROKER_LOST, newReplicaId, ReplicaLiveness } from './replica-liveness.js';
import { SharedStreamRecorder } from './recording/shared-stream-recorder.js';
import { connectionHandlers } from './routes/connection-routes.js';
import { credentialHandlers } from './routes/credential-routes.js';
import { CredentialRotation } from './credential-rotation.js';
import { createDispatcher } from './routes/dispatch.js';
import { refuseMalformedRequests } from './routes/malformed-requests.js';
import { sessionHandlers } from './routes/session-routes.js';
import { mcpEndpoint } from './mcp/mcp-endpoint.js';
import { SessionService } from './session-service.js';
import { openStore } from './store/open-store.js';
import type { Store } from './store/store.js';
import { storeUnavailable } from './store/store-errors.js';
import { attachTunnelEndpoint } from './tunnel-endpoint.js';

export interface RunningBroker {
  url: string;
  store: Store;
  /**
   * Takes the connections (targets, credentials, access, rules, masks, reviews, limits) of a re-read config: new
   * sessions follow them, running ones keep what they started with. Returns the top-level sections that changed
   * but only take effect after a restart.
   */
  reload(next: BrokerConfig): { connections: number; needRestart: string[] };
  /**
   * SIGTERM: stop being ready (/readyz 503), refuse new tunnels (503, the reason), let running sessions finish for up
   * to `server.drainGrace`, then close — ending what still runs with a reason its client sees.
   */
  drain(): Promise<void>;
  close(): Promise<void>;
}

export interface BrokerDeps {
  logger?: Logger;
  store?: Store;
  /** Files and keys already opened (`prepareBroker`); opened here when absent. */
  resources?: BrokerResources;
}

/**
 * The composition root: wires config, store, identity, reviews, sessions and the protocol modules behind one port.
 * What each piece does lives in its own file; this one only connects them and knows the order they start and stop in.
 */
export async function startBroker(config: BrokerConfig, deps: BrokerDeps = {}): Promise<RunningBroker> {
  const logger = deps.logger ?? pino({ level: config.logging.level, base: { service: 'hoopctl-broker' } }, pino.destination(2));
  // Every file and key is opened before anything is created: a config that fails here leaves no store and no key.
  const resources = deps.resources ?? openBrokerResources(config, { ownStore: deps.store !== undefined });
  const store = deps.store ?? (await openStore(config.store, resources.storePath));
  // SQLite: every session left open (one broker owns the file). PostgreSQL: only those no replica claims; the
  // sessions of replicas that stopped heartbeating are swept below, never those of a replica still running.
  const abandoned = await store.closeAbandonedSessions(Date.now());
  if (abandoned > 0) logger.warn({ sessions: abandoned }, 'marked sessions left open by a previous broker run as failed');
  const replica = newReplicaId();
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
  const live = new LiveSessionRegistry();
  registerBrokerGauges(metrics, { store, exporters, liveConnections: () => live.connections() });
  let metricsServer: Server | undefined;
  if (config.metrics) {
    const [mhost, mport] = splitHostPort(config.metrics.listen);
    const served = await serveMetrics(metrics, mhost, mport, (e) => logger.error({ err: errorMessage(e) }, 'metrics failed'));
    metricsServer = served.server;
    logger.info({ url: served.url }, 'metrics listening');
  }
  const verifier = createTokenVerifier(config.auth.issuers);
  await initPolicyEngine();
  // Without a configured key, hashes are stable for this process only (they still join within it).
  const maskKey = config.masking.hashKey?.reveal() ?? randomBytes(32);
  const connections = new Map(config.connections.map((c) => [c.name, c]));
  const protocols = new ProtocolRuntimes({
    logger, dataDir: resources.keyDir, keys: { ssh: config.ssh.hostKey },
    sessionOpen: async (id) => (await store.getSession(id))?.status === 'open',
    audit: (type, data) => sessions.audit(type, data),
  });
  protocols.prepare(config.connections);
  let stopping = false;
  let draining = false;
  let endReason: string | undefined;
  const notifier = new ReviewNotifier(config.notify, logger);
  const notifications = new Set<Promise<void>>();
  // The decisions already in their holder's chain (decided here, or brought by a signal or a resync), so that a
  // signal and a resync that both bring the same news record it once. The newest few thousand are enough: a
  // decision is brought within seconds of being made.
  const recordedDecisions = new Set<string>();
  const noteRecorded = (id: string) => {
    recordedDecisions.add(id);
    if (recordedDecisions.size > 10_000) recordedDecisions.delete(recordedDecisions.values().next().value!);
  };
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
    const holder = review.sessionId ? live.get(review.sessionId) : undefined;
    if (holder) {
      if (review.status !== 'pending') noteRecorded(review.id);
      await holder.recorder.record(`review-${transition}`, data);
    }
  });
  await reviews.start();
  const liveness = new ReplicaLiveness({
    store, replica, logger, heartbeatMs: config.replicas.heartbeat, lostAfterMs: config.replicas.lostAfter,
    async onLost(lost) {
      // Each lost session's own chain gets its end (appended at the head the store holds, so it still verifies) and
      // a signed checkpoint; the broker-wide stream says which replica was lost; the statements it held are orphaned.
      for (const { session, replica: lostReplica } of lost) {
        const recorder = new SharedStreamRecorder(store, session);
        await recorder.record('close', { status: 'failed', error: BROKER_LOST, replica: lostReplica, sweptBy: replica });
        await recorder.checkpoint(signer);
        await sessions.audit('session-lost', { session, replica: lostReplica, reason: BROKER_LOST, sweptBy: replica });
      }
      await reviews.orphanHeldBy(new Set(lost.map((l) => l.session)), `${BROKER_LOST}: the broker holding it stopped`);
    },
    onDeclaredLost() {
      live.endWhere(() => true, 'this broker lost contact with the other replicas; reconnect');
    },
  });
  await liveness.start();
  logger.info({ replica, store: config.store.type }, 'broker replica');
  reviews.on('grant-ended', (grant) => {
    live.endWhere((s) => s.grantId === grant.id, `access grant ${grant.id} ${grant.status === 'revoked' ? 'was revoked' : 'ended'}`);
  });

  const authenticate = requestAuthenticator({ verifier, sessions, metrics, logger });
  const admission = new Admission({ store, sessions, reviews, logger, connections: () => connections, defaultLimits: config.sessions });
  const auditGroups = new Set(config.audit.groups);
  const isAuditor = (id: Identity) => id.groups.some((g) => auditGroups.has(g));
  const adminGroups = new Set(config.admin.groups);
  const isAdmin = (id: Identity) => id.groups.some((g) => adminGroups.has(g));
  const endLocked = (lock: IdentityLock) =>
    live.endWhere((s) => lockMatches(lock, s.identity), `${describeLockTarget(lock)} was locked by ${lock.createdBy}: ${lock.reason}`, {
      by: lock.createdBy, reason: lock.reason, lock: lock.id,
    });
  const endHere = async (id: string, reason: string, by: string): Promise<boolean> => {
    const s = live.get(id);
    if (!s) return false;
    await s.recorder.record('ended', { by, reason });
    s.end(`session ended by ${by}: ${reason}`);
    return true;
  };
  // Live signals between replicas on one store: what is decided here and must act where another replica serves it.
  const signals = store.signalBus(replica, logger);
  const publish = (s: Signal) => {
    signals.publish(s).catch((e: unknown) => logger.error({ err: errorMessage(e), signal: s.kind }, 'could not signal the other replicas'));
  };
  reviews.publishTo(publish);
  // Decided through another broker: the session held here records the outcome in its own chain, as it would have —
  // once, whether the signal or a resync after a missed one brought the news.
  const recordRemoteDecision = async (review: Review) => {
    const holder = review.sessionId && review.status !== 'pending' ? live.get(review.sessionId) : undefined;
    if (!holder || recordedDecisions.has(review.id)) return;
    noteRecorded(review.id);
    const last = review.decisions.at(-1);
    await holder.recorder.record(`review-${review.status}`, {
      review: review.id, kind: review.kind, connection: review.connection, requester: review.requester.subject, status: review.status,
      ...(last ? { by: last.subject, ...(last.reason ? { reason: last.reason } : {}) } : {}), ...(review.statement ? { statement: review.statement } : {}), viaReplica: true,
    });
  };
  const onSignal = async (s: Signal) => {
    if (s.kind === 'review' || s.kind === 'grant-ended') {
      const review = await reviews.applyRemote(s);
      if (review && s.kind === 'review') await recordRemoteDecision(review);
      return;
    }
    if (s.kind === 'lock') {
      const lock = (await store.activeLocks(Date.now())).find((l) => l.id === s.id);
      if (lock) endLocked(lock);
      return;
    }
    await endHere(s.id, s.reason, s.by);
  };
  const resync = async () => {
    const { decided, endedGrants } = await reviews.resync();
    for (const review of decided) await recordRemoteDecision(review);
    const ended = new Set(endedGrants.map((g) => g.id));
    live.endWhere((s) => s.grantId !== undefined && ended.has(s.grantId), 'the access grant it was opened under ended');
    for (const lock of await store.activeLocks(Date.now())) endLocked(lock);
    for (const r of (await store.sessionEndRequests?.(live.ids())) ?? []) {
      if (await endHere(r.session, r.reason, r.by)) logger.info({ session: r.session, by: r.by }, 'ended a session on a `sessions end` request its signal missed');
    }
  };
  await signals.listen({
    signal: (s) => void onSignal(s).catch((e: unknown) => logger.error({ err: errorMessage(e), signal: s.kind }, 'acting on a replica signal failed')),
    resync: () => void resync().catch((e: unknown) => logger.error({ err: errorMessage(e) }, 'replica signal resync failed')),
  });
  const lockRoutes = {
    store,
    audit: (type: string, data: Record<string, unknown>) => sessions.audit(type, data),
    endLockedSessions: (lock: IdentityLock) => {
      publish({ kind: 'lock', id: lock.id });
      return endLocked(lock);
    },
    async endSession(id: string, reason: string, by: Identity): Promise<boolean> {
      if (await endHere(id, reason, by.subject)) return true;
      // Served by another replica (the store says it is open): that one ends it on the signal, or — not listening
      // at that moment — on its resync, which finds the request kept with the session.
      const open = store.requestSessionEnd
        ? await store.requestSessionEnd(id, { by: by.subject, reason, at: Date.now() })
        : (await store.getSession(id))?.status === 'open';
      if (!open) return false;
      await signals.publish({ kind: 'end-session', id, reason, by: by.subject });
      return true;
    },
  };
  const connectionRoutes = { connections: () => connections, protocols, admission, isAuditor, isAdmin };
  // Backend credentials the broker rotates: on `hoopctl broker rotate` and on each connection's `rotateEvery`.
  const rotation = new CredentialRotation({ connections: () => connections, audit: (type, data) => sessions.audit(type, data), logger });
  rotation.start();
  const sessionRoutes = { store, signer, isAuditor };

  const route = createDispatcher({
    authenticate, isAuditor, isAdmin,
    audit: (type, data) => sessions.audit(type, data),
    handlers: {
      health: ({ res }) => sendJson(res, 200, { ok: true }),
      async ready({ res }) {
        if (draining) return sendJson(res, 503, { ready: false, reason: 'draining' });
        try {
          await store.lastEventPos();
        } catch {
          return sendJson(res, 503, { ready: false, reason: 'store unreachable' });
        }
        sendJson(res, 200, { ready: true });
      },
      authConfig({ res }) {
        const primary = config.auth.issuers.find((i) => i.clientId) ?? config.auth.issuers[0]!;
        sendJson(res, 200, {
          issuer: primary.issuer, clientId: primary.clientId, scopes: primary.scopes, audience: primary.audience,
          // Where PostgreSQL clients reach the front door (`hoopctl connect --print-url`), and whether it wants TLS.
          ...(pgFrontDoor ? { postgres: { address: pgPublicAddress(config, pgFrontDoor.address), tls: Boolean(resources.tls) } } : {}),
        });
      },
      ...connectionHandlers(connectionRoutes),
      ...credentialHandlers({ rotation }),
      ...reviewHandlers({ reviews, connections, isAuditor, authorizeRequest: (who, name, r) => admission.authorize(who, name, r) }),
      ...lockHandlers(lockRoutes),
      ...sessionHandlers(sessionRoutes),
    },
  });

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    // The MCP front door (/mcp, Streamable HTTP, and its RFC 9728 metadata) checks its own bearer and answers 401 with
    // WWW-Authenticate as the MCP authorization spec asks; everything else is the route table's.
    (async () => {
      if (await mcp.route(req, res, new URL(req.url ?? '/', 'http://broker'))) return;
      await route(req, res);
    })().catch((e: unknown) => {
      const unavailable = storeUnavailable(e);
      if (unavailable) {
        logger.error({ err: errorMessage(e), path: req.url }, 'store refused a write');
        return sendError(res, unavailable);
      }
      if (e instanceof HoopError) return sendError(res, e);
      logger.error({ err: errorMessage(e), path: req.url }, 'request failed');
      sendError(res, new HoopError('internal error', { code: 'INTERNAL', status: 500 }));
    });
  };

  const server: Server = resources.tls ? createHttpsServer({ cert: resources.tls.cert, key: resources.tls.key }, onRequest) : createHttpServer(onRequest);
  refuseMalformedRequests(server, { audit: (type, data) => sessions.audit(type, data), logger });
  const tunnels = attachTunnelEndpoint(server, { authenticate, admission, sessions, reviews, live, protocols, maskKey, logger, stopping: () => stopping, draining: () => draining });
  // The MCP front door runs each tool call as a session through the same runner as a tunnel (src/broker/mcp/).
  let publicUrl = '';
  const mcp = mcpEndpoint({
    authenticate, admission, sessions, reviews, live, protocols, maskKey, logger, stopping: () => stopping,
    connections: () => connections, running: new Set(), publicUrl: () => publicUrl, issuers: () => config.auth.issuers.map((i) => i.issuer),
  });

  // The PostgreSQL front door (src/broker/front-door/): the same token check, admission and session runner as a tunnel.
  let pgFrontDoor: PgFrontDoor | undefined;
  if (config.postgres) {
    pgFrontDoor = await startPgFrontDoor(
      { authenticateToken: tokenAuthenticator({ verifier, sessions, metrics, logger }), admission, sessions, reviews, live, protocols, maskKey, logger, stopping: () => stopping, draining: () => draining },
      { listen: config.postgres.listen, ...(resources.tls ? { tls: resources.tls } : {}) },
    );
  }

  const [host, port] = splitHostPort(config.server.listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  }).catch(async (e: unknown) => {
    await pgFrontDoor?.close();
    throw e;
  });
  const addr = server.address() as AddressInfo;
  const scheme = config.server.tls ? 'https' : 'http';
  const url = config.server.publicUrl ?? `${scheme}://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  publicUrl = url.replace(/\/+$/, '');
  logger.info({ url, connections: config.connections.length, store: config.store.type }, 'broker listening');

  return {
    url,
    store,
    reload(next) {
      protocols.prepare(next.connections);
      connections.clear();
      for (const c of next.connections) connections.set(c.name, c);
      reviews.setConnections(next.connections);
      // Secrets print as [redacted], so a changed secret alone is not noticed here; connections' secrets are reloaded.
      const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
      const needRestart = (['server', 'store', 'auth', 'audit', 'admin', 'replicas', 'sessions', 'export', 'notify', 'metrics', 'masking', 'ssh', 'logging', 'postgres'] as const).filter(
        (k) => !same(config[k], next[k]),
      );
      logger.info({ connections: next.connections.length, needRestart }, 'config reloaded');
      return { connections: next.connections.length, needRestart };
    },
    async drain() {
      draining = true;
      // No session starts from now on: backends kept for them are closed, and sessions that end now do not give theirs back.
      protocols.close();
      const graceMs = config.server.drainGrace;
      logger.info({ graceMs }, 'draining: not ready, no new sessions; waiting for running sessions');
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), graceMs)));
      const over = await Promise.race([live.whenEmpty().then(() => false), graceOver]);
      clearTimeout(timer);
      if (over) endReason = `the broker is stopping (its ${Math.round(graceMs / 1000)}s drain period is over): connect again to reach another broker`;
    },
    async close() {
      // Stop accepting, end live sessions, and let each record its close before the store goes.
      stopping = true;
      draining = true;
      protocols.close();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      const sessionsEnded = Promise.all([tunnels.close(endReason), mcp.close(), pgFrontDoor?.close()]);
      server.closeAllConnections();
      await sessionsEnded;
      await closed;
      reviews.close();
      await liveness.stop();
      await signals.close();
      rotation.stop();
      clearInterval(checkpointTimer);
      await Promise.race([Promise.allSettled([...notifications]), new Promise((r) => setTimeout(r, 2000))]);
      await sessions.checkpointAll().catch((e: unknown) => logger.error({ err: errorMessage(e) }, 'checkpoint failed'));
      await Promise.all(exporters.map((e) => e.stop()));
      metricsServer?.close();
      await store.close();
    },
  };
}

/** host:port PostgreSQL clients should use for the front door: `postgres.publicHost` (its port defaulting to the listener's), else the bound address. */
function pgPublicAddress(config: BrokerConfig, bound: string): { host: string; port: number } {
  const [boundHost, boundPort] = splitHostPort(bound);
  const pub = config.postgres?.publicHost;
  if (!pub) return { host: boundHost, port: boundPort };
  return /:\d+$/.test(pub) && !/^[0-9a-fA-F:]+$/.test(pub) ? { host: splitHostPort(pub)[0], port: splitHostPort(pub)[1] } : { host: pub.replace(/^\[|\]$/g, ''), port: boundPort };
}
