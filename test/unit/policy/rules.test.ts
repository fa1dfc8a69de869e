import { beforeAll, describe, expect, it } from 'vitest';
import {
  classifySql,
  connectionPolicySchema,
  evaluateStatements,
  initPolicyEngine,
  maskPlanFor,
  parseConnectionPolicy,
  type PolicyIdentity,
} from '../../../src/policy/index.js';

beforeAll(async () => {
  await initPolicyEngine();
});

const analyst: PolicyIdentity = { subject: 'ann', kind: 'human', groups: ['analysts'] };
const dba: PolicyIdentity = { subject: 'dan', kind: 'human', groups: ['dba'] };
const stranger: PolicyIdentity = { subject: 'sam', kind: 'human', groups: ['sales'] };
const ciBot: PolicyIdentity = { subject: 'svc-ci', kind: 'service', clientId: 'ci-reporting', groups: [] };

// The read-only, per-schema example from the TSDoc of rules.ts.
const readOnly = connectionPolicySchema.parse({
  defaultAction: 'deny',
  rules: [
    {
      name: 'analysts-read-reporting',
      match: { identity: { groups: ['analysts'] }, category: ['read', 'transaction'], tables: ['reporting.*'] },
      action: 'allow',
    },
    { name: 'dba-all', match: { identity: { groups: ['dba'] } }, action: 'allow' },
    { name: 'no-drop', match: { statement: ['DropStmt', 'TruncateStmt'] }, action: 'deny' },
  ],
});

const verdict = (policy: typeof readOnly, who: PolicyIdentity, sql: string) =>
  evaluateStatements(policy, who, classifySql(sql));

describe('read-only per-schema grant', () => {
  it.each([
    'select * from reporting.sales',
    'select s.region, sum(s.amount) from reporting.sales s join reporting.regions r on r.id = s.region group by 1',
    'BEGIN; select count(*) from reporting.sales; COMMIT',
    'select 1',
    'with x as (select * from reporting.sales) select * from x',
  ])('lets analysts run %j', (sql) => {
    expect(verdict(readOnly, analyst, sql)).toMatchObject({ action: 'allow', rule: 'analysts-read-reporting' });
  });

  it.each([
    'select * from public.users',
    'select * from sales',
    'select * from reporting.sales, public.users',
    "insert into reporting.sales values (1)",
    'delete from reporting.sales where id = 1',
    "select set_config('role', 'postgres', false)",
    'with d as (delete from reporting.sales where id = 1 returning *) select * from d',
    'select * from reporting.sales for update',
    "select pg_terminate_backend(42)",
    "select pg_read_file('/etc/passwd')",
    "select nextval('reporting.seq')",
    'set role postgres',
    'create table reporting.x (a int)',
  ])('denies analysts %j', (sql) => {
    const v = verdict(readOnly, analyst, sql);
    expect(v.action).toBe('deny');
  });

  it('denies other groups by default, naming no rule', () => {
    const v = verdict(readOnly, stranger, 'select * from reporting.sales');
    expect(v.action).toBe('deny');
    expect(v.rule).toBeUndefined();
  });

  it('lets DBAs do anything except what a deny rule names', () => {
    expect(verdict(readOnly, dba, 'delete from public.users where id = 1').action).toBe('allow');
    expect(verdict(readOnly, dba, 'drop table reporting.sales')).toMatchObject({ action: 'deny', rule: 'no-drop' });
  });
});

