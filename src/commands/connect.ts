import type { Command } from 'commander';
import { accessToken, brokerGet, resolveBroker } from './context.js';
import { startLocalTunnel } from '../tunnel/local-listener.js';
import { refusePostgresClient } from '../tunnel/pg-refusal.js';
import { negotiatePostgresEncryption } from '../tunnel/pg-encryption.js';
import { makeLoopbackCertificate } from '../tunnel/loopback-certificate.js';
import { waitForSignal } from './broker.js';
import { UserError, errorMessage } from '../lib/errors.js';
import { obtainAccessGrant } from './access-request.js';
import { writeKubeconfig } from './kubeconfig.js';
import { defaultConfigDir } from '../auth/token-store.js';
import { join } from 'node:path';
import { followReviews } from './review-stream.js';
import type { Review } from '../api/review.js';

interface ConnectionInfo {
  name: string;
  type: string;
  database?: string;
  /** postgres: every database a client may ask for (the default among them), when the connection lists several. */
  databases?: string[];
  /** ssh: the backend user, and the broker's own host key (what ssh will be shown). */
  user?: string;
  hostKeyFingerprint?: string;
  hostKey?: string;
  approval?: { maxDuration: number; reason: 'required' | 'optional' };
}

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
      const { connection } = await brokerGet<{ connection: ConnectionInfo }>(broker, `/api/v1/connections/${encodeURIComponent(name)}`);
      const grant = connection.approval
        ? await obtainAccessGrant({ broker, connection: name, reason: opts.reason, duration: opts.duration, interactive: Boolean(process.stderr.isTTY) && opts.output !== 'json' })
        : undefined;
      // Made once per start, only for PostgreSQL: clients with sslmode=require get TLS on the loopback hop.
      const loopbackTls = connection.type === 'postgres' ? makeLoopbackCertificate() : undefined;
      const tunnel = await startLocalTunnel({
        broker,
        connection: name,
        port: opts.port,
        getToken: () => accessToken(broker),
        ...(loopbackTls ? { prepareClient: (socket) => negotiatePostgresEncryption(socket, () => loopbackTls.secureContext) } : {}),
        onRefused: (socket, e) => (connection.type === 'postgres' ? refusePostgresClient(socket, `hoopctl: ${e.message}`) : socket.destroy()),
        onEvent: (ev) => {
          if (ev.type === 'refused') process.stderr.write(`connection from ${ev.peer} refused: ${ev.error}\n`);
        },
      }).catch((e: unknown) => {
        throw new UserError(`cannot listen on 127.0.0.1:${opts.port ?? 0}: ${errorMessage(e)}`, { code: 'LISTEN_FAILED', hint: 'pick another --port' });
      });
      const hints = clientHints(connection, name, tunnel.host, tunnel.port);
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

/** What to paste for each kind of connection: the client command, a URL, and machine-readable extras. */
function clientHints(c: ConnectionInfo, name: string, host: string, port: number): { url: string; lines: string[]; footer: string; json: Record<string, unknown> } {
  const injected = 'No password is needed: the broker injects the credential. Press Ctrl-C to close.';
  switch (c.type) {
    case 'ssh': {
      const user = c.user ?? 'hoopctl';
      const sshLine = `ssh -p ${port} ${user}@${host}`;
      return {
        url: `ssh://${user}@${host}:${port}`,
        lines: [sshLine, `scp -P ${port} FILE ${user}@${host}:PATH`, `host key fingerprint to expect: ${c.hostKeyFingerprint} (the broker's; ssh shows it on first connect)`],
        footer: 'No key is needed: the broker logs in with its own. Press Ctrl-C to close.',
        json: { ssh: sshLine, hostKeyFingerprint: c.hostKeyFingerprint, hostKey: c.hostKey },
      };
    }
    case 'http':
      return { url: `http://${host}:${port}`, lines: [`curl http://${host}:${port}/`], footer: injected, json: {} };
    case 'kubernetes': {
      // hoopctl's own kubeconfig, never the user's: it points kubectl at the tunnel and holds no credential.
      const kube = writeKubeconfig({ path: join(defaultConfigDir(), 'kube', `${name}.yaml`), server: `http://${host}:${port}`, contextName: `hoopctl-${name}` });
      return { url: `http://${host}:${port}`, lines: [kube.hint, `kubeconfig: ${kube.path}`], footer: injected, json: { kubeconfig: kube.path, kubectl: kube.hint } };
    }
    default: {
      // sslmode=disable: the hop is loopback, so TLS there would only cost; clients whose URL says require still work.
      const url = `postgresql://hoopctl@${host}:${port}/${encodeURIComponent(c.database ?? name)}?sslmode=disable`;
      const lines = [`psql "${url}"`, `url: ${url}`];
      if (c.databases && c.databases.length > 1) lines.push(`databases: ${c.databases.join(', ')} (put one in the URL's path; none given means ${c.database})`);
      lines.push(
        'sslmode=require works (TLS to this loopback listener with a throwaway certificate); verify-ca/verify-full cannot verify it —',
        '  the broker\'s TLS to the database is set on the broker (target.sslmode)',
      );
      return { url, lines, footer: injected, json: c.databases ? { databases: c.databases } : {} };
    }
  }
}
