import { beforeAll, describe, expect, it } from 'vitest';
import { classifySql, connectionPolicySchema, evaluateStatements, initPolicyEngine, rowGuardMessage, type PolicyIdentity } from '../../../src/policy/index.js';
import { dryRunPolicy } from '../../../src/policy/dry-run.js';

const engineer: PolicyIdentity = { subject: 'alice', kind: 'human', groups: ['engineers'] };
const policy = connectionPolicySchema.parse({
  rules: [{ name: 'row-guard', match: { effects: ['delete', 'update'] }, maxAffectedRows: 10, action: 'review' }],
});

beforeAll(async () => {
  await initPolicyEngine();
});

/** The session prepared `wipe` as a DELETE. */
function verdictOf(sql: string) {
  const wipe = classifySql('delete from t where id > 0');
  return evaluateStatements(policy, engineer, classifySql(sql), (name) => (name === 'wipe' && wipe.ok ? wipe.statements[0] : undefined));
}

describe('row guard rules', () => {
  it.each([
    'delete from accounts where id = id',
    'MERGE INTO accounts a USING (SELECT 1 AS id) s ON a.id = s.id WHEN MATCHED THEN DELETE',
    'update accounts set v = 0 where id in (select id from accounts)',
    'insert into accounts values (1) on conflict (id) do update set v = 0',
    'execute wipe',
  ])('%s runs under the guard (allowed, guarded)', (sql) => {
    expect(verdictOf(sql)).toMatchObject({ action: 'allow', guard: { rule: 'row-guard', maxAffectedRows: 10, action: 'review' } });
  });

  it.each([
    ['with d as (delete from accounts returning 1) select count(*) from d', 'cannot be counted'],
    ['explain analyze delete from accounts', 'cannot be counted'],
    ["do $$ begin delete from accounts; end $$", 'cannot be counted'],
    ['select cleanup()', 'cannot be counted'],
    ['truncate accounts', 'cannot be counted'],
    ['select 1; delete from accounts where id = 1', 'statement of its own'],
  ])('%s cannot be guarded, so the guard rule’s action applies', (sql, why) => {
    const v = verdictOf(sql);
    expect(v).toMatchObject({ action: 'review', rule: 'row-guard' });
    expect(v.message).toContain(why);
    expect(v.guard).toBeUndefined();
  });

  it('reads and inserts are not guarded', () => {
    expect(verdictOf('select * from accounts').guard).toBeUndefined();
    expect(verdictOf('insert into accounts values (1)')).toEqual({ action: 'allow', message: 'allowed by default', statementIndex: 0 });
  });

  it('a deny rule still wins over the guard', () => {
    const p = connectionPolicySchema.parse({
      rules: [
        { name: 'row-guard', match: { effects: ['delete'] }, maxAffectedRows: 10, action: 'deny' },
        { name: 'no-accounts', match: { tables: ['accounts'], effects: ['delete'] }, action: 'deny' },
      ],
    });
    expect(evaluateStatements(p, engineer, classifySql('delete from accounts where id = 1'))).toMatchObject({ action: 'deny', rule: 'no-accounts' });
  });

  it('maxAffectedRows needs action deny or review, and says so by its field', () => {
    const r = connectionPolicySchema.safeParse({ rules: [{ name: 'g', match: { effects: ['delete'] }, maxAffectedRows: 1, action: 'allow' }] });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual(['rules', 0, 'maxAffectedRows']);
  });

  it('says how many rows would have changed', () => {
    expect(rowGuardMessage({ rule: 'row-guard', maxAffectedRows: 10, action: 'deny' }, 'DELETE 1000', 1000)).toBe(
      'would delete 1000 rows, more than the 10 rule "row-guard" allows (maxAffectedRows); it was rolled back',
    );
  });

  it('policy check shows the guard a write runs under', () => {
    expect(dryRunPolicy(policy, engineer, 'delete from accounts where id = id').verdict.guard).toMatchObject({ rule: 'row-guard' });
  });
});
