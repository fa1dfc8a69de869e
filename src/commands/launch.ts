import type { Command } from 'commander';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { accessToken, resolveBroker } from './context.js';
import { describeConnection } from './connections.js';
import { startLocalTunnel } from '../tunnel/local-listener.js';
import { clientKindOf, type ListenerHints } from '../tunnel/client-kinds.js';
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
      const connection = await launchable(broker, name, 'postgres');
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

  program
    .command('ssh <connection> [args...]')
    .description("Run ssh through a tunnel to an SSH connection (the tunnel's own key, the broker's host key pinned); the tunnel closes when ssh exits (its exit status is passed through)")
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nArguments after -- go to ssh: options first, then the remote command.\n\nExamples:\n  hoopctl ssh web-1\n  hoopctl ssh web-1 -- uptime\n  hoopctl ssh web-1 -- -t htop')
    .action(async (name: string, args: string[], opts: { broker?: string }) => {
      const broker = resolveBroker(opts.broker);
      const connection = await launchable(broker, name, 'ssh');
      const tunnel = await openClientTunnel(broker, connection);
      try {
        const identityFile = tunnel.hints.json.identityFile as string;
        // The broker's host key, pinned for this port only: no "authenticity of host" prompt, no change to ~/.ssh.
        const knownHosts = join(tunnel.socketDir, 'known_hosts');
        writeFileSync(knownHosts, `[${tunnel.host}]:${tunnel.port} ${connection.hostKey}\n`, { mode: 0o600 });
        const { options, command } = splitSshArgs(args);
        process.exitCode = await runClient('ssh', [
          '-i', identityFile, '-o', 'IdentitiesOnly=yes',
          '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'UpdateHostKeys=no',
          '-p', String(tunnel.port), ...options, `${connection.user ?? 'hoopctl'}@${tunnel.host}`, ...command,
        ], {});
      } finally {
        await tunnel.close();
      }
    });

  program
    .command('kubectl <connection> [args...]')
    .description("Run kubectl through a tunnel to a Kubernetes connection (a kubeconfig of its own with the tunnel's bearer); the tunnel closes when kubectl exits (its exit status is passed through)")
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nArguments after -- go to kubectl.\n\nExamples:\n  hoopctl kubectl k8s-prod -- get pods -n default\n  hoopctl kubectl k8s-prod -- logs -f deploy/web')
    .action(async (name: string, args: string[], opts: { broker?: string }) => {
      const broker = resolveBroker(opts.broker);
      const connection = await launchable(broker, name, 'kubernetes');
      const tunnel = await openClientTunnel(broker, connection);
      try {
        // The temporary kubeconfig in the tunnel's 0700 directory, never the user's own.
        process.exitCode = await runClient('kubectl', args, { KUBECONFIG: tunnel.hints.json.kubeconfig as string });
      } finally {
        await tunnel.close();
      }
    });
}

const CLIENT_OF: Record<string, string> = { postgres: 'psql', ssh: 'ssh', kubernetes: 'kubectl' };
const TYPE_NAME = { postgres: 'PostgreSQL', ssh: 'SSH', kubernetes: 'Kubernetes' } as const;

/** The connection, when its type is what `hoopctl <client>` launches; otherwise a usage error naming the right command. */
async function launchable(broker: string, name: string, type: 'postgres' | 'ssh' | 'kubernetes'): Promise<ConnectionInfo> {
  const connection = await describeConnection(broker, name);
  if (connection.type !== type) {
    const other = CLIENT_OF[connection.type];
    throw new UserError(`${name} is a ${connection.type} connection, not ${TYPE_NAME[type]}`, {
      code: 'USAGE', hint: other ? `hoopctl ${other} ${name}` : `hoopctl connect ${name}`,
    });
  }
  return connection;
}

/** ssh options that take a value (OpenSSH's getopt string), so `-o X=y cmd` keeps `X=y` with its option. */
const SSH_OPTIONS_WITH_VALUE = new Set('BbcDEeFIiJLlmOopQRSWw'.split(''));

/**
 * Splits what came after `--` into ssh options (they must precede the destination) and the remote command (after
 * it): options are the leading `-x` words and their values; the first other word starts the command.
 */
export function splitSshArgs(args: string[]): { options: string[]; command: string[] } {
  let i = 0;
  while (i < args.length && args[i]!.startsWith('-') && args[i] !== '-') {
    const word = args[i]!;
    if (word === '--') {
      i++;
      break;
    }
    i++;
    // `-p22` carries its value; `-p 22` takes the next word.
    const letters = word.slice(1);
    const valueAt = [...letters].findIndex((c) => SSH_OPTIONS_WITH_VALUE.has(c));
    if (valueAt === letters.length - 1) i++;
  }
  const options = args.slice(0, i).filter((a, j) => !(a === '--' && j === i - 1));
  return { options, command: args.slice(i) };
}

/**
 * The one place this command opens a tunnel, for this process's client only: like `connect`, its TCP port wants a
 * per-tunnel secret and refuses other OS users, and it has a Unix socket in a directory only we may enter — which
 * the launched client uses, so no secret needs to reach it.
 */
export async function openClientTunnel(broker: string, connection: ConnectionInfo): Promise<{ host: string; port: number; socketDir: string; hints: ListenerHints; close(): Promise<void> }> {
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
  // What `connect` would print, written into the private directory (the ssh key, the kubeconfig): gone on close.
  const hints = kind.hints(connection, { host: tunnel.host, port: tunnel.port, configDir: socketDir, secret, ...(tunnel.socketPath ? { socketPath: tunnel.socketPath } : {}) });
  return {
    host: tunnel.host, port: tunnel.port, socketDir, hints,
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
