import type { Command } from 'commander';
import { brokerGet, parseOutput, resolveBroker } from './context.js';
import { printJson, renderTable } from './render.js';
import type { ConnectionInfo } from '../api/connection.js';
import { HoopError, UserError } from '../lib/errors.js';
import { closestNames } from '../lib/did-you-mean.js';

export function register(program: Command): void {
  program
    .command('connections')
    .description('List the connections you may use: name, type, description, just-in-time access, reviews')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExamples:\n  hoopctl connections\n  hoopctl connections -o json | jq -r \'.[].name\'')
    .action(async (opts: { output: string; broker?: string }) => {
      const format = parseOutput(opts.output);
      const list = await listConnections(resolveBroker(opts.broker));
      if (format === 'json') return printJson(list);
      if (list.length === 0) return void process.stdout.write('no connections you may use\n');
      process.stdout.write(
        renderTable(
          ['NAME', 'TYPE', 'ACCESS', 'REVIEWS', 'DESCRIPTION'],
          list.map((c) => [c.name, c.type, c.approval ? 'just-in-time' : 'direct', c.reviews ? 'on' : '-', c.description ?? '']),
        ),
      );
    });
}

/** What this identity may use, as the broker lists it (`GET /api/v1/connections`). */
export async function listConnections(broker: string, token?: string): Promise<ConnectionInfo[]> {
  const { connections } = await brokerGet<{ connections: ConnectionInfo[] }>(broker, '/api/v1/connections', token);
  return connections.sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * One connection, asked for before anything is opened. An unknown name gets the nearest names this identity may use
 * ("did you mean …") and the list command; only names the broker already lists for this identity are shown.
 */
export async function describeConnection(broker: string, name: string, token?: string): Promise<ConnectionInfo> {
  try {
    return (await brokerGet<{ connection: ConnectionInfo }>(broker, `/api/v1/connections/${encodeURIComponent(name)}`, token)).connection;
  } catch (e) {
    if (!(e instanceof HoopError) || e.code !== 'NOT_FOUND') throw e;
    const names = (await listConnections(broker, token).catch(() => [])).map((c) => c.name);
    const close = closestNames(name, names);
    const mean = close.length > 0 ? ` (did you mean ${close.map((c) => `"${c}"`).join(' or ')}?)` : '';
    throw new UserError(`no connection "${name}"${mean}`, {
      code: 'NOT_FOUND',
      hint: names.length > 0 ? `you may use: ${names.join(', ')} (hoopctl connections)` : 'this identity may use no connection (hoopctl connections)',
    });
  }
}
