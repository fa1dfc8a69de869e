import { beforeAll, describe, expect, it } from 'vitest';
import { FrameScanner, MAX_BACKEND_FRAME } from '../../../../../src/broker/protocols/postgres/frame-scanner.js';
import {
  createCommandComplete,
  createDataRow,
  createReadyForQuery,
  createRowDescription,
  parseDataRow,
  type RowField,
} from '../../../../../src/broker/protocols/postgres/messages.js';
import { ResultMasker } from '../../../../../src/broker/protocols/postgres/result-masker.js';
import { BackendCode } from '../../../../../src/lib/pg-wire/message-codes.js';
import { initPolicyEngine, maskPlanFor, parseConnectionPolicy, type MaskPlan } from '../../../../../src/policy/index.js';

/**
 * The result masker sees backend frames as the frame scanner cuts them from the stream. Whatever the cuts (a TCP
 * stream may split anywhere), the client must receive the same bytes: every value the rules select masked, every
 * other byte as the server sent it.
 */
const TEXT = 25;
const INT4 = 23;
const field = (name: string, typeOid: number): RowField => ({ name, tableOid: 0, attnum: 0, typeOid, typeSize: -1, typeModifier: -1, format: 0 });
const WANTED = new Set<number>([
  BackendCode.RowDescription, BackendCode.DataRow, BackendCode.CommandComplete, BackendCode.ReadyForQuery, BackendCode.ErrorResponse, BackendCode.NoticeResponse,
]);
const SQL = 'select id, name, email, note from customers';

let plan: MaskPlan;

beforeAll(async () => {
  await initPolicyEngine();
  const policy = parseConnectionPolicy({ rules: [{ name: 'pii', mask: { columns: ['email'], detectors: ['credit_card'] } }] });
  if (!policy.ok) throw new Error(policy.error);
  plan = maskPlanFor(policy.policy, { subject: 'a', kind: 'human', groups: [] })!;
});

function backendStream(): Buffer {
  return Buffer.concat([
    createRowDescription([field('id', INT4), field('name', TEXT), field('email', TEXT), field('note', TEXT)]),
    createDataRow(['1', 'Ada', 'ada@example.com', 'card 4111 1111 1111 1111 on file']),
    createDataRow(['2', 'Bob', null, 'no card']),
    createDataRow(['3', 'Cy'.repeat(200), 'cy@example.com', 'x'.repeat(1000)]),
    createCommandComplete('SELECT 3'),
    createReadyForQuery('I'),
  ]);
}

/** Runs the stream, cut into `chunks`, through a scanner and a fresh masker, as the proxy does. */
function maskThrough(chunks: Buffer[]): Buffer {
  const scanner = new FrameScanner({ wanted: WANTED, maxLength: MAX_BACKEND_FRAME });
  const masker = new ResultMasker(plan, 'test-key');
  masker.query(SQL);
  const out: Buffer[] = [];
  for (const chunk of chunks) {
    for (const piece of scanner.split(chunk)) out.push(piece.kind === 'frame' ? (masker.backendFrame(piece) ?? piece.bytes) : piece.bytes);
  }
  return Buffer.concat(out);
}

/** The DataRow values of a backend stream, as text. */
function rowsOf(stream: Buffer): Array<Array<string | null>> {
  const rows: Array<Array<string | null>> = [];
  for (let at = 0; at < stream.length; ) {
    const code = stream[at]!;
    const length = stream.readInt32BE(at + 1);
    if (code === BackendCode.DataRow) rows.push(parseDataRow(stream.subarray(at + 5, at + 1 + length)).map((v) => (v === null ? null : v.toString('utf8'))));
    at += 1 + length;
  }
  return rows;
}

describe('ResultMasker', () => {
  const stream = backendStream();
  let whole: Buffer;
  beforeAll(() => {
    whole = maskThrough([stream]);
  });

  it('masks the named column whole and card numbers anywhere, and keeps the rest', () => {
    const rows = rowsOf(whole);
    expect(rows.map((r) => r[0])).toEqual(['1', '2', '3']);
    expect(rows[0]![1]).toBe('Ada');
    expect(rows[0]![2]).not.toContain('ada@example.com');
    expect(rows[0]![3]).not.toContain('4111');
    expect(rows[0]![3]).toContain('on file');
    expect(rows[1]![2]).toBeNull();
    expect(rows[1]![3]).toBe('no card');
    expect(rows[2]![2]).not.toContain('cy@example.com');
    expect(whole.toString('latin1')).not.toMatch(/ada@example|cy@example|4111 1111/);
  });

  it('gives the client the same bytes when the stream is cut at every byte boundary', () => {
    for (let cut = 1; cut < stream.length; cut++) {
      const r = maskThrough([stream.subarray(0, cut), stream.subarray(cut)]);
      expect(r.equals(whole), `cut at ${cut}`).toBe(true);
    }
  });

  it('gives the client the same bytes when the stream comes one byte at a time', () => {
    expect(maskThrough(Array.from(stream, (_, i) => stream.subarray(i, i + 1))).equals(whole)).toBe(true);
  });
});
