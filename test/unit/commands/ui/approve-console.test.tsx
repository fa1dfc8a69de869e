import { render } from 'ink-testing-library';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApproveConsole, type ApproveConsoleProps } from '../../../../src/commands/ui/approve-console.js';
import type { Review } from '../../../../src/api/review.js';
import {
  KEY,
  MIN,
  NOW,
  accessReview,
  alice,
  bob,
  deferred,
  etl,
  eventually,
  identity,
  press,
  screen,
  statementReview,
} from './fixtures.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()!();
});

/** Renders the console as `bob` (groups dba, oncall) with spies for every callback; `update` re-renders with new props. */
function setup(overrides: Partial<ApproveConsoleProps> = {}) {
  let props: ApproveConsoleProps = {
    reviews: [statementReview('rv-1'), accessReview('rv-2')],
    me: bob,
    now: NOW,
    connected: true,
    onDecide: vi.fn<ApproveConsoleProps['onDecide']>(async () => {}),
    onRevoke: vi.fn<NonNullable<ApproveConsoleProps['onRevoke']>>(async () => {}),
    onQuit: vi.fn(),
    ...overrides,
  };
  const r = render(<ApproveConsole {...props} />);
  cleanups.push(() => r.unmount());
  return {
    stdin: r.stdin,
    props,
    see: () => screen(r.lastFrame()),
    /** The row under the selection marker. */
    selected: () => screen(r.lastFrame()).split('\n').find((l) => l.startsWith('›')) ?? '',
    update(next: Partial<ApproveConsoleProps>) {
      props = { ...props, ...next };
      r.rerender(<ApproveConsole {...props} />);
    },
  };
}

