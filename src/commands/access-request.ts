import { brokerGet, brokerPost, accessToken } from './context.js';
import { followReviews } from './review-stream.js';
import type { Review } from '../api/review.js';
import { UserError } from '../lib/errors.js';
import { formatTime } from './render.js';

export interface AccessRequestOptions {
  broker: string;
  connection: string;
  reason?: string;
  duration?: string;
  /** Live waiting line (Ink) when stdout is a terminal; plain lines otherwise. */
  interactive: boolean;
}

/**
 * For a just-in-time connection: files an access request (or finds the active grant or the pending request
 * already filed), waits for the decision while showing who has approved, and returns the grant.
 */
export async function obtainAccessGrant(o: AccessRequestOptions): Promise<Review> {
  if (!o.interactive) process.stderr.write(`filing an access request for ${o.connection}…\n`);
  const { review: filed } = await brokerPost<{ review: Review }>(o.broker, `/api/v1/connections/${encodeURIComponent(o.connection)}/access-requests`, {
    reason: o.reason,
    duration: o.duration,
  });
  if (filed.status === 'approved') return filed;
  const startedAt = Date.now();
  const view = o.interactive ? await inkView(o, filed, startedAt) : plainView(filed);
  try {
    const decided = await waitForDecision(o.broker, filed, view.update);
    view.update(decided);
    if (decided.status !== 'approved') {
      const last = decided.decisions.at(-1);
      const why = decided.status === 'rejected' ? ` by ${last?.name}: ${last?.reason ?? 'no reason given'}` : decided.status === 'expired' ? ': nobody decided in time' : '';
      throw new UserError(`access request ${decided.id} was ${decided.status}${why}`, { code: 'ACCESS_DENIED' });
    }
    return decided;
  } finally {
    view.close();
  }
}

function waitForDecision(broker: string, review: Review, onUpdate: (r: Review) => void): Promise<Review> {
  return new Promise((resolve, reject) => {
    const stream = followReviews(broker, () => accessToken(broker), {
      onReview: (r) => {
        if (r.id !== review.id) return;
        onUpdate(r);
        if (r.status !== 'pending') finish(r);
      },
      // On every (re)connect, read the review once: it may have been decided while no stream was open.
      onState: (connected) => {
        if (connected) {
          brokerGet<{ review: Review }>(broker, `/api/v1/reviews/${review.id}`).then(({ review: r }) => r.status !== 'pending' && finish(r), () => undefined);
        }
      },
    });
    const finish = (r: Review) => {
      stream.close();
      resolve(r);
    };
    void reject;
  });
}

interface WaitView {
  update(review: Review): void;
  close(): void;
}

function plainView(review: Review): WaitView {
  process.stderr.write(`access request ${review.id} filed for ${review.connection}\n` +
    `waiting for approval of ${review.id} by ${review.approverGroups.join(', ')} (Ctrl-C to stop)\n` +
    `  an approver runs: hoopctl approve ${review.id}\n`);
  let seen = review.decisions.length;
  return {
    update(r) {
      for (const d of r.decisions.slice(seen)) process.stderr.write(`  ${d.action}d by ${d.name}${d.reason ? `: ${d.reason}` : ''}\n`);
      seen = r.decisions.length;
      if (r.status === 'approved') process.stderr.write(`access granted until ${formatTime(r.grantExpiresAt ?? 0)}\n`);
    },
    close() {},
  };
}

async function inkView(o: AccessRequestOptions, review: Review, startedAt: number): Promise<WaitView> {
  const [{ render }, { createElement }, { AccessWait }] = await Promise.all([import('ink'), import('react'), import('./ui/access-wait.js')]);
  let current = review;
  const element = () =>
    createElement(AccessWait, {
      connection: o.connection,
      reviewId: current.id,
      reason: current.reason ?? '',
      durationMs: current.durationMs ?? 0,
      approvals: current.decisions,
      minApprovals: current.minApprovals,
      status: current.status,
      expiresAt: current.expiresAt,
      grantExpiresAt: current.grantExpiresAt,
      startedAt,
      now: Date.now(),
    });
  const app = render(element(), { stdout: process.stderr });
  const tick = setInterval(() => app.rerender(element()), 1000);
  return {
    update(r) {
      current = r;
      app.rerender(element());
    },
    close() {
      clearInterval(tick);
      app.unmount();
    },
  };
}
