import { describe, expect, it } from 'vitest';
import { eventLines } from '../../../src/commands/sessions.js';
import type { SessionRow, StoredEvent } from '../../../src/api/session.js';

const session = { id: 'ses_1', connection: 'demo-pg', connectionType: 'postgres' } as SessionRow;
const result = (data: Record<string, unknown>): StoredEvent => ({ stream: 'ses_1', seq: 2, at: 1_000, type: 'result', data, prevHash: '', hash: '' });
const line = (data: Record<string, unknown>) => eventLines(session, result(data), 0).join('\n');

describe('how replay prints a statement result', () => {
  it('says cancelled, with the server message, for a statement the server stopped', () => {
    const text = line({ statementSeq: 1, tags: [], rows: 0, durationMs: 5200, cancelled: true, error: { code: '57014', message: 'canceling statement due to user request' } });
    expect(text).toMatch(/✗ cancelled after 5\.2 ?s: 57014 canceling statement due to user request$/);
  });

  it('says cancelled for recordings made before the flag existed (the SQLSTATE alone)', () => {
    expect(line({ tags: [], error: { code: '57014', message: 'canceling statement due to statement timeout' } })).toContain('✗ cancelled: 57014 canceling statement due to statement timeout');
  });

  it('says unfinished, not ok, for a statement still running when the session ended', () => {
    const text = line({ statementSeq: 1, tags: [], rows: 0, durationMs: 5200, incomplete: true });
    expect(text).toMatch(/→ unfinished: the session ended before the server answered \(after 5\.2 ?s\)$/);
    expect(text).not.toContain('ok');
  });

  it('still prints tags, errors and a plain ok as before', () => {
    expect(line({ tags: ['SELECT 1'], durationMs: 3 })).toMatch(/→ SELECT 1 in /);
    expect(line({ tags: [], error: { code: '42P01', message: 'relation "x" does not exist' } })).toMatch(/✗ 42P01 relation "x" does not exist$/);
    expect(line({ tags: [] })).toMatch(/→ ok$/);
  });
});

describe('how replay prints where a session went', () => {
  const open = (target: Record<string, unknown>) =>
    eventLines(session, { stream: 'ses_1', seq: 1, at: 0, type: 'open', data: { target }, prevHash: '', hash: '' }, 0).join('\n');

  it('names a database target as user@host:port/database, a URL target by its URL, a bare TCP one by host:port', () => {
    expect(open({ host: 'db', port: 5432, user: 'app_rw', database: 'app' })).toMatch(/open\s+app_rw@db:5432\/app$/);
    expect(open({ url: 'https://api.internal:8443' })).toMatch(/open\s+https:\/\/api\.internal:8443$/);
    expect(open({ host: 'redis.internal', port: 6379 })).toMatch(/open\s+redis\.internal:6379$/);
  });
});

describe('how replay prints verdicts and reviews', () => {
  const event = (type: string, data: Record<string, unknown>, at = Date.UTC(2026, 10, 29, 12, 3, 5)): StoredEvent =>
    ({ stream: 'ses_1', seq: 3, at, type, data, prevHash: '', hash: '' });
  const text = (type: string, data: Record<string, unknown>) => eventLines(session, event(type, data), event(type, data).at).join('\n').trim();

  it('a verdict is a sentence naming the rule and its message, not JSON', () => {
    expect(text('verdict', { statementSeq: 1, action: 'deny', rule: 'no-ddl', message: 'schema changes go through migrations', refused: true }))
      .toBe('+0.000s  verdict    denied by rule no-ddl: schema changes go through migrations');
    // The default message only names the rule again: left out.
    expect(text('verdict', { statementSeq: 1, action: 'deny', rule: 'no-ddl', message: 'denied by policy rule "no-ddl"', refused: true }))
      .toBe('+0.000s  verdict    denied by rule no-ddl');
    expect(text('verdict', { statementSeq: 1, action: 'review', rule: 'unbounded-delete', message: 'held for review by policy rule "unbounded-delete"', refused: false }))
      .toBe('+0.000s  verdict    held for review by rule unbounded-delete');
    expect(text('verdict', { statementSeq: 1, action: 'allow', message: 'allowed by default', refused: false })).toBe("+0.000s  verdict    allowed (the connection's default)");
  });

  it('a review reads as what happened, by whom and when', () => {
    expect(text('review-requested', { review: 'rev_1', requester: 'alice', by: 'alice' })).toBe('+0.000s  review     held for review rev_1 (requested by alice)');
    expect(text('review-approved', { review: 'rev_1', by: 'bob', reason: 'looks right' })).toBe('+0.000s  review     rev_1 approved by bob at 12:03:05: looks right');
    expect(text('review-rejected', { review: 'rev_1', by: 'carol' })).toBe('+0.000s  review     rev_1 rejected by carol at 12:03:05');
    expect(text('review-outcome', { statementSeq: 1, review: 'rev_1', approved: true })).toBe('+0.000s  review     rev_1 approved: the statement ran');
    expect(text('review-outcome', { statementSeq: 1, review: 'rev_1', approved: false, message: 'rejected by carol' }))
      .toBe('+0.000s  review     rev_1 not approved, the statement did not run: rejected by carol');
  });
});
