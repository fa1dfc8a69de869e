import { beforeAll, describe, expect, it } from 'vitest';
import { FrameScanner, MAX_CLIENT_FRAME } from '../../../../../src/broker/protocols/postgres/frame-scanner.js';
import { createParse, createQuery, createSync, parseParse, parseQuery } from '../../../../../src/broker/protocols/postgres/messages.js';
import { StatementJudge } from '../../../../../src/broker/protocols/postgres/statement-judge.js';
import { FrontendCode } from '../../../../../src/lib/pg-wire/message-codes.js';
import { initPolicyEngine, parseConnectionPolicy, type ConnectionPolicy } from '../../../../../src/policy/index.js';

/**
 * The judge sees each Query and Parse as the frame scanner cuts them from the client's stream. However the stream is
 * split (a statement cut mid-word, mid-character), each statement must be judged once, whole, with the same verdict.
 */
let policy: ConnectionPolicy;
const WANTED = new Set<number>([FrontendCode.Query, FrontendCode.Parse, FrontendCode.Sync]);

beforeAll(async () => {
  await initPolicyEngine();
  const parsed = parseConnectionPolicy({
    defaultAction: 'allow',
    rules: [
      { name: 'no-ddl', match: { statement: ['DropStmt', 'TruncateStmt'] }, action: 'deny' },
      { name: 'unbounded-delete', match: { statement: ['DeleteStmt'], where: 'absent' }, action: 'review' },
      { name: 'no-role-change', match: { roleChange: true }, action: 'deny' },
    ],
  });
  if (!parsed.ok) throw new Error(parsed.error);
  policy = parsed.policy;
});

function clientStream(): Buffer {
  return Buffer.concat([
    createQuery("select 'héllo wörld ✓' as greeting"),
    createQuery('select 1; drop table customers'),
    createParse({ name: 'wipe', sql: 'delete from orders' }),
    createSync(),
    createQuery("delete from orders where id = 7; set role 'postgres'"),
    createQuery('-- only a comment'),
    createQuery('truncate audit_log'),
  ]);
}

/** Each judged statement's text and verdict, for the stream cut into `chunks`. */
function judgeThrough(chunks: Buffer[]): Array<{ sql: string; action: string; rule?: string; refused: boolean }> {
  const scanner = new FrameScanner({ wanted: WANTED, maxLength: MAX_CLIENT_FRAME });
  const judge = new StatementJudge(policy, { subject: 'a', kind: 'human', groups: [] }, undefined);
  const out: Array<{ sql: string; action: string; rule?: string; refused: boolean }> = [];
  for (const chunk of chunks) {
    for (const piece of scanner.split(chunk)) {
      if (piece.kind !== 'frame' || piece.code === FrontendCode.Sync) continue;
      const parse = piece.code === FrontendCode.Parse ? parseParse(piece.body) : undefined;
      const sql = parse ? parse.sql : parseQuery(piece.body);
      const j = judge.judge(sql, parse?.name);
      out.push({ sql, action: j.verdict.action, ...(j.verdict.rule ? { rule: j.verdict.rule } : {}), refused: j.refused });
    }
  }
  return out;
}

describe('StatementJudge over a client stream', () => {
  const stream = clientStream();
  let whole: ReturnType<typeof judgeThrough>;
  beforeAll(() => {
    whole = judgeThrough([stream]);
  });

  it('judges each statement by the rules; a review with no reviewer is refused (fail closed)', () => {
    expect(whole.map(({ action, rule, refused }) => ({ action, ...(rule ? { rule } : {}), refused }))).toEqual([
      { action: 'allow', refused: false },
      { action: 'deny', rule: 'no-ddl', refused: true },
      { action: 'review', rule: 'unbounded-delete', refused: true },
      { action: 'deny', rule: 'no-role-change', refused: true },
      { action: 'allow', refused: false },
      { action: 'deny', rule: 'no-ddl', refused: true },
    ]);
    expect(whole[0]!.sql).toBe("select 'héllo wörld ✓' as greeting");
  });

  it('judges the same statements the same way when the stream is cut at every byte boundary', () => {
    for (let cut = 1; cut < stream.length; cut++) {
      expect(judgeThrough([stream.subarray(0, cut), stream.subarray(cut)]), `cut at ${cut}`).toEqual(whole);
    }
  });

  it('judges the same statements the same way when the stream comes one byte at a time', () => {
    expect(judgeThrough(Array.from(stream, (_, i) => stream.subarray(i, i + 1)))).toEqual(whole);
  });
});