describe('ApproveConsole list', () => {
  it('shows who I am, the stream state, the counts and one row per pending review', () => {
    const ui = setup();
    const s = ui.see();
    expect(s).toContain('hoopctl approve · bob@example.com (human) · groups: dba, oncall · ● live');
    expect(s).toContain('2 pending · 2 yours to decide · 0 active grants');
    const lines = s.split('\n');
    const row1 = lines.findIndex((l) => l.includes('rv-1'));
    const row2 = lines.findIndex((l) => l.includes('rv-2'));
    // Oldest first: rv-1 was filed 2m05s ago, rv-2 40s ago.
    expect(row1).toBeLessThan(row2);
    expect(lines[row1]).toMatch(/^› rv-1 +statement +alice@example\.com \(human\) → pg-prod +2m05s +0\/1$/);
    expect(lines[row1 + 1]).toMatch(/^ +DELETE FROM orders WHERE id = 42 +you may decide$/);
    expect(lines[row2]).toMatch(/^ {2}rv-2 +access +etl-nightly \(service\) → pg-prod +40s +0\/2$/);
    expect(lines[row2 + 1]).toMatch(/^ +access for 30m: INC-123 backfill +you may decide$/);
    expect(s).toContain('↑/↓ move · enter details · a approve · r reject · tab grants · q quit');
  });

  it('counts approvals so far against the minimum', () => {
    const carol = identity('carol', { groups: ['oncall'] });
    const ui = setup({
      reviews: [accessReview('rv-2', { decisions: [{ subject: carol.subject, name: carol.name, action: 'approve', at: NOW - 10_000 }] })],
    });
    expect(ui.selected()).toMatch(/rv-2 .* 1\/2$/);
  });

  it('says it is waiting when nothing is pending, and shows when the stream is down', () => {
    const ui = setup({ reviews: [] });
    expect(ui.see()).toContain('No pending reviews — waiting for new ones (live)');
    ui.update({ connected: false });
    expect(ui.see()).toContain('○ reconnecting…');
    expect(ui.see()).toContain('No pending reviews — waiting for new ones (reconnecting…)');
  });

  it('truncates a long statement to one line', () => {
    const long = `UPDATE accounts SET balance = 0 WHERE id IN (${Array.from({ length: 60 }, (_, i) => i).join(', ')})`;
    const ui = setup({ reviews: [statementReview('rv-9', { statement: long })] });
    const summary = ui.see().split('\n').find((l) => l.includes('UPDATE accounts'))!;
    expect(summary).toContain('…');
    expect(summary).toMatch(/you may decide$/);
    expect(summary.length).toBeLessThanOrEqual(100);
  });

  it('moves the selection with ↓/↑ and j/k, and stops at the ends', async () => {
    const ui = setup({ reviews: [statementReview('rv-1'), accessReview('rv-2'), statementReview('rv-3', { createdAt: NOW - 1000 })] });
    expect(ui.selected()).toContain('rv-1');
    await press(ui.stdin, KEY.down);
    await eventually(() => expect(ui.selected()).toContain('rv-2'));
    await press(ui.stdin, 'j', 'j');
    await eventually(() => expect(ui.selected()).toContain('rv-3'));
    await press(ui.stdin, KEY.up);
    await eventually(() => expect(ui.selected()).toContain('rv-2'));
    await press(ui.stdin, 'k', 'k', 'k');
    await eventually(() => expect(ui.selected()).toContain('rv-1'));
  });

  it('a long queue scrolls with the selection and says how many rows are out of view', async () => {
    const many = Array.from({ length: 20 }, (_, i) => statementReview(`rv-${String(i).padStart(2, '0')}`, { createdAt: NOW - (100 - i) * 1000 }));
    const ui = setup({ reviews: many });
    expect(ui.see()).toContain('20 pending');
    expect(ui.see()).toContain('↓ 10 more');
    expect(ui.see()).not.toContain('rv-19');
    await press(ui.stdin, ...Array.from({ length: 19 }, () => 'j'));
    await eventually(() => expect(ui.selected()).toContain('rv-19'));
    expect(ui.see()).toContain('↑ 10 more');
    expect(ui.see()).not.toContain('rv-00');
  });

  it('several presses that arrive in one read (a held key, a busy terminal) each move the selection', async () => {
    const many = Array.from({ length: 6 }, (_, i) => statementReview(`rv-${String(i).padStart(2, '0')}`, { createdAt: NOW - (100 - i) * 1000 }));
    const ui = setup({ reviews: many });
    ui.stdin.write('jjjj');
    await eventually(() => expect(ui.selected()).toContain('rv-04'));
    ui.stdin.write('kjk');
    await eventually(() => expect(ui.selected()).toContain('rv-03'));
  });

  it('presses that arrive one by one before the console renders again each move the selection', async () => {
    const many = Array.from({ length: 6 }, (_, i) => statementReview(`rv-${String(i).padStart(2, '0')}`, { createdAt: NOW - (100 - i) * 1000 }));
    const ui = setup({ reviews: many });
    for (let i = 0; i < 3; i++) ui.stdin.write('j');
    await eventually(() => expect(ui.selected()).toContain('rv-03'));
    for (let i = 0; i < 2; i++) ui.stdin.write(KEY.up);
    await eventually(() => expect(ui.selected()).toContain('rv-01'));
  });

  it('q quits', async () => {
    const ui = setup();
    await press(ui.stdin, 'q');
    await eventually(() => expect(ui.props.onQuit).toHaveBeenCalledTimes(1));
  });
});

