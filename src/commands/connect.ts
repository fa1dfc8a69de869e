import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { accessToken, accessTokenSource, brokerGet, resolveBroker } from './context.js';
import { describeConnection } from './connections.js';
import { noteOpenTunnel } from './open-tunnels.js';
import { rememberPort, rememberedPort } from './remembered-ports.js';
import { startLocalTunnel } from '../tunnel/local-listener.js';
import { clientKindOf } from '../tunnel/client-kinds.js';
import { waitForSignal } from '../lib/signals.js';
import { UserError, errorMessage } from '../lib/errors.js';
import { obtainAccessGrant } from './access-request.js';
import { defaultConfigDir } from '../auth/token-store.js';
import { followReviews } from './review-stream.js';
import type { Review } from '../api/review.js';
import { refusalReporter } from '../tunnel/refusal-reporter.js';
import { progressOn } from './progress.js';
import { fetchAuthConfig } from '../auth/broker-auth-config.js';

/** A libpq connection string for the broker's PostgreSQL front door (dbname is the connection). */
export async function frontDoorUrl(broker: string, name: string): Promise<string> {
  const connection = await describeConnection(broker, name);
  if (connection.type !== 'postgres') {
    throw new UserError(`${name} is a ${connection.type} connection; the PostgreSQL front door serves postgres connections`, { code: 'USAGE', hint: `hoopctl connect ${name}` });
  }
  const door = (await fetchAuthConfig(broker)).postgres;
  if (!door) throw new UserError('this broker has no PostgreSQL front door (broker config: postgres.listen)', { code: 'NO_FRONT_DOOR', hint: `hoopctl connect ${name}` });
  const q = (v: string) => (/^[^\s'\\]+$/.test(v) ? v : `'${v.replace(/['\\]/g, '\\$&')}'`);
  return `host=${q(door.address.host)} port=${door.address.port} dbname=${q(name)} user=hoopctl sslmode=${door.tls ? 'verify-full' : 'disable'}`;
}

export function register(program: Command): void {
  program
    .command('connect <connection>')
    .description('Open a local listening tunnel to a connection; plain clients (psql, pgbench) use it')
    .option('-p, --port <port>', "local port (default: the one this connection's tunnel had last time, else a free one)", parsePort)
    .option('--broker <url>', 'broker URL (default: the one you logged in to)')
    .option('-o, --output <format>', 'text, or json (one line when ready)', 'text')
    .option('--reason <text>', 'why you need access (just-in-time connections)')
    .option('--duration <span>', 'how long the grant should last, e.g. 30m (just-in-time connections)')
    .option('--print-url', "print a connection string for the broker's PostgreSQL front door (no tunnel; the password is your access token, see --print-token) and exit")
    .option('--print-token', 'print your current access token (the front door\'s password: PGPASSWORD) and exit')
    .option('--insecure-shared-port', "let any local user or process ride the tunnel as you: no per-tunnel secret, no owner check, no Unix socket (how tunnels behaved before)")
    .addHelpText('after', '\nExamples:\n  hoopctl connect pg-prod --port 5433      # prints the psql line, with this tunnel\'s password\n  hoopctl connect pg-prod --reason "INC-123: fix stuck orders" --duration 30m')
    .action(async (name: string, opts: { port?: number; broker?: string; output: string; reason?: string; duration?: string; insecureSharedPort?: boolean; printUrl?: boolean; printToken?: boolean }) => {
      const broker = resolveBroker(opts.broker);
      if (opts.printToken) {
        process.stdout.write(`${await accessToken(broker)}\n`);
        return;
      }
      if (opts.printUrl) {
        process.stdout.write(`${await frontDoorUrl(broker, name)}\n`);
        process.stderr.write(`the password is your access token: PGPASSWORD="$(hoopctl connect --print-token ${name})" psql "<the line above>"\n`);
        return;
      }
      const progress = progressOn();
      // Ask first, so a refusal is a clear message now rather than a closed socket later.
      progress.step(`asking the broker at ${broker} about ${name}…`);
      const connection = await describeConnection(broker, name).finally(() => progress.done());
      if (!connection.approval && (opts.reason !== undefined || opts.duration !== undefined)) {
        throw new UserError(`${name} does not need a just-in-time access request: --reason and --duration are not needed`, { code: 'USAGE', hint: `hoopctl connect ${name}` });
      }
      const grant = connection.approval
        ? await obtainAccessGrant({ broker, connection: name, reason: opts.reason, duration: opts.duration, interactive: Boolean(process.stderr.isTTY) && opts.output !== 'json' })
        : undefined;
      const kind = clientKindOf(connection.type);
      const shared = opts.insecureSharedPort === true;
      // Only the owner rides the tunnel: a secret TCP clients present, a Unix socket in a directory only we may enter.
      const secret = shared ? undefined : randomBytes(24).toString('base64url');
      const socketDir = shared ? undefined : mkdtempSync(join(tmpdir(), 'hoopctl-'));
      const greet = kind.greeter?.(secret);
      const getToken = accessTokenSource(broker);
      const reporter = refusalReporter({
        broker, connection: name, getToken,
        onFailed: (e) => process.stderr.write(`could not record the refusal with the broker: ${e}\n`),
      });
      const removeSocketDir = () => socketDir && rmSync(socketDir, { recursive: true, force: true });
      // --port wins; else last time's port, so saved client configs keep working; a free one when that is taken now.
      const remembered = opts.port === undefined ? rememberedPort(broker, name) : undefined;
      const listenOn = (port: number | undefined) => startLocalTunnel({
        broker,
        connection: name,
        port,
        getToken,
        ownerOnly: !shared,
        ...(kind.tunnelHeaders ? { tunnelHeaders: kind.tunnelHeaders(secret) } : {}),
        ...(socketDir ? { socketPath: (port: number) => join(socketDir, kind.socketName(port)) } : {}),
        ...(greet ? { prepareClient: greet } : {}),
        onRefused: (socket, e) => kind.refuse(socket, e.message),
        onEvent: (ev) => {
          if (ev.type === 'refused') process.stderr.write(`connection from ${ev.peer} refused: ${ev.error}\n`);
          if (ev.type === 'peer-refused') {
            process.stderr.write(`local connection from ${ev.peer}${ev.uid !== undefined ? ` (OS user ${ev.uid})` : ''} refused: ${ev.error}; reported to the broker\n`);
            reporter.report({ peer: ev.peer, reason: ev.error ?? 'refused', ...(ev.uid !== undefined ? { uid: ev.uid } : {}) });
          }
        },
      });
      const tunnel = await listenOn(opts.port ?? remembered).catch((e: unknown) => {
        if (remembered === undefined || (e as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw e;
        process.stderr.write(`port ${remembered} (this connection's last) is taken now; listening on a free one instead\n`);
        return listenOn(undefined);
      }).catch((e: unknown) => {
        removeSocketDir();
        throw new UserError(`cannot listen on 127.0.0.1:${opts.port ?? 0}: ${errorMessage(e)}`, { code: 'LISTEN_FAILED', hint: 'pick another --port' });
      });
      rememberPort(broker, name, tunnel.port);
      const forget = noteOpenTunnel({ connection: name, type: connection.type, broker, host: tunnel.host, port: tunnel.port });
      const hints = kind.hints(connection, {
        host: tunnel.host, port: tunnel.port, configDir: defaultConfigDir(),
        ...(tunnel.socketPath ? { socketPath: tunnel.socketPath } : {}), ...(secret ? { secret } : {}),
      });
      if (shared) {
        process.stderr.write(
          `warning: --insecure-shared-port: any local user or process that reaches ${tunnel.host}:${tunnel.port} rides this tunnel as you; ` +
            'leave the flag out to keep it yours (a per-tunnel secret, a Unix socket, other OS users refused)\n',
        );
      }
      if (opts.output === 'json') {
        process.stdout.write(JSON.stringify({
          connection: name, type: connection.type, host: tunnel.host, port: tunnel.port, url: hints.url, ...hints.json,
          ...(grant ? { grant: grant.id, until: grant.grantExpiresAt } : {}),
        }) + '\n');
      } else {
        process.stdout.write(`Tunnel to ${name} (${connection.type}) listening on ${tunnel.host}:${tunnel.port}\n${hints.lines.map((l) => `  ${l}\n`).join('')}${hints.footer}\n`);
      }
      const ended = grant ? grantEnd(broker, grant) : undefined;
      const stopped = waitForSignal().then(() => undefined);
      const why = await (ended ? Promise.race([stopped, ended.promise]) : stopped);
      ended?.close();
      // When the grant ends, the broker tells each open client why; let that reach them before cutting.
      await tunnel.close({ drainMs: why ? 3000 : 0 });
      await reporter.flush();
      for (const f of hints.files ?? []) rmSync(f, { force: true });
      removeSocketDir();
      forget();
      if (why) throw new UserError(why, { code: 'GRANT_ENDED', hint: `request access again: hoopctl connect ${name} --reason "…"` });
      if (opts.output !== 'json') process.stdout.write('tunnel closed\n');
    });
}

export function parsePort(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UserError(`invalid port: ${v}`, { code: 'USAGE' });
  return n;
}

/** Resolves with a message when the grant runs out or is revoked; the broker enforces it either way. */
function grantEnd(broker: string, grant: Review): { promise: Promise<string>; close(): void } {
  let timer: NodeJS.Timeout | undefined;
  let stream: { close(): void } | undefined;
  const promise = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`access grant ${grant.id} ended`), Math.max(0, (grant.grantExpiresAt ?? 0) - Date.now()));
    stream = followReviews(broker, () => accessToken(broker), {
      onReview: (r) => r.id === grant.id && r.status === 'revoked' && resolve(`access grant ${grant.id} was revoked by ${r.decisions.at(-1)?.name}: ${r.decisions.at(-1)?.reason}`),
      onState: () => undefined,
    });
  });
  return { promise, close: () => (clearTimeout(timer), stream?.close()) };
}
