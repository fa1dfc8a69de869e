import { beforeAll, describe, expect, it } from 'vitest';
import { classifySql, initPolicyEngine, type StatementInfo } from '../../../src/policy/index.js';

beforeAll(async () => {
  await initPolicyEngine();
});

function one(sql: string): StatementInfo {
  const c = classifySql(sql);
  if (!c.ok) throw new Error(c.error);
  expect(c.statements).toHaveLength(1);
  return c.statements[0];
}

describe('classifySql', () => {
  it('splits a multi-statement text and keeps each statement text', () => {
    const c = classifySql("select 'é'; drop table t");
    expect(c.ok && c.statements.map((s) => [s.kind, s.text.trim()])).toEqual([
      ['SelectStmt', "select 'é'"],
      ['DropStmt', 'drop table t'],
    ]);
  });

  it('names tables read and written, de-duplicated', () => {
    const s = one('insert into app.audit select * from t join app.u on true where t.id in (select id from t)');
    expect(s.tablesWritten).toEqual([{ schema: 'app', name: 'audit' }]);
    expect(s.tablesRead).toEqual([{ name: 't' }, { schema: 'app', name: 'u' }]);
    expect(s.categories).toEqual(['read', 'write']);
  });

  it('does not take CTE names for tables', () => {
    expect(one('with x as (select * from real_t) select * from x').tablesRead).toEqual([{ name: 'real_t' }]);
  });

  it.each<[string, Partial<StatementInfo>]>([
    ['update t set a = 1 where id = 2', { whereAbsent: false, tablesWritten: [{ name: 't' }] }],
    ['delete from t where current of c', { whereAbsent: false }],
    ['truncate a, b.c', { whereAbsent: true, tablesWritten: [{ name: 'a' }, { schema: 'b', name: 'c' }] }],
    ['drop table a.b, c', { tablesWritten: [{ schema: 'a', name: 'b' }, { name: 'c' }], categories: ['ddl'] }],
    ['alter table s.t add column c int', { tablesWritten: [{ schema: 's', name: 't' }], categories: ['ddl'] }],
    ['create table x as select * from y', { tablesWritten: [{ name: 'x' }], tablesRead: [{ name: 'y' }] }],
    ['select * into x from y', { tablesWritten: [{ name: 'x' }], categories: ['read', 'write', 'ddl'] }],
    ['copy t from stdin', { categories: ['write', 'copy'], tablesWritten: [{ name: 't' }] }],
    ['copy t to stdout', { categories: ['read', 'copy'], tablesRead: [{ name: 't' }] }],
    ["copy t to '/tmp/x'", { categories: ['read', 'admin', 'copy'] }],
    ['select * from t for update', { categories: ['read', 'lock'] }],
    ['lock table t in access exclusive mode', { categories: ['lock'] }],
    ['call p(1)', { categories: ['call'], functions: ['p'] }],
    ['vacuum analyze t', { categories: ['admin'] }],
    ['checkpoint', { categories: ['admin'] }],
    ['alter system set work_mem = 1', { categories: ['ddl', 'admin'] }],
    ['grant select on t to bob', { categories: ['admin'] }],
    ['create role x', { categories: ['ddl', 'admin'] }],
    ['begin', { categories: ['transaction'] }],
    ['set transaction read only', { categories: ['transaction'] }],
    ['set search_path = x', { categories: ['session'] }],
    ['explain select * from t', { categories: ['read'], explainAnalyze: false, kinds: ['ExplainStmt'] }],
    ['explain (analyze false) delete from t', { categories: ['read'], explainAnalyze: false, whereAbsent: false }],
    ['explain analyze delete from t', { explainAnalyze: true, whereAbsent: true, kinds: ['ExplainStmt', 'DeleteStmt'] }],
    ['with d as (delete from t returning 1) select 1', { dataModifyingCte: true }],
    ['execute p(1)', { executesPrepared: 'p' }],
    ['set role x', { setRole: true, setSessionAuthorization: false }],
    ['set session authorization x', { setRole: false, setSessionAuthorization: true }],
    ["select set_config('role', 'x', false)", { setRole: true, functions: ['set_config'] }],
    ["select set_config('work_mem', '1MB', false)", { setRole: false, categories: ['read', 'session'] }],
    ['select Lower(x), pg_catalog.UPPER(y) from t', { functions: ['lower', 'pg_catalog.upper'] }],
    ['select "DrOp"()', { functions: ['drop'] }],
    ["select dblink('x', 'y')", { categories: ['read', 'dynamic'] }],
    ["DO $$ BEGIN EXECUTE 'x'; END $$", { categories: ['read', 'dynamic', 'utility'] }],
    ["DO $$ BEGIN INSERT INTO log VALUES (1); END $$", { tablesWritten: [{ name: 'log' }] }],
    ['create function f() returns trigger language plpgsql as $$ begin delete from t where id = new.id; return new; end $$', {
      kinds: ['CreateFunctionStmt', 'DeleteStmt'],
      whereAbsent: false,
    }],
  ])('%j', (sql, expected) => {
    expect(one(sql)).toMatchObject(expected);
  });

  it('classifies the statement of a PREPARE', () => {
    const s = one('prepare p (int) as delete from t where id = $1');
    expect(s.prepared?.name).toBe('p');
    expect(s.prepared?.inner).toMatchObject({ kind: 'DeleteStmt', whereAbsent: false });
    expect(s.categories).toEqual(['write']);
  });

  it('gives the same answer whatever the case, comments and quoting', () => {
    const strip = (sql: string) => {
      const { text: _text, ...rest } = one(sql);
      return rest;
    };
    expect(strip('DrOp/**/TaBlE "t"')).toEqual(strip('drop table t'));
    expect(strip('-- c\nDELETE /* x */ FROM t')).toEqual(strip('delete from t'));
  });

  it.each([
    ['empty text', ''],
    ['only semicolons', ' ; '],
    ['a NUL byte', 'select 1\u0000'],
    ['a syntax error', 'selec 1'],
    ['nesting too deep to walk', 'select ' + 'not '.repeat(5000) + 'true'],
  ])('fails closed on %s', (_name, sql) => {
    expect(classifySql(sql).ok).toBe(false);
  });
});
