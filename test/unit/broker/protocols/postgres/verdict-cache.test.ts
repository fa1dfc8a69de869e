import { beforeAll, describe, expect, it } from 'vitest';
import { StatementJudge } from '../../../../../src/broker/protocols/postgres/statement-judge.js';
import { VerdictCache, verdictContext } from '../../../../../src/broker/protocols/postgres/verdict-cache.js';
import { initPolicyEngine, maskPlanFor, parseConnectionPolicy, type ConnectionPolicy, type PolicyIdentity } from '../../../../../src/policy/index.js';

/**
 * Sessions share one verdict cache. A verdict reused for someone the rules would judge differently is an access
 * hole: each case below judges a text for one identity or policy first, then for another that must get its own.
 */
function policyOf(input: unknown): ConnectionPolicy {
  const parsed = parseConnectionPolicy(input);
  if (!parsed.ok) throw new Error(parsed.error);
  return parsed.policy;
}

let dbaOnly: ConnectionPolicy;
const dba: PolicyIdentity = { subject: 'dana', kind: 'human', groups: ['dba'] };
const analyst: PolicyIdentity = { subject: 'alex', kind: 'human', groups: ['analysts'] };

beforeAll(async () => {
  await initPolicyEngine();
  dbaOnly = policyOf({
    defaultAction: 'deny',
    rules: [
      { name: 'dba-all', match: { identity: { groups: ['dba'] } }, action: 'allow' },
      { name: 'read', match: { category: ['read'] }, action: 'allow' },
    ],
  });
});

const judgeWith = (cache: VerdictCache, policy: ConnectionPolicy, who: PolicyIdentity, sql: string) =>
  new StatementJudge(policy, who, maskPlanFor(policy, who), false, cache).judge(sql);

describe('verdict cache', () => {
  it('does not give one identity the verdict judged for another', () => {
    const cache = new VerdictCache();
    expect(judgeWith(cache, dbaOnly, dba, 'drop table payroll').refused).toBe(false);
    const second = judgeWith(cache, dbaOnly, analyst, 'drop table payroll');
    expect(second.refused).toBe(true);
    expect(second.verdict.message).toContain('default: deny');
    // Same subject, other groups (a token refreshed after a group change): its own verdict too.
    expect(judgeWith(cache, dbaOnly, { ...dba, groups: [] }, 'drop table payroll').refused).toBe(true);
    expect(cache.hits).toBe(0);
  });

  it('does not reuse a verdict under other rules (another connection, or the config after a reload)', () => {
    const cache = new VerdictCache();
    const open = policyOf({ defaultAction: 'allow' });
    const strict = policyOf({ defaultAction: 'allow', rules: [{ name: 'no-drop', match: { statement: 'DropStmt' }, action: 'deny' }] });
    expect(judgeWith(cache, open, analyst, 'drop table t').refused).toBe(false);
    const judged = judgeWith(cache, strict, analyst, 'drop table t');
    expect(judged.refused).toBe(true);
    expect(judged.verdict.rule).toBe('no-drop');
  });

  it('reuses a verdict for the same text, rules and identity, and refuses it as before', () => {
    const cache = new VerdictCache();
    const first = judgeWith(cache, dbaOnly, analyst, 'delete from orders');
    const again = judgeWith(cache, dbaOnly, { ...analyst, groups: ['analysts'] }, 'delete from orders');
    expect(cache.hits).toBe(1);
    expect(again).toEqual(first);
    expect(again.refused).toBe(true);
  });

  it('keys on the mask plan: the same identity under a column mask gets its COPY refused', () => {
    const cache = new VerdictCache();
    const masked = policyOf({ rules: [{ name: 'pii', mask: { columns: ['email'] } }] });
    const plain = policyOf({});
    const copy = 'copy customers to stdout';
    expect(judgeWith(cache, plain, analyst, copy).refused).toBe(false);
    expect(judgeWith(cache, masked, analyst, copy).refused).toBe(true);
  });

  it('never caches EXECUTE: it is judged by what this session prepared', () => {
    const cache = new VerdictCache();
    const policy = policyOf({ rules: [{ name: 'no-delete', match: { statement: 'DeleteStmt' }, action: 'deny' }] });
    const one = new StatementJudge(policy, analyst, undefined, false, cache);
    expect(one.judge('prepare q as select 1').refused).toBe(false);
    expect(one.judge('execute q').refused).toBe(false);
    const two = new StatementJudge(policy, analyst, undefined, false, cache);
    expect(two.judge('prepare q as delete from orders').refused).toBe(true);
    const unknown = two.judge('execute q');
    expect(unknown.refused).toBe(true);
    expect(unknown.verdict.rule).toBe('unknown-prepared-statement');
  });

  it('registers what a cached PREPARE prepares, so a later EXECUTE in another session is judged by it', () => {
    const cache = new VerdictCache();
    const policy = policyOf({ rules: [{ name: 'no-delete', match: { statement: 'DeleteStmt' }, action: 'deny' }] });
    new StatementJudge(policy, analyst, undefined, false, cache).judge('prepare q as select 1');
    const two = new StatementJudge(policy, analyst, undefined, false, cache);
    two.judge('prepare q as select 1');
    expect(cache.hits).toBe(1);
    expect(two.judge('execute q').refused).toBe(false);
  });

  it('keeps the most recently used entries within its bounds, and forgets all on clear', () => {
    const cache = new VerdictCache(2);
    const policy = policyOf({});
    for (const sql of ['select 1', 'select 2', 'select 1', 'select 3']) judgeWith(cache, policy, analyst, sql);
    expect(cache.size).toBe(2);
    judgeWith(cache, policy, analyst, 'select 1');
    expect(cache.hits).toBe(2);
    judgeWith(cache, policy, analyst, 'select 2');
    expect(cache.hits).toBe(2);
    cache.clear();
    expect(cache.size).toBe(0);
  });

  it('names identities apart by every field the rules can match', () => {
    const policy = policyOf({});
    const base: PolicyIdentity = { subject: 's', kind: 'service', clientId: 'c', groups: ['a', 'b'], claims: { ref: 'main' } };
    const key = verdictContext(policy, base, undefined);
    expect(verdictContext(policy, { ...base, groups: ['b', 'a'] }, undefined)).toBe(key);
    for (const other of [
      { ...base, subject: 't' },
      { ...base, kind: 'human' as const },
      { ...base, clientId: 'd' },
      { ...base, groups: ['a'] },
      { ...base, claims: { ref: 'dev' } },
    ]) {
      expect(verdictContext(policy, other, undefined)).not.toBe(key);
    }
  });
});
