import { expect } from 'vitest';
import { runProcess, type CliResult } from './stack.js';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Secret, type PostgresConnection } from '../../src/broker/config.js';
import { CancelRegistry } from '../../src/broker/protocols/postgres/cancel-registry.js';
import { proxyPostgresSession, type PostgresSessionSummary } from '../../src/broker/protocols/postgres/proxy.js';
import type { VerdictCache } from '../../src/broker/protocols/postgres/verdict-cache.js';
import type { PgCluster } from '../../src/dev/pg-cluster.js';
import type { StatementReviews } from '../../src/broker/protocols/protocol.js';
import { parseConnectionPolicy, type PolicyIdentity } from '../../src/policy/index.js';
import { MemoryRecorder, type RecordedEvent } from './memory-recorder.js';

/** A local TCP server standing in for the tunnel (each connection is one proxied session), with a policy. */
export interface PolicyProxy {
  port: number;
  events: RecordedEvent[];
  summaries: PostgresSessionSummary[];
  /** Everything the sessions logged (pino JSON lines at debug level). */
  log(): string;
  close(): Promise<void>;
}

export interface PolicyProxyOptions {
  cluster: PgCluster;
  /** The connection's `defaultAction` and `rules`, as they would appear in the broker config. */
  policy: unknown;
  identity: PolicyIdentity;
  database?: string;
  maskKey?: string;
  /** Decides statements a review holds; absent, they are refused as on a connection without approvers. */
  reviews?: StatementReviews;
  /** The broker's verdict cache, shared by the sessions as in the broker; absent, every text is judged afresh. */
  verdicts?: VerdictCache;
}

export async function startPolicyProxy(options: PolicyProxyOptions): Promise<PolicyProxy> {
  const parsed = parseConnectionPolicy(options.policy);
  if (!parsed.ok) throw new Error(parsed.error);
  const { cluster } = options;
  const connection: PostgresConnection = {
    name: 'pg-policy',
    type: 'postgres',
    target: { host: cluster.host, port: cluster.port, database: options.database ?? 'postgres', sslmode: 'disable', connectTimeout: 5_000 },
    credentials: { user: cluster.superuser, password: new Secret(cluster.password) },
    access: { groups: [], clientIds: [], subjects: [] },
    ...parsed.policy,
  };
  const events: RecordedEvent[] = [];
  const summaries: PostgresSessionSummary[] = [];
  const sockets: Socket[] = [];
  const running = new Set<Promise<unknown>>();
  let logText = '';
  const logger = pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        logText += chunk.toString('utf8');
        done();
      },
    }),
  );
  const cancels = new CancelRegistry();
  let n = 0;
  const server: Server = createServer((socket) => {
    sockets.push(socket);
    const recorder = new MemoryRecorder(`policy-${++n}`, events);
    const p = proxyPostgresSession(socket, {
      connection,
      recorder,
      cancels,
      logger,
      identity: options.identity,
      ...(options.maskKey ? { maskKey: options.maskKey } : {}),
      ...(options.reviews ? { reviews: options.reviews } : {}),
      ...(options.verdicts ? { verdicts: options.verdicts } : {}),
    }).then((s) => summaries.push(s));
    running.add(p);
    void p.finally(() => running.delete(p));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    events,
    summaries,
    log: () => logText,
    async close() {
      for (const s of sockets) s.destroy();
      await Promise.all(running);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export type PsqlResult = CliResult;

/** Environment for psql against the proxy, with nothing in it that could authenticate psql on its own. */
export function psqlEnv(port: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  // No PGDATABASE: psql then sends the user name as the database, which the broker routes to the connection's own.
  return { ...env, PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'laptop-user', PGCONNECT_TIMEOUT: '5' };
}

/** psql against the proxy; `verbose` adds the SQLSTATE to error lines. */
export function runPsql(port: number, args: string[], input?: string, options: { verbose?: boolean } = {}): Promise<PsqlResult> {
  const verbose = options.verbose ?? true ? ['-v', 'VERBOSITY=verbose'] : [];
  return runProcess('psql', ['-w', '-X', '-At', ...verbose, ...args], psqlEnv(port), input);
}

/** Fails when any of `raws` (values a rule masks) appears in `text`: what a client, a recording or a log holds. */
export function expectNoRaw(raws: readonly string[], text: string, where: string): void {
  for (const raw of raws) expect(text.includes(raw), `${where} holds "${raw}"`).toBe(false);
}
