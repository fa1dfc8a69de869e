import type { Command } from 'commander';
import { brokerGet, parseOutput, resolveBroker, resolveToken } from './context.js';
import { describeTokenSource } from '../auth/access-token.js';
import { formatTime, printJson, renderTable } from './render.js';
import { listOpenTunnels, type OpenTunnel } from './open-tunnels.js';
import type { Identity } from '../api/identity.js';
import { HoopError } from '../lib/errors.js';
import { exitCodeFor } from '../lib/exit-codes.js';

/**
 * `hoopctl status`: where am I. Everything it can tell without failing on the first gap: the broker, who the broker
 * sees (or why it cannot say), where the token came from and until when, and the tunnels open on this machine.
 * Exits like the command that would fail: 3 when not logged in, 1 when the broker cannot be reached.
 */
export function register(program: Command): void {
  program
    .command('status')
    .description('Show the broker, who you are there, your token\'s source and expiry, and the tunnels open on this machine')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExample:\n  hoopctl status')
    .action(async (opts: { output: string; broker?: string }) => {
      const format = parseOutput(opts.output);
      const broker = resolveBroker(opts.broker);
      const tunnels = listOpenTunnels();
      let identity: Identity | undefined;
      let source: string | undefined;
      let problem: HoopError | undefined;
      try {
        const resolved = await resolveToken(broker);
        source = describeTokenSource(resolved);
        identity = (await brokerGet<{ identity: Identity }>(broker, '/api/v1/whoami', resolved.token)).identity;
      } catch (e) {
        if (!(e instanceof HoopError)) throw e;
        problem = e;
      }
      if (format === 'json') {
        printJson({
          broker,
          ...(identity ? { identity, expiresAt: identity.expiresAt } : {}),
          ...(source ? { source } : {}),
          ...(problem ? { problem: { code: problem.code, message: problem.message, hint: problem.hint } } : {}),
          tunnels,
        });
      } else {
        process.stdout.write(`broker   ${broker}\n`);
        if (identity) {
          process.stdout.write(
            `as       ${identity.name} (${identity.kind}${identity.groups.length ? `, groups: ${identity.groups.join(', ')}` : ''})\n` +
              `token    ${source}, expires ${formatTime(identity.expiresAt)} (${untilText(identity.expiresAt)})\n`,
          );
        } else if (problem) {
          process.stdout.write(`as       unknown: ${problem.message}${problem.hint ? `\n         ${problem.hint}` : ''}\n`);
        }
        process.stdout.write(tunnels.length === 0 ? 'tunnels  none open\n' : `tunnels\n${indent(tunnelTable(tunnels))}`);
      }
      if (problem) process.exitCode = exitCodeFor(problem);
    });
}

function tunnelTable(tunnels: OpenTunnel[]): string {
  return renderTable(['CONNECTION', 'TYPE', 'LISTENING', 'SINCE', 'PID'], tunnels.map((t) => [t.connection, t.type, `${t.host}:${t.port}`, formatTime(t.since), String(t.pid)]));
}

function indent(text: string): string {
  return text.split('\n').map((l) => (l ? `  ${l}` : l)).join('\n');
}

function untilText(at: number): string {
  const s = Math.round((at - Date.now()) / 1000);
  if (s <= 0) return 'expired';
  return s < 120 ? `in ${s}s` : s < 7200 ? `in ${Math.round(s / 60)} min` : `in ${Math.round(s / 3600)} h`;
}
