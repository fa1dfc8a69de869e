import { describe, expect, it } from 'vitest';
import { capText, shapeResults, uniqueKeys } from '../../../src/mcp/result-shape.js';

const result = (rows: unknown[][], columns = ['id', 'name']) => ({ command: 'SELECT', rowCount: rows.length, columns, rows });

describe('shapeResults', () => {
  it('turns rows into objects keyed by column, with dates, bytes and bigints as JSON carries them', () => {
    const shaped = shapeResults([result([[1, new Date('2026-01-02T03:04:05Z'), Buffer.from([0xde, 0xad]), 12n]], ['id', 'at', 'raw', 'big'])], { maxRows: 10, maxBytes: 1000 });
    expect(shaped).toEqual({
      truncated: false, limits: { maxRows: 10, maxBytes: 1000 },
      results: [{ command: 'SELECT', rowCount: 1, columns: ['id', 'at', 'raw', 'big'], truncated: false, rows: [{ id: 1, at: '2026-01-02T03:04:05.000Z', raw: '\\xdead', big: '12' }] }],
    });
  });

  it('keeps both values of a join\'s duplicate column names', () => {
    expect(uniqueKeys(['id', 'id', 'name', 'id'])).toEqual(['id', 'id_2', 'name', 'id_3']);
    expect(shapeResults([result([[1, 2]], ['id', 'id'])], { maxRows: 5, maxBytes: 100 }).results[0]!.rows).toEqual([{ id: 1, id_2: 2 }]);
  });

  it('shares one row budget across the statements of a text and says which were cut', () => {
    const shaped = shapeResults([result([[1, 'a'], [2, 'b']]), result([[3, 'c'], [4, 'd']])], { maxRows: 3, maxBytes: 10_000 });
    expect(shaped.results.map((r) => r.rows.length)).toEqual([2, 1]);
    expect(shaped.results.map((r) => r.truncated)).toEqual([false, true]);
    expect(shaped.truncated).toBe(true);
  });

  it('stops before the row that would pass the byte cap', () => {
    const rows = [[1, 'x'.repeat(40)], [2, 'y'.repeat(40)]];
    const one = Buffer.byteLength(JSON.stringify({ id: 1, name: 'x'.repeat(40) }));
    const shaped = shapeResults([result(rows)], { maxRows: 100, maxBytes: one + 10 });
    expect(shaped.results[0]!.rows).toEqual([{ id: 1, name: 'x'.repeat(40) }]);
    expect(shaped.truncated).toBe(true);
  });
});

describe('capText', () => {
  it('cuts on a character boundary and says so', () => {
    expect(capText('héllo', 100)).toEqual({ text: 'héllo', truncated: false });
    expect(capText('héllo', 2)).toEqual({ text: 'h', truncated: true });
  });
});
