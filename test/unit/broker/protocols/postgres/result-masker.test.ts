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

/**
 * Runs the stream, cut into `chunks`, through a scanner and a fresh masker, as the proxy does: with `runs`, the
 * DataRows of a chunk come as one piece (as under a mask plan in the proxy), otherwise one frame at a time.
 */
function maskThrough(chunks: Buffer[], options: { runs?: boolean; masker?: ResultMasker } = {}): Buffer {
  const scanner = new FrameScanner({ wanted: WANTED, maxLength: MAX_BACKEND_FRAME, ...(options.runs ? { runs: ROWS } : {}) });
  let masker = options.masker;
  if (!masker) {
    masker = new ResultMasker(plan, 'test-key');
    masker.query(SQL);
  }
  const out: Buffer[] = [];
  for (const chunk of chunks) {
    for (const piece of scanner.split(chunk)) {
      if (piece.kind === 'raw') out.push(piece.bytes);
      else if (piece.kind === 'run') out.push(masker.dataRows(piece.bytes) ?? piece.bytes);
      else out.push(masker.backendFrame(piece) ?? piece.bytes);
    }
  }
  return Buffer.concat(out);
}
const ROWS = new Set<number>([BackendCode.DataRow]);

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

  it('gives the same bytes when the rows of a chunk are masked as one run, wherever the stream is cut', () => {
    expect(maskThrough([stream], { runs: true }).equals(whole)).toBe(true);
    for (let cut = 1; cut < stream.length; cut++) {
      const r = maskThrough([stream.subarray(0, cut), stream.subarray(cut)], { runs: true });
      expect(r.equals(whole), `cut at ${cut}`).toBe(true);
    }
    expect(maskThrough(Array.from(stream, (_, i) => stream.subarray(i, i + 1)), { runs: true }).equals(whole)).toBe(true);
  });
});

