import type { Command } from 'commander';
import { brokerGet, brokerPost, parseOutput, resolveBroker } from './context.js';
import { formatTime, printJson, renderTable } from './render.js';
import type { IdentityLock } from '../api/session.js';
import { UserError } from '../lib/errors.js';

function target(l: IdentityLock): string {
  return 'subject' in l.target ? l.target.subject : `client ${l.target.clientId}`;
}

/** Incident response: lock an identity out, lift a lock, list locks, end a live session (admin groups). */
export function register(program: Command): void {
  program
    .command('lock [subject]')
    .description('Lock an identity out: no new session until the lock ends, live ones end now (admin groups)')
    .option('--client-id <id>', 'lock a service account by its OAuth client id instead of a subject')
    .requiredOption('--reason <text>', 'why (shown to the locked identity and recorded)')
    .option('--duration <d>', 'how long, e.g. 30m or 12h (default: until lifted)')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExamples:\n  hoopctl lock ci-deploy@example.com --reason "leaked token" --duration 12h\n  hoopctl lock --client-id nightly-etl --reason "runaway job"')
    .action(async (subject: string | undefined, opts: { clientId?: string; reason: string; duration?: string; output: string; broker?: string }) => {
      const format = parseOutput(opts.output);
      if ((subject === undefined) === (opts.clientId === undefined)) throw new UserError('give a subject or --client-id (one of them)', { code: 'USAGE' });
      const body = { ...(subject !== undefined ? { subject } : { clientId: opts.clientId }), reason: opts.reason, ...(opts.duration ? { duration: opts.duration } : {}) };
      const r = await brokerPost<{ lock: IdentityLock; endedSessions: string[] }>(resolveBroker(opts.broker), '/api/v1/locks', body);
      if (format === 'json') return printJson(r);
      process.stdout.write(
        `${r.lock.id}: ${target(r.lock)} locked${r.lock.expiresAt ? ` until ${formatTime(r.lock.expiresAt)}` : ' until lifted'}` +
          `${r.endedSessions.length ? `; ended ${r.endedSessions.length} live session(s): ${r.endedSessions.join(', ')}` : ''}\n` +
          `lift it with: hoopctl unlock ${r.lock.id}\n`,
      );
    });

  program
    .command('unlock <lock>')
    .description('Lift a lock (admin groups)')
    .option('--broker <url>', 'broker URL')
    .action(async (id: string, opts: { broker?: string }) => {
      const r = await brokerPost<{ lock: IdentityLock }>(resolveBroker(opts.broker), `/api/v1/locks/${encodeURIComponent(id)}/lift`, {});
      process.stdout.write(`${r.lock.id}: ${target(r.lock)} unlocked\n`);
    });

  program
    .command('locks')
    .description('List the locks in force (admin and audit groups)')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--broker <url>', 'broker URL')
    .action(async (opts: { output: string; broker?: string }) => {
      const format = parseOutput(opts.output);
      const { locks } = await brokerGet<{ locks: IdentityLock[] }>(resolveBroker(opts.broker), '/api/v1/locks');
      if (format === 'json') return printJson(locks);
      if (locks.length === 0) return void process.stdout.write('no locks in force\n');
      process.stdout.write(
        renderTable(
          ['ID', 'WHO', 'SINCE', 'UNTIL', 'BY', 'REASON'],
          locks.map((l) => [l.id, target(l), formatTime(l.createdAt), l.expiresAt ? formatTime(l.expiresAt) : 'lifted by hand', l.createdBy, l.reason]),
        ),
      );
    });
}
