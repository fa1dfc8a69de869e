import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../../src/broker/store/sqlite-store.js';
import { ReviewService } from '../../../src/broker/reviews/review-service.js';
import { parseBrokerConfig } from '../../../src/broker/config.js';
import type { Identity } from '../../../src/api/identity.js';
import type { Review } from '../../../src/api/review.js';

const person = (subject: string, groups: string[]): Identity => ({ issuer: 'https://i', subject, kind: 'human', name: subject, groups, expiresAt: 0 });
const alice = person('alice', ['dba']);
const bob = person('bob', ['leads']);
const carol = person('carol', ['leads']);
const mallory = person('mallory', ['dba']);

function connections(minApprovals = 1) {
  return parseBrokerConfig({
    auth: { issuers: [{ issuer: 'https://i.example.com', audience: 'urn:x' }] },
    connections: [{
      name: 'pg', type: 'postgres', target: { host: 'db', database: 'app' }, credentials: { user: 'u' },
      access: { groups: ['dba'], approval: { groups: ['leads'], minApprovals, maxDuration: '1h', reason: 'required', timeout: '1s' } },
      reviews: { groups: ['leads'], minApprovals, timeout: '200ms' },
      rules: [{ name: 'held', match: { statement: ['DeleteStmt'] }, action: 'review' }],
    }],
  }).connections;
}

function service(store = new SqliteStore(':memory:'), minApprovals = 1) {
  const log: string[] = [];
  const svc = new ReviewService(store, connections(minApprovals), async (r, transition, by, reason) => {
    log.push(`${r.id} ${transition}${by ? ` by ${by.subject}` : ''}${reason ? `: ${reason}` : ''}`);
  });
  return { svc, log, store };
}