describe('ApproveConsole detail view', () => {
  it('enter shows requester, identity type, client id, groups, the full statement, rule, age and expiry; esc goes back', async () => {
    const ui = setup();
    await press(ui.stdin, KEY.enter);
    await eventually(() => expect(ui.see()).toContain('Review rv-1 · statement · pending'));
    const s = ui.see();
    expect(s).toMatch(/Requester +alice@example\.com/);
    expect(s).toMatch(/Identity type +human/);
    expect(s).toMatch(/Client id +hoopctl-cli/);
    expect(s).toMatch(/Groups +dev/);
    expect(s).toMatch(/Connection +pg-prod/);
    // The full statement, line breaks and all.
    expect(s).toMatch(/Statement +DELETE FROM orders\n +WHERE id = 42/);
    expect(s).toMatch(/Rule +deletes-need-review/);
    expect(s).toMatch(/Age +2m05s ago/);
    expect(s).toMatch(/Expires +in 13m/);
    expect(s).toMatch(/Approvers +dba · 0\/1 approvals/);
    expect(s).toMatch(/Decisions +none yet/);
    expect(s).toMatch(/You +you may decide/);

    await press(ui.stdin, KEY.esc);
    await eventually(() => expect(ui.selected()).toContain('rv-1'));
    expect(ui.see()).not.toContain('Review rv-1 ·');
  });

  it('shows the requested window and reason of an access review, and backspace goes back', async () => {
    const ui = setup();
    await press(ui.stdin, KEY.down, KEY.enter);
    await eventually(() => expect(ui.see()).toContain('Review rv-2 · access · pending'));
    const s = ui.see();
    expect(s).toMatch(/Identity type +service \(non-human identity\)/);
    expect(s).toMatch(/Client id +ci-etl/);
    expect(s).toMatch(/Window +access for 30m/);
    expect(s).toMatch(/Reason +INC-123 backfill/);
    expect(s).toMatch(/Approvers +dba, oncall · 0\/2 approvals/);

    await press(ui.stdin, KEY.backspace);
    await eventually(() => expect(ui.selected()).toContain('rv-2'));
  });

  it('names the CI job behind a request: repository, branch and run from its token', async () => {
    const job = { ...accessReview('rv-2').requester, claims: { repository: 'acme/etl', ref: 'refs/heads/main', run_id: '4242' } };
    const ui = setup({ reviews: [accessReview('rv-2', { requester: job })] });
    await press(ui.stdin, KEY.enter);
    await eventually(() => expect(ui.see()).toContain('Review rv-2 · access · pending'));
    expect(ui.see()).toMatch(/Job +repository=acme\/etl · ref=refs\/heads\/main · run_id=4242/);
  });

  it('shows that an AI agent asks: its identity, its MCP client and the reason it stated', async () => {
    const agent = identity('support-bot', { kind: 'service', clientId: 'support-bot', via: 'mcp', mcpClient: { name: 'claude-code', version: '1.2.3' } });
    const ui = setup({ reviews: [statementReview('rv-7', { requester: agent, reason: 'remove the duplicate ticket' })] });
    await press(ui.stdin, KEY.enter);
    await eventually(() => expect(ui.see()).toContain('Review rv-7 · statement · pending'));
    expect(ui.see()).toMatch(/Client id +support-bot/);
    expect(ui.see()).toMatch(/Agent +claude-code 1\.2\.3 via mcp/);
    expect(ui.see()).toMatch(/Reason +remove the duplicate ticket/);
  });

  it('lists decisions so far with who, what and why', async () => {
    const carol = identity('carol', { groups: ['oncall'] });
    const ui = setup({
      reviews: [accessReview('rv-2', { decisions: [{ subject: carol.subject, name: carol.name, action: 'approve', reason: 'known job', at: NOW - 30_000 }] })],
    });
    await press(ui.stdin, KEY.enter);
    await eventually(() => expect(ui.see()).toMatch(/Decisions +carol@example\.com approved 30s ago: known job/));
  });

  it('approves from the detail view and returns to the list', async () => {
    const ui = setup();
    await press(ui.stdin, KEY.enter, 'a', 'ok', KEY.enter);
    await eventually(() => expect(ui.props.onDecide).toHaveBeenCalledWith('rv-1', 'approve', 'ok'));
    await eventually(() => expect(ui.see()).toContain('Approved rv-1 — “ok”.'));
    expect(ui.selected()).toContain('rv-1');
  });
});

