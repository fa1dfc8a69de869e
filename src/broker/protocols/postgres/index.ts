/** `postgres` connections: the broker answers the client's startup itself and relays to PostgreSQL with its credential. */
import { readFileSync } from 'node:fs';
import { UserError } from '../../../lib/errors.js';
import { dryRunPolicy } from '../../../policy/dry-run.js';
import { initPolicyEngine } from '../../../policy/index.js';
import type { ProtocolModule } from '../protocol.js';
import { CancelRegistry } from './cancel-registry.js';
import { postgresConnectionSchema, resolvePostgresConnection, type PostgresConnection } from './config.js';
import { proxyPostgresSession } from './proxy.js';

export const postgresProtocol: ProtocolModule<PostgresConnection> = {
  type: 'postgres',
  schema: postgresConnectionSchema,
  resolve: (raw, ctx) => resolvePostgresConnection(raw as Parameters<typeof resolvePostgresConnection>[0], ctx),
  holds: 'statement',
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
  target: (c) => ({ host: c.target.host, port: c.target.port, database: c.target.database, user: c.credentials.user, sslmode: c.target.sslmode }),
  start() {
    // Cancel keys the broker handed out, so a cancel request arriving on another tunnel finds its session.
    const cancels = new CancelRegistry();
    return {
      describe: (c) => ({ database: c.target.database, ...(c.target.databases ? { databases: c.target.databases } : {}) }),
      async serve(stream, s) {
        const summary = await proxyPostgresSession(stream, {
          connection: s.connection, recorder: s.recorder, cancels, logger: s.logger, identity: s.identity, maskKey: s.maskKey, signal: s.signal, reviews: s.reviews,
        });
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
