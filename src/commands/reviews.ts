import type { Command } from 'commander';
import { createElement } from 'react';
import { accessToken, brokerGet, brokerPost, parseOutput, resolveBroker } from './context.js';
import { followReviews } from './review-stream.js';
import { formatDuration, formatTime, printJson, renderTable } from './render.js';
import type { Review } from '../api/review.js';
import type { Identity } from '../api/identity.js';
import { describeAgent } from '../api/agent-headers.js';
import { UserError } from '../lib/errors.js';

export function register(program: Command): void {
  program
    .command('reviews')
    .description('List reviews: held statements and access requests (pending by default)')
    .option('--status <list>', 'comma-separated: pending, approved, rejected, expired, withdrawn, revoked, orphaned, or all', 'pending')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExample:\n  hoopctl reviews --status all -o json')
    .action(async (opts: { status: string; output: string; broker?: string }) => {
      const format = parseOutput(opts.output);
      const { reviews } = await brokerGet<{ reviews: Review[] }>(resolveBroker(opts.broker), `/api/v1/reviews?status=${encodeURIComponent(opts.status)}`);
      if (format === 'json') return printJson(reviews);
      if (reviews.length === 0) return void process.stdout.write(`no ${opts.status} reviews\n`);
      process.stdout.write(
        renderTable(
          ['ID', 'KIND', 'STATUS', 'REQUESTER', 'CONNECTION', 'APPROVALS', 'CREATED', 'WHAT'],
          reviews.map((r) => [r.id, r.kind, r.status, r.requester.via ? `${r.requester.name} (${describeAgent(r.requester)})` : r.requester.name, r.connection,
            `${r.decisions.filter((d) => d.action === 'approve').length}/${r.minApprovals}`, formatTime(r.createdAt), summary(r)]),
        ),
      );
    });

  program
    .command('approve [review]')
    .description('Decide reviews: with an id, approve (or --reject) it; without, open the live approver console')
    .option('--reject', 'reject instead of approving')
    .option('--reason <text>', 'why (required to reject, and where the connection requires it)')
    .option('-o, --output <format>', 'text or json (with an id)', 'text')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExamples:\n  hoopctl approve                          # live console\n  hoopctl approve rev_1a2b3c --reason "checked with the on-call"\n  hoopctl approve rev_1a2b3c --reject --reason "use a migration"')
    .action(async (id: string | undefined, opts: { reject?: boolean; reason?: string; output: string; broker?: string }) => {
      const broker = resolveBroker(opts.broker);
      if (!id) return runConsole(broker);
      const format = parseOutput(opts.output);
      const { review } = await brokerPost<{ review: Review }>(broker, `/api/v1/reviews/${reviewId(id)}/${opts.reject ? 'reject' : 'approve'}`, { reason: opts.reason });
      if (format === 'json') return printJson(review);
      process.stdout.write(`${review.id}: ${opts.reject ? 'rejected' : review.status === 'approved' ? 'approved' : `approval recorded (${review.decisions.filter((d) => d.action === 'approve').length}/${review.minApprovals})`}\n`);
    });

  program
    .command('withdraw <review>')
    .description('Withdraw your own pending review (a held statement or an access request) before anyone decides it')
    .option('--reason <text>', 'why (recorded)')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExample:\n  hoopctl withdraw rev_4f2a9c01 --reason "ran it on staging instead"')
    .action(async (id: string, opts: { reason?: string; broker?: string }) => {
      const { review } = await brokerPost<{ review: Review }>(resolveBroker(opts.broker), `/api/v1/reviews/${reviewId(id)}/withdraw`, { reason: opts.reason });
      process.stdout.write(`${review.id}: withdrawn\n`);
    });

  program
    .command('revoke <review>')
    .description('End an active access grant now; sessions opened under it are closed')
    .requiredOption('--reason <text>', 'why')
    .option('--broker <url>', 'broker URL')
    .action(async (id: string, opts: { reason: string; broker?: string }) => {
      const { review } = await brokerPost<{ review: Review }>(resolveBroker(opts.broker), `/api/v1/reviews/${reviewId(id)}/revoke`, { reason: opts.reason });
      process.stdout.write(`${review.id}: grant revoked\n`);
    });
}

export function summary(r: Review): string {
  if (r.kind === 'access') return `access for ${formatDuration(r.durationMs ?? 0)}${r.reason ? `: ${r.reason}` : ''}`;
  const sql = (r.statement ?? '').replace(/\s+/g, ' ').trim();
  return (sql.length > 80 ? `${sql.slice(0, 79)}…` : sql) + (r.detail ? ` — ${r.detail}` : '');
}

async function runConsole(broker: string): Promise<void> {
  if (!process.stdin.isTTY) {
    throw new UserError('the approver console needs a terminal', { code: 'USAGE', hint: 'use `hoopctl reviews -o json` and `hoopctl approve <id> --reason …` in scripts' });
  }
  const [{ render }, { ApproveConsole }] = await Promise.all([import('ink'), import('./ui/approve-console.js')]);
  const { identity: me } = await brokerGet<{ identity: Identity }>(broker, '/api/v1/whoami');
  const byId = new Map<string, Review>();
  const load = async () => {
    const { reviews } = await brokerGet<{ reviews: Review[] }>(broker, '/api/v1/reviews?status=pending,approved');
    byId.clear();
    for (const r of reviews) byId.set(r.id, r);
  };
  await load();
  let connected = false;
  let quit: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (quit = resolve));
  const props = () => ({
    reviews: [...byId.values()],
    me,
    now: Date.now(),
    connected,
    onDecide: async (id: string, action: 'approve' | 'reject', reason: string) => {
      const { review } = await brokerPost<{ review: Review }>(broker, `/api/v1/reviews/${id}/${action}`, { reason });
      byId.set(review.id, review);
      app.rerender(createElement(ApproveConsole, props()));
    },
    onRevoke: async (id: string, reason: string) => {
      const { review } = await brokerPost<{ review: Review }>(broker, `/api/v1/reviews/${id}/revoke`, { reason });
      byId.set(review.id, review);
      app.rerender(createElement(ApproveConsole, props()));
    },
    onQuit: () => quit(),
  });
  const app = render(createElement(ApproveConsole, props()));
  const stream = followReviews(broker, () => accessToken(broker), {
    onReview: (r) => {
      byId.set(r.id, r);
      app.rerender(createElement(ApproveConsole, props()));
    },
    onState: (state) => {
      const reconnected = state && !connected;
      connected = state;
      // After a gap, reload: changes during it were not streamed.
      if (reconnected) void load().then(() => app.rerender(createElement(ApproveConsole, props())));
      else app.rerender(createElement(ApproveConsole, props()));
    },
  });
  const tick = setInterval(() => app.rerender(createElement(ApproveConsole, props())), 1000);
  await done;
  clearInterval(tick);
  stream.close();
  app.unmount();
}

/**
 * A review id as the broker issues them (`rev_` and hex). Anything else cannot name a review: said as such here,
 * rather than as whatever the broker answers for a path it does not serve.
 */
function reviewId(id: string): string {
  if (!/^rev_[0-9a-f]+$/.test(id)) throw new UserError(`no review ${id}`, { code: 'NOT_FOUND', hint: 'list them with `hoopctl reviews --status all`' });
  return id;
}
