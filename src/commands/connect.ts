import type { Command } from 'commander';
import { accessToken, brokerGet, resolveBroker } from './context.js';
import { startLocalTunnel } from '../tunnel/local-listener.js';
import { refusePostgresClient } from '../tunnel/pg-refusal.js';
import { waitForSignal } from './broker.js';
import { UserError, errorMessage } from '../lib/errors.js';

interface ConnectionInfo {
  name: string;
  type: string;
  database?: string;
}

export function register(program: Command): void {
  program
    .command('connect <connection>')
    .description('Open a local listening tunnel to a connection; plain clients (psql, pgbench) use it')
    .option('-p, --port <port>', 'local port (default: a free one)', parsePort)
    .option('--broker <url>', 'broker URL (default: the one you logged in to)')
    .option('-o, --output <format>', 'text, or json (one line when ready)', 'text')
    .addHelpText('after', '\nExample:\n  hoopctl connect pg-prod --port 5433\n  psql "postgresql://127.0.0.1:5433/app"')
    .action(async (name: string, opts: { port?: number; broker?: string; output: string }) => {
      const broker = resolveBroker(opts.broker);
      // Ask first, so a refusal is a clear message now rather than a closed socket later.
      const { connection } = await brokerGet<{ connection: ConnectionInfo }>(broker, `/api/v1/connections/${encodeURIComponent(name)}`);
      const tunnel = await startLocalTunnel({
        broker,
        connection: name,
        port: opts.port,
        getToken: () => accessToken(broker),
        onRefused: (socket, e) => (connection.type === 'postgres' ? refusePostgresClient(socket, `hoopctl: ${e.message}`) : socket.destroy()),
        onEvent: (ev) => {
          if (ev.type === 'refused') process.stderr.write(`connection from ${ev.peer} refused: ${ev.error}\n`);
        },
      }).catch((e: unknown) => {
        throw new UserError(`cannot listen on 127.0.0.1:${opts.port ?? 0}: ${errorMessage(e)}`, { code: 'LISTEN_FAILED', hint: 'pick another --port' });
      });
      const url = `postgresql://hoopctl@${tunnel.host}:${tunnel.port}/${encodeURIComponent(connection.database ?? name)}?sslmode=disable`;
      if (opts.output === 'json') {
        process.stdout.write(JSON.stringify({ connection: name, type: connection.type, host: tunnel.host, port: tunnel.port, url }) + '\n');
      } else {
        process.stdout.write(
          `Tunnel to ${name} (${connection.type}) listening on ${tunnel.host}:${tunnel.port}\n` +
            (connection.type === 'postgres' ? `  psql "${url}"\n  url: ${url}\n` : '') +
            `No password is needed: the broker injects the credential. Press Ctrl-C to close.\n`,
        );
      }
      await waitForSignal();
      await tunnel.close();
      if (opts.output !== 'json') process.stdout.write('tunnel closed\n');
    });
}

export function parsePort(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UserError(`invalid port: ${v}`, { code: 'USAGE' });
  return n;
}
