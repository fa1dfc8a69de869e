import { describe, expect, it } from 'vitest';
import { formatAge, formatClock, formatCountdown, formatSpan, summarizeReview, truncate } from '../../../../src/commands/ui/format.js';
import { MIN, NOW, accessReview, statementReview } from './fixtures.js';

describe('format', () => {
  it('formatSpan keeps two units at most and drops a zero second unit', () => {
    expect([0, 999, 42_000, 65_000, 30 * MIN, 63 * MIN + 20_000, 60 * MIN, 52 * 60 * MIN, -5000].map(formatSpan)).toEqual([
      '0s',
      '0s',
      '42s',
      '1m05s',
      '30m',
      '1h03m',
      '1h',
      '2d04h',
      '0s',
    ]);
  });

  it('formatClock reads like a stopwatch', () => {
    expect([0, 42_000, 12 * MIN + 5000, 62 * MIN + 3000].map(formatClock)).toEqual(['0:00', '0:42', '12:05', '1:02:03']);
  });

  it('ages and countdowns are relative to now', () => {
    expect(formatAge(NOW - 500, NOW)).toBe('just now');
    expect(formatAge(NOW - 190_000, NOW)).toBe('3m10s ago');
    expect(formatCountdown(NOW + 250_000, NOW)).toBe('in 4m10s');
    expect(formatCountdown(NOW - 1, NOW)).toBe('now');
  });

  it('truncate cuts by characters and marks the cut', () => {
    expect(truncate('abcdef', 6)).toBe('abcdef');
    expect(truncate('abcdef', 4)).toBe('abc…');
    expect(truncate('😀😀😀', 2)).toBe('😀…');
  });

  it('summarizeReview gives a statement on one line, or the requested window and reason', () => {
    expect(summarizeReview(statementReview('rv-1'))).toBe('DELETE FROM orders WHERE id = 42');
    expect(summarizeReview(accessReview('rv-2'))).toBe('access for 30m: INC-123 backfill');
    expect(summarizeReview(accessReview('rv-3', { reason: undefined, durationMs: 90 * MIN }))).toBe('access for 1h30m');
  });
});
