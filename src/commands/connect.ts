import type { Command } from 'commander';
import { accessToken, resolveBroker } from './context.js';
import { describeConnection } from './connections.js';
import { noteOpenTunnel } from './open-tunnels.js';
import { startLocalTunnel } from '../tunnel/local-listener.js';
import { clientKindOf } from '../tunnel/client-kinds.js';
import { waitForSignal } from './broker.js';
import { UserError, errorMessage } from '../lib/errors.js';
import { obtainAccessGrant } from './access-request.js';
import { defaultConfigDir } from '../auth/token-store.js';
import { followReviews } from './review-stream.js';
import type { Review } from '../api/review.js';

export function register(program: Command): void {
  program
    .command('connect <connection>')
    .description('Open a local listening tunnel to a connection; plain clients (psql, pgbench) use it')
    .option('-p, --port <port>', 'local port (default: a free one)', parsePort)
    .option('--broker <url>', 'broker URL (default: the one you logged in to)')
    .option('-o, --output <format>', 'text, or json (one line when ready)', 'text')
    .option('--reason <text>', 'why you need access (just-in-time connections)')
    .option('--duration <span>', 'how long the grant should last, e.g. 30m (just-in-time connections)')
    .addHelpText('after', '\nExamples:\n  hoopctl connect pg-prod --port 5433\n  psql "postgresql://127.0.0.1:5433/app"\n  hoopctl connect pg-prod --reason "INC-123: fix stuck orders" --duration 30m')
    .action(async (name: string, opts: { port?: number; broker?: string; output: string; reason?: string; duration?: string }) => {
      const broker = resolveBroker(opts.broker);
      // Ask first, so a refusal is a clear message now rather than a closed socket later.
      const connection = await describeConnection(broker, name);
      if (!connection.approval && (opts.reason !== undefined || opts.duration !== undefined)) {
        throw new UserError(`${name} does not need a just-in-time access request: --reason and --duration are not needed`, { code: 'USAGE', hint: `hoopctl connect ${name}` });
      }
      const grant = connection.approval
        ? await obtainAccessGrant({ broker, connection: name, reason: opts.reason, duration: opts.duration, interactive: Boolean(process.stderr.isTTY) && opts.output !== 'json' })
        : undefined;
      const kind = clientKindOf(connection.type);
      const greet = kind.greeter?.();
      const tunnel = await startLocalTunnel({
        broker,
        connection: name,
        port: opts.port,
        getToken: () => accessToken(broker),
        ...(greet ? { prepareClient: greet } : {}),
        onRefused: (socket, e) => kind.refuse(socket, e.message),
        onEvent: (ev) => {
          if (ev.type === 'refused') process.stderr.write(`connection from ${ev.peer} refused: ${ev.error}\n`);
        },
      }).catch((e: unknown) => {
        throw new UserError(`cannot listen on 127.0.0.1:${opts.port ?? 0}: ${errorMessage(e)}`, { code: 'LISTEN_FAILED', hint: 'pick another --port' });
      });
      const forget = noteOpenTunnel({ connection: name, type: connection.type, broker, host: tunnel.host, port: tunnel.port });
      const hints = kind.hints(connection, { host: tunnel.host, port: tunnel.port, configDir: defaultConfigDir() });
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
