import { describe, expect, it } from 'vitest';
import { eventLines } from '../../../src/commands/sessions.js';
import type { SessionRow, StoredEvent } from '../../../src/broker/store/store.js';

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
