import { beforeAll, describe, expect, it } from 'vitest';
import {
  classifySql,
  connectionPolicySchema,
  evaluateStatements,
  initPolicyEngine,
  type PolicyIdentity,
  type SqlEffect,
} from '../../../src/policy/index.js';
import { EFFECT_POLICY, EFFECT_RULE, effectAllowed, effectAttempts } from '../../support/effect-attempts.js';

const engineer: PolicyIdentity = { subject: 'alice', kind: 'human', groups: ['engineers'] };

beforeAll(async () => {
  await initPolicyEngine();
});

function effectsOf(sql: string): SqlEffect[] {
  const c = classifySql(sql);
  if (!c.ok) throw new Error(c.error);
  return [...new Set(c.statements.flatMap((s) => s.effects))];
}

describe('effects are derived from what a statement does, not how it is spelled', () => {
  it.each<[string, SqlEffect[]]>([
    ['delete from accounts where id = 1', ['delete']],
    ['MERGE INTO accounts a USING (SELECT 1 AS id) s ON a.id = s.id WHEN MATCHED THEN DELETE', ['delete']],
    ['merge into a using b on a.id = b.id when matched then update set v = 1 when not matched then insert values (1)', ['update', 'insert']],
    ['insert into a values (1) on conflict (id) do update set v = 0', ['insert', 'update']],
    ['insert into a values (1) on conflict do nothing', ['insert']],
    ['with d as (delete from a returning 1) select * from d', ['delete', 'read']],
    ['truncate a', ['truncate', 'delete']],
    ['alter table a rename to b', ['schema']],
    ['ALTER SYSTEM SET work_mem = \'1MB\'', ['config']],
    ['create or replace rule r as on insert to b do also delete from a', ['schema', 'code', 'delete']],
    ['grant select on a to someone', ['privilege']],
    ['revoke select on a from someone', ['privilege']],
    ['alter role someone superuser', ['privilege']],
    ['set role someone', ['privilege']],
    ['copy a from stdin', ['insert']],
    ["copy a from '/etc/passwd'", ['insert', 'server']],
    ["select pg_read_file('/etc/passwd')", ['server']],
    ['select * into b from a', ['schema', 'insert', 'read']],
    ['create table b as select * from a', ['schema', 'insert']],
    ['do $$ begin perform 1; end $$', ['code', 'unknown']],
    ["select * from dblink('x', 'delete from a') as t(x int)", ['unknown']],
    ['select my_function()', ['unknown']],
    ['select public.lower(\'x\')', ['unknown']],
    ['create trigger t after insert on a for each row execute function f()', ['schema', 'code', 'unknown']],
    ["copy a to program 'true'", ['server', 'unknown']],
    ['explain delete from a', ['read']],
    ['explain analyze delete from a where id = 1', ['delete']],
  ])('%s has effects %j', (sql, expected) => {
    const effects = effectsOf(sql);
    for (const e of expected) expect(effects).toContain(e);
  });

  it('ordinary reads and built-in functions have only the effect read', () => {
    expect(effectsOf("select count(*), lower('X'), now(), pg_catalog.upper(name) from accounts")).toEqual(['read']);
    expect(effectsOf('explain delete from accounts')).toEqual(['read']);
  });

  it('transaction control has no effect; SET of a setting is session', () => {
    expect(effectsOf('begin; savepoint a; release a; commit')).toEqual([]);
    expect(effectsOf('set search_path = app')).toEqual(['session']);
  });
});

describe('one effect rule refuses every spelling', () => {
  const policy = connectionPolicySchema.parse(EFFECT_POLICY);
  it.each(effectAttempts)('%s is denied by the effect rule', (sql) => {
    const verdict = evaluateStatements(policy, engineer, classifySql(sql));
    expect(verdict).toMatchObject({ action: 'deny', rule: EFFECT_RULE });
  });

  it.each(effectAllowed)('%s is allowed', (sql) => {
    expect(evaluateStatements(policy, engineer, classifySql(sql)).action).toBe('allow');
  });

  it('the old syntactic rule lets the MERGE and the tautologies through (what the effect rule fixes)', () => {
    const syntactic = connectionPolicySchema.parse({
      rules: [{ name: 'unbounded', match: { statement: ['DeleteStmt', 'UpdateStmt', 'MergeStmt'], where: 'absent' }, action: 'deny' }],
    });
    for (const sql of [
      'MERGE INTO accounts a USING (SELECT 1 AS id) s ON a.id = s.id WHEN MATCHED THEN DELETE',
      'DELETE FROM accounts WHERE id = id',
    ]) {
      expect(evaluateStatements(syntactic, engineer, classifySql(sql)).action).toBe('allow');
    }
  });
});

describe('unknowable effects fail closed', () => {
  it('a deny rule on an effect of one table catches statements whose effect cannot be seen', () => {
    const policy = connectionPolicySchema.parse({
      rules: [{ name: 'no-delete-accounts', match: { effects: ['delete'], tables: ['accounts'] }, action: 'deny' }],
    });
    for (const sql of ["do $$ begin execute 'delete from accounts'; end $$", 'select cleanup()', 'call cleanup()']) {
      expect(evaluateStatements(policy, engineer, classifySql(sql))).toMatchObject({ action: 'deny', rule: 'no-delete-accounts' });
    }
    expect(evaluateStatements(policy, engineer, classifySql('select * from accounts')).action).toBe('allow');
  });

  it('an allow rule on effects never covers unknown unless it names it', () => {
    const policy = connectionPolicySchema.parse({
      defaultAction: 'deny',
      rules: [{ name: 'readers', match: { effects: ['read'] }, action: 'allow' }],
    });
    expect(evaluateStatements(policy, engineer, classifySql('select * from accounts')).action).toBe('allow');
    expect(evaluateStatements(policy, engineer, classifySql('select cleanup()')).action).toBe('deny');
    expect(evaluateStatements(policy, engineer, classifySql('with d as (delete from a returning 1) select * from d')).action).toBe('deny');
  });

  it('a rule may name unknown itself', () => {
    const policy = connectionPolicySchema.parse({ rules: [{ name: 'no-unknown', match: { effects: 'unknown' }, action: 'deny' }] });
    expect(evaluateStatements(policy, engineer, classifySql('select cleanup()'))).toMatchObject({ action: 'deny', rule: 'no-unknown' });
    expect(evaluateStatements(policy, engineer, classifySql('delete from accounts')).action).toBe('allow');
  });

  it('a misspelt effect names the field', () => {
    const r = connectionPolicySchema.safeParse({ rules: [{ name: 'x', match: { effects: ['deletes'] }, action: 'deny' }] });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toContain('effects');
  });
});