describe('ReviewService', () => {
  it('refuses self-approval and non-approvers, and records who approved with their reason', async () => {
    const { svc, log } = service();
    const r = await svc.requestStatement({ requester: alice, connection: 'pg', statement: 'delete from t', rule: 'held' });
    await expect(svc.decide(r.id, alice, 'approve')).rejects.toMatchObject({ code: 'SELF_APPROVAL' });
    await expect(svc.decide(r.id, mallory, 'approve')).rejects.toMatchObject({ code: 'NOT_APPROVER' });
    const approved = await svc.decide(r.id, bob, 'approve', 'looked fine');
    expect(approved.status).toBe('approved');
    expect(log).toContain(`${r.id} approved by bob: looked fine`);
    await expect(svc.decide(r.id, carol, 'reject', 'late')).rejects.toMatchObject({ code: 'REVIEW_NOT_PENDING' });
  });

  it('needs a reason to reject, and the minimum number of distinct approvals to approve', async () => {
    const { svc } = service(undefined, 2);
    const r = await svc.requestStatement({ requester: alice, connection: 'pg', statement: 'delete from t', rule: 'held' });
    await expect(svc.decide(r.id, bob, 'reject', '  ')).rejects.toMatchObject({ code: 'REASON_REQUIRED' });
    expect((await svc.decide(r.id, bob, 'approve')).status).toBe('pending');
    await expect(svc.decide(r.id, bob, 'approve')).rejects.toMatchObject({ code: 'ALREADY_DECIDED' });
    expect((await svc.decide(r.id, carol, 'approve')).status).toBe('approved');
  });

  it('wakes a waiter on the decision and expires what nobody decides', async () => {
    const { svc, log } = service();
    const r1 = await svc.requestStatement({ requester: alice, connection: 'pg', statement: 'delete from a', rule: 'held' });
    const waiting = svc.waitForDecision(r1.id);
    await svc.decide(r1.id, bob, 'reject', 'use a migration');
    expect(await waiting).toMatchObject({ status: 'rejected' });
    const r2 = await svc.requestStatement({ requester: alice, connection: 'pg', statement: 'delete from b', rule: 'held' });
    expect(await svc.waitForDecision(r2.id)).toMatchObject({ status: 'expired' });
    expect(log).toContain(`${r2.id} expired: nobody decided in time`);
    svc.close();
  });

  it('lets an approved statement run once for the same requester and text', async () => {
    const { svc } = service();
    const r = await svc.requestStatement({ requester: alice, connection: 'pg', statement: 'delete from t where id = 1', rule: 'held' });
    await svc.decide(r.id, bob, 'approve');
    expect(await svc.consumeApproved(mallory, 'pg', 'delete from t where id = 1')).toBeUndefined();
    expect(await svc.consumeApproved(alice, 'pg', 'delete from t where id = 2')).toBeUndefined();
    expect((await svc.consumeApproved(alice, 'pg', 'delete from t where id = 1'))?.id).toBe(r.id);
    expect(await svc.consumeApproved(alice, 'pg', 'delete from t where id = 1')).toBeUndefined();
  });

  it('never lets the same subject from another issuer run an approved statement or ride a grant', async () => {
    const { svc } = service();
    const twin: Identity = { ...alice, issuer: 'https://partner-idp.example' };
    const held = await svc.requestStatement({ requester: alice, connection: 'pg', statement: 'delete from t where id = 9', rule: 'held' });
    await svc.decide(held.id, bob, 'approve');
    expect(await svc.consumeApproved(twin, 'pg', 'delete from t where id = 9')).toBeUndefined();
    expect((await svc.consumeApproved(alice, 'pg', 'delete from t where id = 9'))?.id).toBe(held.id);
    const access = await svc.requestAccess({ requester: alice, connection: 'pg', reason: 'INC-1' });
    await svc.decide(access.id, bob, 'approve');
    expect(await svc.activeGrant(twin, 'pg')).toBeUndefined();
    expect((await svc.activeGrant(alice, 'pg'))?.id).toBe(access.id);
    svc.close();
  });

  it('keeps grants across a restart, ends them on time, and marks statements held by the dead broker orphaned', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'hoop-rev-')), 'b.db');
    const first = service(new SqliteStore(path));
    const access = await first.svc.requestAccess({ requester: alice, connection: 'pg', reason: 'INC-1', durationMs: 400 });
    await first.svc.decide(access.id, bob, 'approve');
    const held = await first.svc.requestStatement({ requester: alice, connection: 'pg', sessionId: 'ses_1', statement: 'delete from t', rule: 'held' });
    first.svc.close();
    await first.store.close();

    const second = service(new SqliteStore(path));
    const ended = new Promise<Review>((resolve) => second.svc.once('grant-ended', resolve));
    await second.svc.start();
    expect((await second.svc.get(held.id))?.status).toBe('orphaned');
    expect((await second.svc.activeGrant(alice, 'pg'))?.id).toBe(access.id);
    expect((await ended).id).toBe(access.id);
    expect(await second.svc.activeGrant(alice, 'pg')).toBeUndefined();
    second.svc.close();
  });

  it('requires a reason for access where configured, caps the duration, and lets an approver revoke', async () => {
    const { svc } = service();
    await expect(svc.requestAccess({ requester: alice, connection: 'pg' })).rejects.toMatchObject({ code: 'REASON_REQUIRED' });
    await expect(svc.requestAccess({ requester: alice, connection: 'pg', reason: 'x', durationMs: 2 * 3_600_000 })).rejects.toMatchObject({ code: 'DURATION_TOO_LONG' });
    const r = await svc.requestAccess({ requester: alice, connection: 'pg', reason: 'INC-2', durationMs: 60_000 });
    await svc.decide(r.id, bob, 'approve');
    const ended = new Promise<Review>((resolve) => svc.once('grant-ended', resolve));
    await expect(svc.revoke(r.id, mallory, 'no')).rejects.toMatchObject({ code: 'NOT_APPROVER' });
    await svc.revoke(r.id, carol, 'incident over');
    expect(await ended).toMatchObject({ id: r.id, status: 'revoked' });
    expect(await svc.activeGrant(alice, 'pg')).toBeUndefined();
    svc.close();
  });
});