describe('ApproveConsole decisions', () => {
  it('a, a reason and enter call onDecide(id, "approve", reason), showing "sending…" while it runs', async () => {
    const pending = deferred();
    const onDecide = vi.fn<ApproveConsoleProps['onDecide']>(() => pending.promise);
    const ui = setup({ onDecide });
    await press(ui.stdin, KEY.down, 'a');
    await eventually(() => expect(ui.see()).toContain('Reason to approve rv-2 (optional):'));
    await press(ui.stdin, 'known ', 'job', KEY.backspace, 'b!', KEY.enter);
    await eventually(() => expect(ui.see()).toContain('sending approve for rv-2…'));
    expect(onDecide).toHaveBeenCalledExactlyOnceWith('rv-2', 'approve', 'known jo' + 'b!');
    // One decision at a time: another key press while sending neither prompts nor sends.
    await press(ui.stdin, KEY.up, 'a', 'a');
    await eventually(() => expect(ui.see()).toContain('sending approve for rv-2… (one at a time)'));
    expect(ui.see()).not.toContain('Reason to approve');
    expect(onDecide).toHaveBeenCalledTimes(1);
    pending.resolve();
    await eventually(() => expect(ui.see()).toContain('Approved rv-2 — “known job!”.'));
  });

  it('keys typed faster than the console renders each count: down, a, a reason and enter in one burst', async () => {
    const ui = setup();
    for (const key of [KEY.down, 'a', 'o', 'k', KEY.enter]) ui.stdin.write(key);
    await eventually(() => expect(ui.props.onDecide).toHaveBeenCalledExactlyOnceWith('rv-2', 'approve', 'ok'));
  });

  it('approving with no reason is allowed', async () => {
    const ui = setup();
    await press(ui.stdin, 'a', KEY.enter);
    await eventually(() => expect(ui.props.onDecide).toHaveBeenCalledWith('rv-1', 'approve', ''));
    await eventually(() => expect(ui.see()).toContain('Approved rv-1.'));
  });

  it('r refuses an empty reason until one is typed, then calls onDecide(id, "reject", reason)', async () => {
    const ui = setup();
    await press(ui.stdin, 'r');
    await eventually(() => expect(ui.see()).toContain('Reason to reject rv-1 (required):'));
    await press(ui.stdin, '   ', KEY.enter);
    await eventually(() => expect(ui.see()).toContain('A reason is required. Type one, or press esc to cancel.'));
    expect(ui.props.onDecide).not.toHaveBeenCalled();
    await press(ui.stdin, 'no DELETE without a ticket', KEY.enter);
    await eventually(() => expect(ui.props.onDecide).toHaveBeenCalledExactlyOnceWith('rv-1', 'reject', 'no DELETE without a ticket'));
    await eventually(() => expect(ui.see()).toContain('Rejected rv-1 — “no DELETE without a ticket”.'));
  });

  it('esc cancels the prompt without deciding, and q typed in the prompt is text, not quit', async () => {
    const ui = setup();
    await press(ui.stdin, 'r', 'q');
    await eventually(() => expect(ui.see()).toMatch(/Reason to reject rv-1 \(required\): q/));
    expect(ui.props.onQuit).not.toHaveBeenCalled();
    await press(ui.stdin, KEY.esc);
    await eventually(() => expect(ui.see()).not.toContain('Reason to reject'));
    expect(ui.props.onDecide).not.toHaveBeenCalled();
    expect(ui.selected()).toContain('rv-1');
  });

  it('shows the error message when onDecide fails', async () => {
    const onDecide = vi.fn<ApproveConsoleProps['onDecide']>(async () => {
      throw new Error('review rv-1 is no longer pending (expired)');
    });
    const ui = setup({ onDecide });
    await press(ui.stdin, 'a', KEY.enter);
    await eventually(() => expect(ui.see()).toContain('Could not approve rv-1: review rv-1 is no longer pending (expired)'));
  });

  it('keys typed right after opening the prompt land in the prompt', async () => {
    const ui = setup();
    // Keys a macrotask apart, as a terminal delivers them: React has rendered in between but not yet run its
    // effects, which is when a per-render input handler would still be the old one and send these to the list.
    for (const key of ['r', 'x', 'y', KEY.enter]) {
      ui.stdin.write(key);
      await new Promise((resolve) => setImmediate(resolve));
    }
    await eventually(() => expect(ui.props.onDecide).toHaveBeenCalledWith('rv-1', 'reject', 'xy'));
  });
});

describe('ApproveConsole: what is allowed to me', () => {
  const own = statementReview('rv-own', { requester: bob, createdAt: NOW - 3 * MIN });
  const foreign = statementReview('rv-hr', { requester: alice, approverGroups: ['hr-admins'], createdAt: NOW - 2 * MIN });

  it('marks my own requests and reviews for other groups, and refuses a and r on them with the reason', async () => {
    const ui = setup({ reviews: [own, foreign, accessReview('rv-2')] });
    const s = ui.see();
    expect(s).toContain('3 pending · 1 yours to decide');
    expect(s).toMatch(/DELETE FROM orders WHERE id = 42 +your own request/);
    expect(s).toMatch(/DELETE FROM orders WHERE id = 42 +not an approver/);

    await press(ui.stdin, 'a');
    await eventually(() => expect(ui.see()).toContain("You can't approve rv-own: your own request."));
    expect(ui.see()).not.toContain('Reason to approve');
    await press(ui.stdin, KEY.down, 'r');
    await eventually(() => expect(ui.see()).toContain("You can't reject rv-hr: not an approver."));
    await press(ui.stdin, 'a');
    await eventually(() => expect(ui.see()).toContain("You can't approve rv-hr: not an approver."));
    expect(ui.props.onDecide).not.toHaveBeenCalled();
  });

  it('refuses self-approval from the detail view too', async () => {
    const ui = setup({ reviews: [own] });
    await press(ui.stdin, KEY.enter);
    await eventually(() => expect(ui.see()).toMatch(/You +your own request/));
    await press(ui.stdin, 'a');
    await eventually(() => expect(ui.see()).toContain("You can't approve rv-own: your own request."));
    expect(ui.props.onDecide).not.toHaveBeenCalled();
  });

  it('self-approval is refused even when I am in the approver groups', () => {
    const ui = setup({ me: identity('alice', { groups: ['dba'] }), reviews: [statementReview('rv-1')] });
    expect(ui.see()).toMatch(/your own request/);
    expect(ui.see()).toContain('0 yours to decide');
  });

  it('a review I already approved cannot be approved twice', async () => {
    const ui = setup({
      reviews: [accessReview('rv-2', { decisions: [{ subject: bob.subject, name: bob.name, action: 'approve', at: NOW - 5000 }] })],
    });
    expect(ui.see()).toMatch(/you approved already/);
    await press(ui.stdin, 'a');
    await eventually(() => expect(ui.see()).toContain("You can't approve rv-2: you approved already."));
    expect(ui.props.onDecide).not.toHaveBeenCalled();
  });
});

