import type { Command } from 'commander';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { accessToken, resolveBroker } from './context.js';
import { describeConnection } from './connections.js';
import { startLocalTunnel } from '../tunnel/local-listener.js';
import { clientKindOf } from '../tunnel/client-kinds.js';
import type { ConnectionInfo } from '../api/connection.js';
import { UserError, errorMessage } from '../lib/errors.js';

/**
 * `hoopctl psql <conn> [-- psql args]`: opens the tunnel, runs the real client against it, closes the tunnel when
 * the client exits, and exits with the client's status. The tunnel is opened through `openClientTunnel` alone, so
 * when the local listener gains per-tunnel credentials (a socket in a private dir, a password) only that function
 * and the client's environment change.
 */
export function register(program: Command): void {
  program
    .command('psql <connection> [args...]')
    .description('Run psql through a tunnel to a PostgreSQL connection; the tunnel closes when psql exits (its exit status is passed through)')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nArguments after -- go to psql.\n\nExamples:\n  hoopctl psql pg-prod\n  hoopctl psql pg-prod -- -c "select count(*) from orders"')
    .action(async (name: string, args: string[], opts: { broker?: string }) => {
      const broker = resolveBroker(opts.broker);
      const connection = await describeConnection(broker, name);
      if (connection.type !== 'postgres') {
        throw new UserError(`${name} is a ${connection.type} connection, not PostgreSQL`, { code: 'USAGE', hint: connection.type === 'ssh' ? `hoopctl connect ${name}` : `hoopctl connections` });
      }
      const tunnel = await openClientTunnel(broker, connection);
      try {
        // libpq reads these: psql rides the tunnel's Unix socket (a 0700 directory: no password needed, none shown).
        process.exitCode = await runClient('psql', args, {
          PGHOST: tunnel.socketDir,
          PGPORT: String(tunnel.port),
          PGSSLMODE: 'disable',
          ...(connection.database ? { PGDATABASE: connection.database } : {}),
        });
      } finally {
        await tunnel.close();
      }
    });
}

/**
 * The one place this command opens a tunnel, for this process's client only: like `connect`, its TCP port wants a
 * per-tunnel secret and refuses other OS users, and it has a Unix socket in a directory only we may enter — which
 * the launched client uses, so no secret needs to reach it.
 */
export async function openClientTunnel(broker: string, connection: ConnectionInfo): Promise<{ host: string; port: number; socketDir: string; close(): Promise<void> }> {
  const kind = clientKindOf(connection.type);
  const secret = randomBytes(24).toString('base64url');
  const socketDir = mkdtempSync(join(tmpdir(), 'hoopctl-'));
  const greet = kind.greeter?.(secret);
  const tunnel = await startLocalTunnel({
    broker,
    connection: connection.name,
    getToken: () => accessToken(broker),
    ownerOnly: true,
    ...(kind.tunnelHeaders ? { tunnelHeaders: kind.tunnelHeaders(secret) } : {}),
    socketPath: (port: number) => join(socketDir, kind.socketName(port)),
    ...(greet ? { prepareClient: greet } : {}),
    onRefused: (socket, e) => kind.refuse(socket, e.message),
  }).catch((e: unknown) => {
    rmSync(socketDir, { recursive: true, force: true });
    throw new UserError(`cannot open a local tunnel: ${errorMessage(e)}`, { code: 'LISTEN_FAILED' });
  });
  return {
    host: tunnel.host, port: tunnel.port, socketDir,
    async close() {
      await tunnel.close({ drainMs: 0 });
      rmSync(socketDir, { recursive: true, force: true });
    },
  };
}

/** Runs `program` on this terminal and resolves with its exit status (128 + signal number when killed). */
function runClient(program: string, args: string[], env: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: 'inherit', env: { ...process.env, ...env } });
    // Ctrl-C belongs to the client (psql cancels its query): this process must not die of it first.
    const ignore = () => undefined;
    process.on('SIGINT', ignore);
    child.on('error', (e: NodeJS.ErrnoException) => {
      process.off('SIGINT', ignore);
      reject(new UserError(e.code === 'ENOENT' ? `${program} is not installed (not found on PATH)` : `cannot run ${program}: ${e.message}`, { code: 'CLIENT_MISSING' }));
    });
    child.on('exit', (code, signal) => {
      process.off('SIGINT', ignore);
      resolve(code ?? 128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 9));
    });
  });
}
