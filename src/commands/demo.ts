import type { Command } from 'commander';
import { mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { startPgCluster } from '../dev/pg-cluster.js';
import { startDevIssuer } from '../dev/oidc-issuer.js';
import { parseBrokerConfig } from '../broker/config.js';
import { startBroker } from '../broker/broker.js';
import { waitForSignal } from './broker.js';
import { parsePort } from './connect.js';

const AUDIENCE = 'urn:hoopctl:demo';

/**
 * Everything on embedded defaults in one process: a throwaway PostgreSQL cluster with sample data,
 * the built-in development OIDC issuer (device flow; any login name works) and a broker on SQLite.
 */
export function register(program: Command): void {
  program
    .command('demo')
    .description('Run a broker on embedded defaults: SQLite store, a development OIDC issuer and a demo PostgreSQL target')
    .option('-p, --port <port>', 'broker port', parsePort, 8080)
    .option('--issuer-port <port>', 'development OIDC issuer port', parsePort, 8090)
    .option('--data-dir <dir>', 'where the demo keeps its SQLite store', join(process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state'), 'hoopctl-demo'))
    .addHelpText('after', '\nExample:\n  hoopctl demo          # then, in another terminal: hoopctl login --broker http://127.0.0.1:8080')
    .action(async (opts: { port: number; issuerPort: number; dataDir: string }) => {
      process.stderr.write('starting a throwaway PostgreSQL cluster…\n');
      const cluster = await startPgCluster({ auth: 'scram-sha-256' });
      const admin = new pg.Client({ connectionString: cluster.url() });
      await admin.connect();
      await admin.query('CREATE DATABASE app');
      await admin.end();
      const app = new pg.Client({ connectionString: cluster.url('app') });
      await app.connect();
      await app.query(`CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text NOT NULL, card text, created_at timestamptz DEFAULT now());
        INSERT INTO customers (name, email, card)
          SELECT 'customer ' || i, 'customer' || i || '@example.com', '4111 1111 1111 ' || lpad(i::text, 4, '0') FROM generate_series(1, 50) i;`);
      await app.end();

      const issuer = await startDevIssuer({
        port: opts.issuerPort,
        audience: AUDIENCE,
        defaultGroups: ['developers', 'auditors'],
        users: { mallory: { groups: ['contractors'] } },
        serviceClients: [{ clientId: 'demo-ci', clientSecret: 'demo-ci-secret', groups: ['ci'] }],
      });
      mkdirSync(opts.dataDir, { recursive: true });
      const config = parseBrokerConfig(
        {
          server: { listen: `127.0.0.1:${opts.port}` },
          store: { type: 'sqlite', path: join(opts.dataDir, 'broker.db') },
          auth: { issuers: [{ issuer: issuer.issuer, audience: AUDIENCE, clientId: issuer.cliClientId }] },
          audit: { groups: ['auditors'] },
          admin: { groups: ['auditors'] },
          connections: [
            {
              name: 'demo-pg',
              type: 'postgres',
              description: 'demo PostgreSQL (throwaway cluster)',
              target: { host: cluster.host, port: cluster.port, database: 'app', sslmode: 'disable' },
              credentials: { user: cluster.superuser, password: { env: 'HOOPCTL_DEMO_PG_PASSWORD' } },
              access: { groups: ['developers'], clientIds: ['demo-ci'] },
              reviews: { groups: ['developers'], timeout: '10m' },
              rules: [
                { name: 'no-ddl', match: { statement: ['DropStmt', 'TruncateStmt', 'AlterTableStmt'] }, action: 'deny', message: 'schema changes go through migrations' },
                { name: 'unbounded-writes', match: { statement: ['DeleteStmt', 'UpdateStmt'], where: 'absent' }, action: 'review' },
                { name: 'pii', mask: { columns: ['email', 'card'], detectors: ['email', 'credit_card'], strategy: 'partial' } },
              ],
            },
          ],
        },
        { env: { HOOPCTL_DEMO_PG_PASSWORD: cluster.password }, baseDir: opts.dataDir },
      );
      const broker = await startBroker(config, { logger: pino({ level: 'warn' }, pino.destination(2)) });
      process.stdout.write(
        [
          '',
          `hoopctl demo is running: broker ${broker.url}, OIDC issuer ${issuer.issuer}, store ${join(opts.dataDir, 'broker.db')}`,
          '',
          'In another terminal:',
          `  hoopctl login --broker ${broker.url}     # open the printed URL, sign in with any name (\"mallory\" is refused)`,
          '  hoopctl connect demo-pg --port 5433      # then: psql "postgresql://127.0.0.1:5433/app"',
          '  hoopctl exec demo-pg -e "select name, email, card from customers limit 5"   # email and card come back masked',
          '  hoopctl exec demo-pg -e "drop table customers"                             # denied by rule no-ddl',
          '  hoopctl exec demo-pg -e "delete from customers"                            # held for review: approve it',
          '  hoopctl approve                                                            #   signed in as someone else',
          '  hoopctl sessions',
          '  hoopctl replay <session id>',
          '',
          'As a CI job (client credentials):',
          `  HOOPCTL_BROKER=${broker.url} HOOPCTL_CLIENT_ID=demo-ci HOOPCTL_CLIENT_SECRET=demo-ci-secret hoopctl exec demo-pg -e "select count(*) from customers"`,
          '',
          'Press Ctrl-C to stop (the PostgreSQL cluster is deleted; the session store is kept).',
          '',
        ].join('\n'),
      );
      await waitForSignal();
      await broker.close();
      await issuer.stop();
      await cluster.stop();
    });
}