describe('ApproveConsole live updates', () => {
  it('a new review appears and the selection stays on the item the user is on', async () => {
    const ui = setup();
    await press(ui.stdin, KEY.down);
    await eventually(() => expect(ui.selected()).toContain('rv-2'));

    // One filed just now (lands at the bottom) and one the broker backfills after a reconnect (lands on top).
    const fresh = statementReview('rv-3', { requester: etl, statement: 'TRUNCATE audit_log', createdAt: NOW });
    const backfilled = accessReview('rv-0', { createdAt: NOW - 10 * MIN });
    ui.update({ reviews: [backfilled, ...ui.props.reviews, fresh] });
    await eventually(() => expect(ui.see()).toContain('TRUNCATE audit_log'));
    expect(ui.see()).toContain('4 pending');
    expect(ui.selected()).toContain('rv-2');
    const order = ['rv-0', 'rv-1', 'rv-2', 'rv-3'].map((id) => ui.see().indexOf(`${id} `));
    expect(order).toEqual([...order].sort((a, b) => a - b));

    await press(ui.stdin, KEY.down);
    await eventually(() => expect(ui.selected()).toContain('rv-3'));
  });

  it('when the selected review is decided elsewhere, the selection stays at the same height', async () => {
    const ui = setup({ reviews: [statementReview('rv-1'), accessReview('rv-2'), statementReview('rv-3', { createdAt: NOW - 1000 })] });
    await press(ui.stdin, KEY.down);
    await eventually(() => expect(ui.selected()).toContain('rv-2'));
    ui.update({ reviews: ui.props.reviews.map((r) => (r.id === 'rv-2' ? { ...r, status: 'approved' as const } : r)) });
    await eventually(() => expect(ui.selected()).toContain('rv-3'));
    expect(ui.see()).toContain('2 pending');
  });

  it('ages follow the clock the command ticks', () => {
    const ui = setup({ reviews: [accessReview('rv-2')] });
    expect(ui.selected()).toMatch(/40s +0\/2$/);
    ui.update({ now: NOW + 25_000 });
    expect(ui.selected()).toMatch(/1m05s +0\/2$/);
  });

  it('the detail view says when its review was decided meanwhile', async () => {
    const ui = setup();
    await press(ui.stdin, KEY.enter);
    await eventually(() => expect(ui.see()).toContain('Review rv-1 · statement · pending'));
    const carol = identity('carol', { groups: ['dba'] });
    ui.update({
      reviews: ui.props.reviews.map((r) =>
        r.id === 'rv-1'
          ? { ...r, status: 'rejected' as const, decisions: [{ subject: carol.subject, name: carol.name, action: 'reject' as const, reason: 'use a migration', at: NOW }] }
          : r,
      ),
    });
    await eventually(() => expect(ui.see()).toContain('Review rv-1 · statement · rejected'));
    expect(ui.see()).toMatch(/carol@example\.com rejected just now: use a migration/);
    await press(ui.stdin, 'a');
    await eventually(() => expect(ui.see()).toContain("You can't approve rv-1: already rejected."));
  });
});

