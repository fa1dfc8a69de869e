import type { Command } from 'commander';
import { parseOutput, profiles, selectedProfile, settings, tokenStore } from './context.js';
import { formatTime, printJson, renderTable } from './render.js';
import { brokerKey } from '../auth/token-store.js';

/**
 * `hoopctl profiles`: the brokers this machine knows by name, who is logged in to each (from the stored login, no
 * network), until when, and which one commands use now. `(default)` is the broker of the last plain `hoopctl login`.
 */
export function register(program: Command): void {
  program
    .command('profiles')
    .description('List the profiles (named brokers), who is logged in to each, and the one in use')
    .option('-o, --output <format>', 'text or json', 'text')
    .addHelpText('after', '\nExamples:\n  hoopctl login --broker https://hoop.prod.example.com --profile prod\n  hoopctl profiles\n  hoopctl --profile prod sessions      # or HOOPCTL_PROFILE=prod')
    .action(async (opts: { output: string }) => {
      const format = parseOutput(opts.output);
      const store = tokenStore();
      const inUse = selectedProfile() ?? (process.env.HOOPCTL_BROKER ? undefined : '(default)');
      const named = Object.entries(profiles()).map(([name, p]) => ({ name, broker: p.broker }));
      const fallback = settings().get('broker');
      const all = [...(fallback ? [{ name: '(default)', broker: fallback }] : []), ...named.sort((a, b) => a.name.localeCompare(b.name))];
      const rows = await Promise.all(
        all.map(async (p) => {
          const stored = await store.load(brokerKey(p.broker)).catch(() => undefined);
          return {
            ...p,
            current: p.name === inUse,
            ...(stored ? { subject: stored.subject, expiresAt: stored.tokens.expiresAt, refreshable: Boolean(stored.tokens.refreshToken) } : {}),
          };
        }),
      );
      if (format === 'json') return printJson(rows);
      if (rows.length === 0) return void process.stdout.write('no profiles yet: hoopctl login --broker <url> [--profile <name>]\n');
      process.stdout.write(
        renderTable(
          ['', 'PROFILE', 'BROKER', 'LOGGED IN AS', 'TOKEN'],
          rows.map((r) => [
            r.current ? '*' : '',
            r.name,
            r.broker,
            r.subject ?? (r.expiresAt ? '?' : '-'),
            r.expiresAt === undefined ? 'none' : r.expiresAt > Date.now() ? `until ${formatTime(r.expiresAt)}` : r.refreshable ? 'expired (refreshable)' : 'expired',
          ]),
        ),
      );
    });
}
