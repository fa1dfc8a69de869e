import { describe, expect, it } from 'vitest';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { ReviewNotifier, reviewMessage } from '../../../src/broker/reviews/review-notify.js';
import { Secret } from '../../../src/broker/config.js';
import type { Review } from '../../../src/api/review.js';

const access: Review = {
  id: 'rev_a1', kind: 'access', connection: 'pg-prod', requester: { subject: 'u1', name: 'ada@example.com', kind: 'human', groups: [], issuer: 'i', expiresAt: 0 },
  reason: 'INC-42 stuck orders', durationMs: 90 * 60_000, status: 'pending', approverGroups: ['dba-leads'], minApprovals: 2, decisions: [], createdAt: 0, expiresAt: 0,
};

describe('review notifications', () => {
  it('say who asks for what, for how long and why, and how to decide', () => {
    expect(reviewMessage(access, 'requested')).toBe(
      'ada@example.com asks for access to pg-prod for 1h30m ("INC-42 stuck orders") — review rev_a1, needs 2 approval(s) from dba-leads. Decide with: hoopctl approve rev_a1',
    );
    expect(reviewMessage(access, 'expired')).toBe('review rev_a1 expired (ada@example.com, access to pg-prod for 1h30m ("INC-42 stuck orders"))');
  });

  it('retry a failing endpoint, then give up with a log line that does not carry the URL (it is the credential)', async () => {
    let calls = 0;
    const server = createServer((_req, res) => {
      calls++;
      res.writeHead(500).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const lines: string[] = [];
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/services/T0/B0/xoxb-very-secret`;
    const notifier = new ReviewNotifier([{ name: 'chat', type: 'slack', url: new Secret(url), on: ['requested'] }], pino({}, { write: (l: string) => void lines.push(l) }), 5);
    await notifier.notify(access, 'requested');
    await notifier.notify(access, 'approved', 'bob');
    server.close();
    expect(calls).toBe(3);
    expect(lines.join('')).toContain('review notification not delivered');
    expect(lines.join('')).not.toContain('xoxb-very-secret');
  });

  it('post the review as JSON to a webhook, only for the transitions and connections asked for', async () => {
    const bodies: Array<Record<string, unknown>> = [];
    const server = createServer((req, res) => {
      let b = '';
      req.on('data', (c) => (b += c));
      req.on('end', () => {
        bodies.push(JSON.parse(b) as Record<string, unknown>);
        res.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = new Secret(`http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`);
    const notifier = new ReviewNotifier([{ name: 'pager', type: 'webhook', url, on: ['requested'], connections: ['pg-prod'] }], pino({ level: 'silent' }));
    await notifier.notify(access, 'requested');
    await notifier.notify(access, 'approved', 'bob');
    await notifier.notify({ ...access, connection: 'pg-staging' }, 'requested');
    server.close();
    expect(bodies).toEqual([
      {
        event: 'review-requested',
        text: reviewMessage(access, 'requested'),
        review: { id: 'rev_a1', kind: 'access', connection: 'pg-prod', requester: 'u1', status: 'pending', reason: 'INC-42 stuck orders' },
      },
    ]);
  });
});