describe('ApproveConsole grants', () => {
  const carol = identity('carol', { groups: ['oncall'] });
  const granted = (id: string, endsInMs: number, overrides: Partial<Review> = {}) =>
    accessReview(id, {
      status: 'approved',
      decidedAt: NOW - MIN,
      grantExpiresAt: NOW + endsInMs,
      decisions: [{ subject: carol.subject, name: carol.name, action: 'approve', at: NOW - MIN }],
      ...overrides,
    });

  it('tab shows active grants with time left, ending soonest first; ended grants are not listed', async () => {
    const ui = setup({
      reviews: [statementReview('rv-1'), granted('g-long', 29 * MIN), granted('g-short', 4 * MIN + 10_000), granted('g-over', -1000)],
    });
    expect(ui.see()).toContain('1 pending · 1 yours to decide · 2 active grants');
    await press(ui.stdin, KEY.tab);
    await eventually(() => expect(ui.see()).toContain('Active access grants'));
    const s = ui.see();
    expect(s).toMatch(/› g-short +etl-nightly \(service\) → pg-prod · approved by carol@example\.com +4m10s left/);
    expect(s).toMatch(/ {2}g-long .* 29m left/);
    expect(s.indexOf('g-short')).toBeLessThan(s.indexOf('g-long'));
    expect(s).not.toContain('g-over');
    expect(s).toContain('↑/↓ move · enter details · x revoke · tab reviews · q quit');

    await press(ui.stdin, KEY.tab);
    await eventually(() => expect(ui.selected()).toContain('rv-1'));
  });

  it('x asks for a reason and calls onRevoke(id, reason)', async () => {
    const ui = setup({ reviews: [granted('g-1', 10 * MIN), granted('g-2', 20 * MIN)] });
    await press(ui.stdin, KEY.tab, KEY.down, 'x');
    await eventually(() => expect(ui.see()).toContain('Reason to revoke g-2 (required):'));
    await press(ui.stdin, KEY.enter);
    await eventually(() => expect(ui.see()).toContain('A reason is required.'));
    await press(ui.stdin, 'incident closed', KEY.enter);
    await eventually(() => expect(ui.props.onRevoke).toHaveBeenCalledExactlyOnceWith('g-2', 'incident closed'));
    await eventually(() => expect(ui.see()).toContain('Revoked the grant of g-2 — “incident closed”.'));
  });

  it('shows why revoking failed', async () => {
    const onRevoke = vi.fn(async () => {
      throw new Error('grant g-1 already ended');
    });
    const ui = setup({ reviews: [granted('g-1', 10 * MIN)], onRevoke });
    await press(ui.stdin, KEY.tab, 'x', 'done', KEY.enter);
    await eventually(() => expect(ui.see()).toContain('Could not revoke g-1: grant g-1 already ended'));
  });

  it('without onRevoke, or for a grant outside my groups, x explains instead of prompting', async () => {
    const ui = setup({ reviews: [granted('g-1', 10 * MIN)], onRevoke: undefined });
    await press(ui.stdin, KEY.tab);
    await eventually(() => expect(ui.see()).toContain('↑/↓ move · enter details · tab reviews · q quit'));
    await press(ui.stdin, 'x');
    await eventually(() => expect(ui.see()).toContain('Revoking is not available in this console.'));

    const other = setup({ reviews: [granted('g-9', 10 * MIN, { approverGroups: ['hr-admins'] })] });
    await press(other.stdin, KEY.tab);
    await eventually(() => expect(other.see()).toMatch(/10m left · not an approver/));
    await press(other.stdin, 'x');
    await eventually(() => expect(other.see()).toContain("You can't revoke g-9: not an approver."));
    expect(other.props.onRevoke).not.toHaveBeenCalled();
  });

  it('enter on a grant shows its detail with the time left', async () => {
    const ui = setup({ reviews: [granted('g-1', 10 * MIN)] });
    await press(ui.stdin, KEY.tab, KEY.enter);
    await eventually(() => expect(ui.see()).toContain('Review g-1 · access · approved'));
    expect(ui.see()).toMatch(/Grant ends +in 10m/);
    await press(ui.stdin, KEY.esc);
    await eventually(() => expect(ui.see()).toContain('Active access grants'));
  });

  it('says so when there are no active grants', async () => {
    const ui = setup();
    await press(ui.stdin, KEY.tab);
    await eventually(() => expect(ui.see()).toContain('No active access grants.'));
  });
});