describe('verdicts', () => {
  const policy = connectionPolicySchema.parse({
    rules: [
      { name: 'review-deletes', match: { statement: 'DeleteStmt' }, action: 'review', message: 'deletes need a second pair of eyes' },
      { name: 'no-payroll', match: { tables: ['payroll.*'] }, action: 'deny', message: 'payroll is off limits' },
      { name: 'no-payroll-2', match: { tables: ['payroll.*'] }, action: 'deny' },
      { name: 'ci-writes', match: { identity: { clientIds: ['ci-reporting'] }, category: 'write' }, action: 'deny' },
    ],
  });

  it('takes the strictest verdict over statements and names the statement', () => {
    const v = verdict(policy, dba, 'select 1; delete from public.t where id = 1; select * from payroll.salaries');
    expect(v).toMatchObject({ action: 'deny', rule: 'no-payroll', message: 'payroll is off limits', statementIndex: 2 });
  });

  it('reviews when no deny matches, with the rule message', () => {
    expect(verdict(policy, dba, 'delete from public.t where id = 1')).toMatchObject({
      action: 'review',
      rule: 'review-deletes',
      message: 'deletes need a second pair of eyes',
      statementIndex: 0,
    });
  });

  it('matches unqualified tables against any schema for deny rules (search_path could point anywhere)', () => {
    // A schema-wide deny rule catches every unqualified name: `salaries` may resolve to payroll.salaries.
    expect(verdict(policy, dba, 'select * from salaries')).toMatchObject({ action: 'deny', rule: 'no-payroll' });
    expect(verdict(policy, dba, 'select * from public.salaries').action).toBe('allow');
    const p = connectionPolicySchema.parse({ rules: [{ name: 'x', match: { tables: ['payroll.salaries'] }, action: 'deny' }] });
    expect(verdict(p, dba, 'select * from salaries').action).toBe('deny');
    expect(verdict(p, dba, 'select * from "SALARIES"').action).toBe('deny');
    expect(verdict(p, dba, 'drop schema payroll cascade').action).toBe('deny');
  });

  it('matches functions in any schema by bare name', () => {
    const p = connectionPolicySchema.parse({ rules: [{ name: 'x', match: { functions: ['dblink*'] }, action: 'deny' }] });
    expect(verdict(p, dba, "select public.dblink_exec('x')").action).toBe('deny');
    expect(verdict(p, dba, 'select "DBLINK"()').action).toBe('deny');
    expect(verdict(p, dba, 'select lower(x) from t').action).toBe('allow');
  });

  it('matches client ids only for service accounts', () => {
    expect(verdict(policy, ciBot, 'insert into public.t values (1)')).toMatchObject({ action: 'deny', rule: 'ci-writes' });
    const human: PolicyIdentity = { subject: 'h', kind: 'human', clientId: 'ci-reporting', groups: [] };
    expect(verdict(policy, human, 'insert into public.t values (1)').action).toBe('allow');
  });

  it('fails closed on unparseable text and unknown prepared statements', () => {
    expect(verdict(policy, dba, 'selec 1')).toMatchObject({ action: 'deny', rule: 'unparseable' });
    expect(verdict(policy, dba, 'execute p')).toMatchObject({ action: 'deny', rule: 'unknown-prepared-statement' });
  });

  it('judges a PREPARE by the statement it prepares', () => {
    expect(verdict(policy, dba, 'prepare p as select * from payroll.salaries')).toMatchObject({ action: 'deny', rule: 'no-payroll' });
  });
});

describe('schema', () => {
  it('applies defaults', () => {
    expect(connectionPolicySchema.parse({})).toEqual({ defaultAction: 'allow', rules: [] });
  });

  it.each([
    [{ rules: [{ name: 'a', action: 'deny', mask: { columns: ['x'] } }] }, 'exactly one of action or mask'],
    [{ rules: [{ name: 'a' }] }, 'exactly one of action or mask'],
    [{ rules: [{ name: 'a', action: 'nope' }] }, 'action'],
    [{ rules: [{ name: 'a', match: { statment: ['DropStmt'] }, action: 'deny' }] }, 'statment'],
    [{ rules: [{ name: 'a', match: { statement: ['DROP'] }, action: 'deny' }] }, 'DropStmt'],
    [{ rules: [{ name: 'a', match: { category: ['writes'] }, action: 'deny' }] }, 'category'],
    [{ rules: [{ name: 'a', action: 'deny' }, { name: 'a', action: 'allow' }] }, 'duplicate rule name'],
    [{ rules: [{ name: 'm', match: { statement: ['SelectStmt'] }, mask: { columns: ['x'] } }] }, 'only match on identity'],
    [{ rules: [{ name: 'm', mask: {} }] }, 'columns or detectors'],
    [{ rules: [{ name: 'm', mask: { detectors: ['dna'] } }] }, 'detectors'],
    [{ defaultAction: 'review' }, 'defaultAction'],
  ])('rejects %j with a clear error', (input, fragment) => {
    const r = parseConnectionPolicy(input);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toContain(fragment);
  });

  it('accepts single strings for lists and aws_key for aws_access_key', () => {
    const p = connectionPolicySchema.parse({
      rules: [
        { name: 'a', match: { statement: 'DropStmt', identity: { groups: 'x' } }, action: 'deny' },
        { name: 'm', mask: { detectors: ['aws_key', 'email'] } },
      ],
    });
    expect(p.rules[0].match?.statement).toEqual(['DropStmt']);
    expect(p.rules[1].mask?.detectors).toEqual(['aws_access_key', 'email']);
  });
});

describe('mask plans', () => {
  const policy = connectionPolicySchema.parse({
    rules: [
      { name: 'pii', mask: { columns: ['email'], detectors: ['email'], strategy: 'hash' } },
      { name: 'contractors', match: { identity: { groups: ['contractors'] } }, mask: { columns: ['*.ssn'], detectors: ['us_ssn'], strategy: 'null' } },
      { name: 'no-drop', match: { statement: 'DropStmt' }, action: 'deny' },
    ],
  });

  it('applies rules without a match to everyone', () => {
    expect(maskPlanFor(policy, dba)).toEqual({ rules: ['pii'], columns: ['email'], detectors: ['email'], strategy: 'hash' });
  });

  it('merges the rules of an identity, with the strictest strategy', () => {
    const who: PolicyIdentity = { subject: 'c', kind: 'human', groups: ['contractors'] };
    expect(maskPlanFor(policy, who)).toEqual({
      rules: ['pii', 'contractors'],
      columns: ['email', '*.ssn'],
      detectors: ['email', 'us_ssn'],
      strategy: 'null',
    });
  });

  it('gives no plan when nothing applies', () => {
    expect(maskPlanFor(connectionPolicySchema.parse({}), dba)).toBeUndefined();
  });
});