describe('ResultMasker, runs of DataRows', () => {
  const planWith = (mask: Record<string, unknown>): MaskPlan => {
    const policy = parseConnectionPolicy({ rules: [{ name: 'pii', mask }] });
    if (!policy.ok) throw new Error(policy.error);
    return maskPlanFor(policy.policy, { subject: 'a', kind: 'human', groups: [] })!;
  };
  const simple = (p: MaskPlan) => {
    const m = new ResultMasker(p, 'test-key');
    m.query(SQL);
    return m;
  };
  /** Rows of every kind a run meets: NULLs, multi-byte UTF-8, unchanged rows between changed ones, long values. */
  const rows: Array<Array<string | null>> = [
    ['1', 'Ada', 'ada@example.com', 'card 4111 1111 1111 1111 on file'],
    ['2', null, null, null],
    ['3', 'Zoë', 'zoë@exämple.com', 'nothing'],
    ['4', 'Bob', null, 'nothing'],
    ['5', '日本', 'a@b.co', '4111111111111111'],
    ['6', 'x'.repeat(300), 'long'.repeat(100) + '@example.com', 'y'.repeat(300) + ' 4111-1111-1111-1111'],
    ['7', 'Cy', '', ''],
  ];
  const stream = Buffer.concat([
    createRowDescription([field('id', INT4), field('name', TEXT), field('email', TEXT), field('note', TEXT)]),
    ...Array.from({ length: 40 }, (_, k) => rows.map((r) => createDataRow(k === 0 ? r : [String(k * 10 + Number(r[0])), ...r.slice(1)]))).flat(),
    createCommandComplete('SELECT 280'),
    createReadyForQuery('I'),
  ]);

  it.each(['redact', 'partial', 'hash', 'null'])('masks as the frame-at-a-time path does, wherever the stream is cut (%s)', (strategy) => {
    const p = planWith({ columns: ['email'], detectors: ['credit_card', 'email'], strategy });
    const expected = maskThrough([stream], { masker: simple(p) });
    // Every rewritten row is well formed: its length and its values' lengths agree with what they hold.
    for (let at = 0; at < expected.length; at += 1 + expected.readInt32BE(at + 1)) {
      const frame = expected.subarray(at, at + 1 + expected.readInt32BE(at + 1));
      if (frame[0] === BackendCode.DataRow) expect(createDataRow(parseDataRow(frame.subarray(5))).equals(frame)).toBe(true);
    }
    const masked = rowsOf(expected);
    expect(masked).toHaveLength(280);
    expect(expected.toString('utf8')).not.toMatch(/example\.com|exämple|4111.1111|a@b\.co/);
    // Unchanged values stay, NULLs stay NULL; the email column is masked whole (NULL under the null strategy).
    expect(masked[1]).toEqual(['2', null, null, null]);
    expect(masked[2]!.slice(0, 2)).toEqual(['3', 'Zoë']);
    expect(masked[2]![3]).toBe('nothing');
    expect(masked[4]![1]).toBe('日本');
    if (strategy === 'null') expect(masked[0]![2]).toBeNull();
    else expect(masked[0]![2]).not.toBeNull();
    expect(maskThrough([stream], { runs: true, masker: simple(p) }).equals(expected)).toBe(true);
    for (const size of [1, 3, 7, 64, 333, 4096]) {
      const chunks: Buffer[] = [];
      for (let at = 0; at < stream.length; at += size) chunks.push(stream.subarray(at, at + size));
      expect(maskThrough(chunks, { runs: true, masker: simple(p) }).equals(expected), `chunks of ${size}`).toBe(true);
    }
  });

  it('passes a run nothing changes in as it is', () => {
    const p = planWith({ columns: ['ssn'], detectors: ['us_ssn'] });
    const masker = simple(p);
    const body = Buffer.concat(rows.slice(1).map((r) => createDataRow(r)));
    masker.backendFrame({ code: BackendCode.RowDescription, bytes: Buffer.alloc(0), body: createRowDescription([field('id', INT4), field('name', TEXT), field('email', TEXT), field('note', TEXT)]).subarray(5) });
    expect(masker.dataRows(body)).toBeUndefined();
  });

  it('masks binary columns in a run by their type: a named text column replaced, an int4 passed', () => {
    const p = planWith({ columns: ['email'], strategy: 'redact' });
    const masker = new ResultMasker(p, 'test-key');
    masker.parse('s', 'select id, email from customers');
    masker.bind('', 's', [1]);
    masker.describe('portal', '');
    masker.execute('');
    masker.sync();
    const int4 = (n: number) => {
      const b = Buffer.alloc(4);
      b.writeInt32BE(n);
      return b;
    };
    const binary = (name: string, typeOid: number): RowField => ({ ...field(name, typeOid), format: 1 });
    const out = maskThrough(
      [Buffer.concat([
        createRowDescription([binary('id', INT4), binary('email', TEXT)]),
        createDataRow([int4(1), Buffer.from('ada@example.com')]),
        createDataRow([int4(2), null]),
        createCommandComplete('SELECT 2'),
        createReadyForQuery('I'),
      ])],
      { runs: true, masker },
    );
    const values = rowsOf(out);
    expect(values[0]![1]).toBe('[REDACTED]');
    expect(values[1]![1]).toBeNull();
    expect(out.includes(int4(1))).toBe(true);
    expect(out.includes(int4(2))).toBe(true);
  });

  it('ends the session on a DataRow whose values overrun it instead of reading the next row', () => {
    const masker = simple(plan);
    masker.backendFrame({ code: BackendCode.RowDescription, bytes: Buffer.alloc(0), body: createRowDescription([field('id', INT4), field('name', TEXT), field('email', TEXT), field('note', TEXT)]).subarray(5) });
    const good = createDataRow(['1', 'Ada', 'ada@example.com', 'x']);
    const bad = Buffer.from(good);
    bad.writeInt32BE(100, 7); // the first value claims 100 bytes: it would run into the next row
    expect(() => masker.dataRows(Buffer.concat([bad, good]))).toThrow(/too short/);
  });
});
