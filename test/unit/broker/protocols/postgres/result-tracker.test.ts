import { describe, expect, it } from 'vitest';
import { ResultTracker } from '../../../../../src/broker/protocols/postgres/result-tracker.js';

const err = (code: string, message = 'boom') => ({ severity: 'ERROR', code, message });

describe('ResultTracker', () => {
  it('closes a simple query at ReadyForQuery with every tag and the error that ended it', () => {
    const t = new ResultTracker();
    t.round(1);
    expect(t.commandComplete('INSERT 0 2')).toEqual([]);
    expect(t.error(err('23505')).results).toEqual([]);
    const [r] = t.readyForQuery();
    expect(r).toMatchObject({ statementSeq: 1, tags: ['INSERT 0 2'], rows: 2, error: { code: '23505' } });
    expect(t.pending).toBe(0);
  });

  it('closes each Execute at its own completion and pairs pipelined Sync groups in order', () => {
    const t = new ResultTracker();
    t.execute(1);
    t.sync();
    t.execute(2);
    t.execute(3);
    t.sync();
    t.execute(4);
    t.sync();
    expect(t.commandComplete('SELECT 1')).toMatchObject([{ statementSeq: 1, tags: ['SELECT 1'] }]);
    expect(t.readyForQuery()).toEqual([]);
    expect(t.error(err('22012')).results).toMatchObject([{ statementSeq: 2, error: { code: '22012' } }]);
    expect(t.readyForQuery()).toMatchObject([{ statementSeq: 3, skipped: true }]);
    expect(t.portalSuspended()).toMatchObject([{ statementSeq: 4, suspended: true, tags: [] }]);
    expect(t.readyForQuery()).toEqual([]);
    expect(t.pending).toBe(0);
  });

  it('reports an error that belongs to no statement as unattributed', () => {
    const t = new ResultTracker();
    t.sync();
    expect(t.error({ severity: 'ERROR', code: '42601', message: 'syntax error' })).toEqual({
      results: [],
      unattributed: { code: '42601', message: 'syntax error', severity: 'ERROR' },
    });
    expect(t.error({ severity: 'FATAL', code: '57P01', message: 'terminating' }).unattributed).toMatchObject({ severity: 'FATAL' });
  });

  it('finishes an empty query without tags', () => {
    const t = new ResultTracker();
    t.execute(9);
    expect(t.emptyQuery()).toMatchObject([{ statementSeq: 9, tags: [], rows: 0 }]);
  });
});

describe('a client that leaves between ErrorResponse and ReadyForQuery', () => {
  it('still gets a result for its statement, with the error, marked incomplete (the recording lost it before)', () => {
    const t = new ResultTracker();
    t.round(1);
    expect(t.error({ severity: 'ERROR', code: '42P01', message: 'relation "missing_table" does not exist' }).results).toEqual([]);
    t.execute(2);
    t.sync();
    const left = t.unfinished();
    expect(left).toMatchObject([
      { statementSeq: 1, tags: [], error: { code: '42P01', message: 'relation "missing_table" does not exist' }, incomplete: true },
      { statementSeq: 2, incomplete: true },
    ]);
    expect(t.pending).toBe(0);
    expect(t.unfinished()).toEqual([]);
  });
});

describe('a statement the server cancelled', () => {
  it('is marked cancelled, whether it ends at ReadyForQuery, at its Execute, or as the session ends', () => {
    const canceled = { severity: 'ERROR', code: '57014', message: 'canceling statement due to user request' };
    const t = new ResultTracker();
    t.round(1);
    t.error(canceled);
    expect(t.readyForQuery()).toMatchObject([{ statementSeq: 1, cancelled: true, error: { code: '57014' } }]);
    t.execute(2);
    expect(t.error(canceled).results).toMatchObject([{ statementSeq: 2, cancelled: true }]);
    t.round(3);
    t.error(canceled);
    expect(t.unfinished()).toMatchObject([{ statementSeq: 3, cancelled: true, incomplete: true }]);
  });

  it('is not marked cancelled for other errors, nor when it is still running as the session ends', () => {
    const t = new ResultTracker();
    t.round(1);
    t.error(err('42P01'));
    expect(t.readyForQuery()[0]).not.toHaveProperty('cancelled');
    t.round(2);
    const [left] = t.unfinished();
    expect(left).toMatchObject({ statementSeq: 2, incomplete: true });
    expect(left).not.toHaveProperty('cancelled');
    expect(left).not.toHaveProperty('error');
  });
});

describe('COPY FROM STDIN (the server ignores Sync while it takes COPY data)', () => {
  it("pairs libpq's extended COPY: the Sync sent with the Execute has no ReadyForQuery, the one after CopyDone has", () => {
    const t = new ResultTracker();
    t.execute(1);
    t.sync();
    expect(t.copyIn()).toBe(1);
    expect(t.inCopyIn).toBe(true);
    t.sync();
    t.copyEnd();
    expect(t.inCopyIn).toBe(false);
    t.sync();
    expect(t.commandComplete('COPY 2')).toMatchObject([{ statementSeq: 1, tags: ['COPY 2'], rows: 2 }]);
    expect(t.readyForQuery()).toEqual([]);
    t.round(2);
    expect(t.commandComplete('SELECT 1')).toEqual([]);
    expect(t.readyForQuery()).toMatchObject([{ statementSeq: 2, tags: ['SELECT 1'] }]);
    expect(t.pending).toBe(0);
  });

  it('counts a Sync again once the COPY failed, and skips a CopyDone sent outside any COPY', () => {
    const t = new ResultTracker();
    t.copyEnd();
    t.execute(1);
    expect(t.copyIn()).toBe(0);
    expect(t.error(err('22P04')).results).toMatchObject([{ statementSeq: 1, error: { code: '22P04' } }]);
    t.copyEnd();
    t.sync();
    expect(t.readyForQuery()).toEqual([]);
    expect(t.pending).toBe(0);
  });

  it('cannot pair statements sent after a COPY before the end of its data, and says so', () => {
    const t = new ResultTracker();
    t.execute(1);
    t.sync();
    t.round(2);
    expect(t.copyIn()).toBeUndefined();
  });
});
