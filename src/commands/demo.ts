import type { Command } from 'commander';
import { mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { homedir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { startPgCluster } from '../dev/pg-cluster.js';
import { startDevIssuer } from '../dev/oidc-issuer.js';
import { parseBrokerConfig } from '../broker/config.js';
import { startBroker } from '../broker/broker.js';
import { waitForSignal } from '../lib/signals.js';
import { parsePort } from './connect.js';

const AUDIENCE = 'urn:hoopctl:demo';
/** The role the broker connects as: owns nothing, may only read and write the demo's table. */
const DEMO_ROLE = 'demo_app';
const PASSWORD_ENV = 'HOOPCTL_DEMO_PG_PASSWORD';

interface DemoConfigInput {
  port: number;
  issuerUrl: string;
  cliClientId: string;
  pg: { host: string; port: number };
  storePath: string;
}

/**
 * The demo's broker config, as a YAML-able object: the running demo and `--print-config` both use it. The role's
 * password is an env reference, so the printed form never holds it.
 */
export function demoBrokerConfig(o: DemoConfigInput): Record<string, unknown> {
  return {
    server: { listen: `127.0.0.1:${o.port}` },
    store: { type: 'sqlite', path: o.storePath },
    auth: { issuers: [{ issuer: o.issuerUrl, audience: AUDIENCE, clientId: o.cliClientId }] },
    audit: { groups: ['auditors'] },
    admin: { groups: ['auditors'] },
    connections: [
      {
        name: 'demo-pg',
        type: 'postgres',
        description: `demo PostgreSQL (throwaway cluster), as the unprivileged role ${DEMO_ROLE}`,
        target: { host: o.pg.host, port: o.pg.port, database: 'app', sslmode: 'disable' },
        credentials: { user: DEMO_ROLE, password: { env: PASSWORD_ENV } },
        access: { groups: ['developers'], clientIds: ['demo-ci'] },
        reviews: { groups: ['developers'], timeout: '10m' },
        // Deny rules are tried in order and the first that matches names the refusal: the narrow ones come first
        // (CREATE ROLE and ALTER SYSTEM are also DDL). The role lacks these privileges anyway; the rules say why.
        rules: [
          {
            name: 'no-privilege-changes',
            match: { statement: ['GrantStmt', 'GrantRoleStmt', 'CreateRoleStmt', 'AlterRoleStmt', 'AlterRoleSetStmt', 'DropRoleStmt', 'ReassignOwnedStmt', 'AlterDefaultPrivilegesStmt'] },
            action: 'deny',
            message: 'roles and privileges are changed by a DBA, not through the gate',
          },
          { name: 'no-role-switch', match: { roleChange: true }, action: 'deny', message: 'a session keeps the role the broker connected as' },
          { name: 'no-program', match: { category: ['copy-program'] }, action: 'deny', message: 'COPY … PROGRAM runs shell commands on the database server' },
          { name: 'no-server-admin', match: { category: ['admin'] }, action: 'deny', message: 'server administration (ALTER SYSTEM, server files) is not done through the gate' },
          { name: 'no-ddl', match: { category: ['ddl'] }, action: 'deny', message: 'schema changes go through migrations' },
          { name: 'no-truncate', match: { statement: ['TruncateStmt'] }, action: 'deny', message: 'TRUNCATE empties a table: delete with a WHERE instead' },
          { name: 'unbounded-writes', match: { statement: ['DeleteStmt', 'UpdateStmt'], where: 'absent' }, action: 'review' },
          { name: 'pii', mask: { columns: ['email', 'card'], detectors: ['email', 'credit_card'], strategy: 'partial' } },
        ],
      },
    ],
  };
}

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
    .option('--pg-port <port>', 'demo PostgreSQL port (default: a free one)', parsePort)
    .option('--data-dir <dir>', 'where the demo keeps its SQLite store', join(process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state'), 'hoopctl-demo'))
    .option('--print-config', 'print the demo\'s broker config (YAML; the password as an env reference) and exit')
    .addHelpText(
      'after',
      '\nExamples:\n  hoopctl demo          # then, in another terminal: hoopctl login --broker http://127.0.0.1:8080\n' +
        '  hoopctl policy check -c <(hoopctl demo --print-config) --connection demo-pg --as group=developers -e "grant all on customers to public"\n',
    )
    .action(async (opts: { port: number; issuerPort: number; pgPort?: number; dataDir: string; printConfig?: boolean }) => {
      const storePath = join(opts.dataDir, 'broker.db');
      if (opts.printConfig) {
        const config = demoBrokerConfig({
          port: opts.port, issuerUrl: `http://127.0.0.1:${opts.issuerPort}`, cliClientId: 'hoopctl-cli', pg: { host: '127.0.0.1', port: opts.pgPort ?? 5432 }, storePath,
        });
        process.stdout.write(
          `# hoopctl demo's broker config. The demo creates the role ${DEMO_ROLE} with a fresh password each run and passes it as\n` +
            `# ${PASSWORD_ENV}: \`broker check\` needs it set, \`policy check\` does not.\n` +
            `${opts.pgPort ? '' : '# The demo picks a free PostgreSQL port at start (fix it with --pg-port).\n'}${stringify(config)}`,
        );
        return;
      }
      process.stderr.write('starting a throwaway PostgreSQL cluster…\n');
      const cluster = await startPgCluster({ auth: 'scram-sha-256', ...(opts.pgPort ? { port: opts.pgPort } : {}) });
      const rolePassword = randomBytes(18).toString('hex');
      const admin = new pg.Client({ connectionString: cluster.url() });
      await admin.connect();
      await admin.query('CREATE DATABASE app');
      // Least privilege: the broker's role is no superuser and owns nothing, so even a statement no rule names
      // cannot create objects, change privileges or reach the server's files and programs.
      await admin.query(`CREATE ROLE ${DEMO_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '${rolePassword}'`);
      await admin.query(`REVOKE ALL ON DATABASE app FROM PUBLIC; GRANT CONNECT ON DATABASE app TO ${DEMO_ROLE}`);
      await admin.end();
      const app = new pg.Client({ connectionString: cluster.url('app') });
      await app.connect();
      await app.query(`CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text NOT NULL, card text, created_at timestamptz DEFAULT now());
        INSERT INTO customers (name, email, card)
          SELECT 'customer ' || i, 'customer' || i || '@example.com', '4111 1111 1111 ' || lpad(i::text, 4, '0') FROM generate_series(1, 50) i;
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
        GRANT USAGE ON SCHEMA public TO ${DEMO_ROLE};
        GRANT SELECT, INSERT, UPDATE, DELETE ON customers TO ${DEMO_ROLE};
        GRANT USAGE ON SEQUENCE customers_id_seq TO ${DEMO_ROLE};`);
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
        demoBrokerConfig({ port: opts.port, issuerUrl: issuer.issuer, cliClientId: issuer.cliClientId, pg: { host: cluster.host, port: cluster.port }, storePath }),
        { env: { [PASSWORD_ENV]: rolePassword }, baseDir: opts.dataDir },
      );
      const broker = await startBroker(config, { logger: pino({ level: 'warn' }, pino.destination(2)) });
      process.stdout.write(
        [
          '',
          `hoopctl demo is running: broker ${broker.url}, OIDC issuer ${issuer.issuer}, store ${storePath}`,
          '',
          'In another terminal:',
          `  hoopctl login --broker ${broker.url}     # open the printed URL, sign in with any name (\"mallory\" is refused)`,
          '  hoopctl connect demo-pg --port 5433      # then: psql "postgresql://127.0.0.1:5433/app"',
          '  hoopctl exec demo-pg -e "select name, email, card from customers limit 5"   # email and card come back masked',
          '  hoopctl exec demo-pg -e "drop table customers"                             # denied by rule no-ddl',
          `  hoopctl exec demo-pg -e "grant all on customers to public"                 # denied by rule no-privilege-changes (and ${DEMO_ROLE} may not anyway)`,
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
