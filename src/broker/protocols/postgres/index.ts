/** `postgres` connections: the broker answers the client's startup itself and relays to PostgreSQL with its credential. */
import { readFileSync } from 'node:fs';
import { UserError } from '../../../lib/errors.js';
import { dryRunPolicy } from '../../../policy/dry-run.js';
import { initPolicyEngine } from '../../../policy/index.js';
import type { ProtocolModule } from '../protocol.js';
import { BackendPool } from './backend-pool.js';
import { CancelRegistry } from './cancel-registry.js';
import { serveCancelConnection } from './cancel-connection.js';
import { postgresConnectionSchema, resolvePostgresConnection, type PostgresConnection } from './config.js';
import { proxyPostgresSession } from './proxy.js';
import { VerdictCache } from './verdict-cache.js';
import { rotatePostgresPassword } from './rotate.js';
import { FileSecret } from '../../../lib/secret.js';
import { grantRolesFor, roleValidUntil, SessionRole, sweepSessionRoles } from './session-roles.js';

export const postgresProtocol: ProtocolModule<PostgresConnection> = {
  type: 'postgres',
  schema: postgresConnectionSchema,
  resolve: (raw, ctx) => resolvePostgresConnection(raw as Parameters<typeof resolvePostgresConnection>[0], ctx),
  holds: 'statement',
  rotation: {
    schedule: (c) => (c.credentials.rotateEvery !== undefined && c.credentials.password instanceof FileSecret ? { every: c.credentials.rotateEvery, file: c.credentials.password.path } : undefined),
    rotate: rotatePostgresPassword,
  },
  async judge(c, identity, { text }) {
    if (text === undefined) throw new UserError('no SQL given', { code: 'USAGE', hint: 'pass -e "SQL" or -f FILE' });
    await initPolicyEngine();
    return dryRunPolicy(c, identity, text);
  },
  check(c, at) {
    if (!c.target.sslrootcert) return [];
    try {
      readFileSync(c.target.sslrootcert);
      return [];
    } catch (e) {
      return [`${at}.target.sslrootcert: cannot read ${c.target.sslrootcert}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`];
    }
  },
  target: (c) => ({
    host: c.target.host, port: c.target.port, database: c.target.database, sslmode: c.target.sslmode,
    ...(c.credentials.dynamic ? { user: 'per-session role', admin: c.credentials.user } : { user: c.credentials.user }),
  }),
  start(host) {
    // Cancel keys the broker handed out, so a cancel request arriving on another tunnel finds its session.
    const cancels = new CancelRegistry();
    // Verdicts of repeated statement texts (extended protocol, ORMs), emptied whenever the config is (re)loaded.
    const verdicts = new VerdictCache();
    // Logged-in backends of connections with `pool` set, lent to new sessions; emptied on every reload.
    const pool = new BackendPool({ logger: host.logger });
    // Per-session roles a crash left behind: swept at start, on every reload and every `sweepEvery`.
    let dynamic: PostgresConnection[] = [];
    let sweepTimer: NodeJS.Timeout | undefined;
    const sweep = (c: PostgresConnection) => {
      if (!host.sessionOpen) return;
      sweepSessionRoles(c, host.sessionOpen).then(
        async (dropped) => {
          for (const d of dropped) await host.audit?.('credential-swept', { connection: c.name, role: d.role, session: d.session });
          if (dropped.length > 0) host.logger.info({ connection: c.name, roles: dropped.map((d) => d.role) }, 'dropped session roles left behind');
          else host.logger.debug({ connection: c.name }, 'session roles swept: none left behind');
        },
        (e: unknown) => host.logger.warn({ connection: c.name, err: e instanceof Error ? e.message : String(e) }, 'could not sweep session roles'),
      );
    };
    return {
      describe: (c) => ({ database: c.target.database, ...(c.target.databases ? { databases: c.target.databases } : {}) }),
      prepare(connections) {
        verdicts.clear();
        pool.clear();
        dynamic = connections.filter((c) => c.credentials.dynamic);
        for (const c of dynamic) sweep(c);
        if (sweepTimer) clearInterval(sweepTimer);
        sweepTimer = undefined;
        if (dynamic.length === 0) return;
        // Timers hold 32-bit delays; a longer one would fire at once, over and over.
        sweepTimer = setInterval(() => dynamic.forEach(sweep), Math.min(2 ** 31 - 1, ...dynamic.map((c) => c.credentials.dynamic!.sweepEvery)));
        sweepTimer.unref();
      },
      cancel: (stream, request) => serveCancelConnection(stream, cancels, request, host),
      close: () => pool.close(),
      async serve(stream, s) {
        const dyn = s.connection.credentials.dynamic;
        const role = dyn
          ? new SessionRole(s.connection, s.recorder.sessionId, grantRolesFor(dyn, s.identity.groups), roleValidUntil(s.endsAt), s.recorder, s.logger)
          : undefined;
        const summary = await proxyPostgresSession(stream, {
          connection: s.connection, recorder: s.recorder, cancels, logger: s.logger, identity: s.identity, maskKey: s.maskKey, signal: s.signal, reviews: s.reviews, verdicts,
          cancelOwner: { issuer: s.identity.issuer, subject: s.identity.subject },
          ...(s.cancelKeyAlone ? { cancelKeyAlone: true } : {}),
          ...(role ? { connectBackend: role.connect } : s.connection.pool ? { connectBackend: pool.connect } : {}),
        });
        await role?.drop();
        return {
          outcome: summary.outcome === 'failed' || summary.outcome === 'refused' ? summary.outcome : 'closed',
          statementCount: summary.statementCount,
          errorCount: summary.errorCount,
          ...(summary.error ? { error: summary.error } : {}),
        };
      },
    };
  },
};
