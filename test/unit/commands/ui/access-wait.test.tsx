import { render } from 'ink-testing-library';
import { afterEach, describe, expect, it } from 'vitest';
import { AccessWait, type AccessWaitProps } from '../../../../src/commands/ui/access-wait.js';
import type { ReviewDecision } from '../../../../src/api/review.js';
import { MIN, NOW, eventually, screen, tick } from './fixtures.js';

const unmounts: Array<() => void> = [];
afterEach(() => {
  while (unmounts.length > 0) unmounts.pop()!();
});

const approval = (name: string): ReviewDecision => ({ subject: `sub-${name}`, name, action: 'approve', at: NOW - 5000 });

function show(overrides: Partial<AccessWaitProps> = {}) {
  const props: AccessWaitProps = {
    connection: 'pg-prod',
    reviewId: 'rv-7',
    reason: 'INC-123',
    durationMs: 30 * MIN,
    approvals: [],
    minApprovals: 2,
    status: 'pending',
    startedAt: NOW - 42_000,
    now: NOW,
    animate: false,
    ...overrides,
  };
  const r = render(<AccessWait {...props} />);
  unmounts.push(() => r.unmount());
  return { ...r, see: () => screen(r.lastFrame()), props };
}

describe('AccessWait', () => {
  it('while pending: spinner, review id, elapsed time, what was asked and who has approved', () => {
    const ui = show({ expiresAt: NOW + 14 * MIN + 18_000 });
    expect(ui.see()).toBe(
      [
        '⠋ waiting for approval of rv-7 (elapsed 0:42) · expires in 14m18s',
        '  access to pg-prod for 30m · reason: INC-123',
        '  approvals 0/2',
        '  Ctrl-C to stop waiting',
      ].join('\n'),
    );
    ui.rerender(<AccessWait {...ui.props} now={NOW + 60_000} approvals={[approval('carol@example.com')]} />);
    expect(ui.see()).toContain('waiting for approval of rv-7 (elapsed 1:42)');
    expect(ui.see()).toContain('approvals 1/2: carol@example.com');
  });

  it('the spinner turns when animated', async () => {
    const ui = show({ animate: true });
    const first = ui.see().slice(0, 1);
    await eventually(() => expect(ui.see().slice(0, 1)).not.toBe(first));
  });

  it('stays still when not animated', async () => {
    const ui = show();
    const before = ui.frames.length;
    await tick(200);
    expect(ui.frames.length).toBe(before);
  });

  it('granted: who approved and for how long', () => {
    const ui = show({
      status: 'approved',
      approvals: [approval('carol@example.com'), approval('bob@example.com')],
      grantExpiresAt: NOW + 30 * MIN,
    });
    expect(ui.see()).toBe(
      ['✔ access to pg-prod granted for 30m (ends in 30m)', '  review rv-7 approved by carol@example.com, bob@example.com after 0:42'].join('\n'),
    );
  });

  it('rejected: by whom and why', () => {
    const ui = show({
      status: 'rejected',
      approvals: [
        approval('carol@example.com'),
        { subject: 'sub-bob', name: 'bob@example.com', action: 'reject', reason: 'use the read replica', at: NOW },
      ],
    });
    expect(ui.see()).toBe('✘ review rv-7 rejected by bob@example.com: use the read replica');
  });

  it('expired: how long it waited and what to do next', () => {
    const ui = show({ status: 'expired', approvals: [approval('carol@example.com')], now: NOW + 15 * MIN });
    expect(ui.see()).toBe(
      [
        '✘ review rv-7 expired after 15:42 with 1/2 approvals',
        '  nobody decided in time; ask an approver and run the command again',
      ].join('\n'),
    );
  });

  it('revoked and orphaned say so', () => {
    expect(show({ status: 'revoked' }).see()).toBe('✘ access to pg-prod was revoked (review rv-7)');
    expect(show({ status: 'orphaned' }).see()).toContain('lost when the broker restarted');
  });
});
