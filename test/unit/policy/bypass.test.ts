import { beforeAll, describe, expect, it } from 'vitest';
import {
  classifySql,
  connectionPolicySchema,
  evaluateStatements,
  initPolicyEngine,
  type PolicyIdentity,
  type StatementInfo,
} from '../../../src/policy/index.js';

const policy = connectionPolicySchema.parse({
  rules: [
    { name: 'no-drop', match: { statement: ['DropStmt', 'TruncateStmt'] }, action: 'deny' },
    {
      name: 'no-delete-without-where',
      match: { statement: ['DeleteStmt', 'UpdateStmt', 'MergeStmt'], where: 'absent' },
      action: 'deny',
    },
    { name: 'no-copy-program', match: { category: ['copy-program'] }, action: 'deny' },
    { name: 'no-set-role', match: { roleChange: true }, action: 'deny' },
    { name: 'no-dynamic-sql', match: { category: ['dynamic'] }, action: 'deny' },
  ],
});

const engineer: PolicyIdentity = { subject: 'alice', kind: 'human', groups: ['engineers'] };

/** The session's prepared statements, as the broker would keep them after PREPARE or a Parse message. */
function preparedSession(entries: Record<string, string>): (name: string) => StatementInfo | undefined {
  return (name) => {
    const sql = entries[name];
    if (sql === undefined) return undefined;
    const c = classifySql(sql);
    return c.ok ? c.statements[0] : undefined;
  };
}

const session = preparedSession({ p: 'DELETE FROM t', q: 'select 1', tr: 'TRUNCATE t' });

beforeAll(async () => {
  await initPolicyEngine();
});

// [attempt, rule that must deny it]
const attempts: Array<[string, string]> = [
  ['DROP TABLE t', 'no-drop'],
  ['drop table t', 'no-drop'],
  ['DrOp TaBlE t', 'no-drop'],
  ['DrOp/**/TABLE t', 'no-drop'],
  ['-- x\nDROP TABLE t', 'no-drop'],
  ['/* outer /* nested */ still comment */ DROP TABLE t', 'no-drop'],
  ['DROP\tTABLE\r\n\ft', 'no-drop'],
  ['DROP TABLE t -- trailing comment', 'no-drop'],
  ['DROP TABLE "T"', 'no-drop'],
  ['DROP TABLE "public"."users"', 'no-drop'],
  ['DROP TABLE U&"\\0074"', 'no-drop'],
  ['DROP TABLE IF EXISTS a, b CASCADE', 'no-drop'],
  ['DROP SCHEMA public CASCADE', 'no-drop'],
  ['select 1; drop table t', 'no-drop'],
  ['select 1;drop table t;', 'no-drop'],
  ['BEGIN; DROP TABLE t; COMMIT', 'no-drop'],
  ["select 'x;'; drop table t", 'no-drop'],
  ['select $$ ; $$; drop table t', 'no-drop'],
  ['TRUNCATE t', 'no-drop'],
  ['truncate table only t cascade', 'no-drop'],
  ['DELETE FROM t', 'no-delete-without-where'],
  ['/* x */ DELETE /* y */ FROM t -- z', 'no-delete-without-where'],
  ['delete from t where true', 'no-delete-without-where'],
  ['delete from t where 1 = 1', 'no-delete-without-where'],
  ["delete from t where exists (select 1 from u)", 'no-delete-without-where'],
  ['update t set x = 1', 'no-delete-without-where'],
  ['MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE', 'no-delete-without-where'],
  ['WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d', 'no-delete-without-where'],
  ['with x as (select 1), d as (delete from t returning 1) select * from x', 'no-delete-without-where'],
  ['select * from (select 1) s where exists (select 1); with d as (update t set a = 1 returning 1) select 1', 'no-delete-without-where'],
  ['COPY (DELETE FROM t RETURNING *) TO STDOUT', 'no-delete-without-where'],
  ['EXPLAIN ANALYZE DELETE FROM t', 'no-delete-without-where'],
  ['explain (analyze on, format json) delete from t', 'no-delete-without-where'],
  ['explain (analyse true) update t set a = 1', 'no-delete-without-where'],
  ['PREPARE p AS DELETE FROM t', 'no-delete-without-where'],
  ['EXECUTE p', 'no-delete-without-where'],
  ['execute p(1)', 'no-delete-without-where'],
  ['EXPLAIN ANALYZE EXECUTE p', 'no-delete-without-where'],
  ['EXECUTE tr', 'no-drop'],
  ['EXECUTE never_prepared', 'unknown-prepared-statement'],
  ['DO $$ BEGIN DROP TABLE t; END $$', 'no-drop'],
  ['DO $x$ BEGIN IF true THEN TRUNCATE t; END IF; END $x$', 'no-drop'],
  ['DO $body$ BEGIN PERFORM 1; DELETE FROM t; END $body$', 'no-delete-without-where'],
  ["DO LANGUAGE plpgsql 'BEGIN DROP TABLE t; END'", 'no-drop'],
  ["DO $$ BEGIN EXECUTE 'drop table t'; END $$", 'no-dynamic-sql'],
  ["DO $$ BEGIN EXECUTE format('%s table t', 'drop'); END $$", 'no-dynamic-sql'],
  ["DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'select 1' LOOP END LOOP; END $$", 'no-dynamic-sql'],
  ["DO LANGUAGE plpython3u $$ plpy.execute('drop table t') $$", 'no-dynamic-sql'],
  ["select 1; DO $$ BEGIN EXECUTE 'x'; END $$", 'no-dynamic-sql'],
  ["COPY t TO PROGRAM 'rm -rf /'", 'no-copy-program'],
  ["copy (select 1) to program 'x'", 'no-copy-program'],
  ["COPY t FROM PROGRAM 'curl http://x'", 'no-copy-program'],
  ['SET ROLE postgres', 'no-set-role'],
  ['set local role postgres', 'no-set-role'],
  ['SET "role" TO postgres', 'no-set-role'],
  ['SET SESSION AUTHORIZATION postgres', 'no-set-role'],
  ['RESET ROLE', 'no-set-role'],
  ['RESET SESSION AUTHORIZATION', 'no-set-role'],
  ['RESET ALL', 'no-set-role'],
  ['DISCARD ALL', 'no-set-role'],
  ["select set_config('role', 'postgres', false)", 'no-set-role'],
  ["SELECT pg_catalog.set_config('ROLE', 'postgres', false)", 'no-set-role'],
  ["select set_config(setting_name => 'session_authorization', new_value => 'x', is_local => false)", 'no-set-role'],
  ["select set_config(lower('ROLE'), 'postgres', false)", 'no-set-role'],
  ["update pg_settings set setting = 'postgres' where name = 'role'", 'no-set-role'],
  ["DO $$ BEGIN PERFORM set_config('role', 'postgres', false); END $$", 'no-set-role'],
  ['CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM u', 'no-delete-without-where'],
  ['CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ drop table t $$', 'no-drop'],
  ['CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DROP TABLE t; END $$', 'no-drop'],
  ["CREATE FUNCTION f() RETURNS void AS 'BEGIN TRUNCATE t; END' LANGUAGE plpgsql", 'no-drop'],
  ['create function f() returns int language sql begin atomic delete from t; select 1; end', 'no-delete-without-where'],
  ["CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'drop table t'; END $$", 'no-dynamic-sql'],
  ["create function f() returns void language plperlu as $$ system('x') $$", 'no-dynamic-sql'],
  ["select dblink_exec('dbname=x', 'drop table t')", 'no-dynamic-sql'],
  ["select * from public.dblink('dbname=x', 'drop table t') as r(x int)", 'no-dynamic-sql'],
  ["select * from query_to_xml('delete from t returning 1', true, false, '')", 'no-dynamic-sql'],
  ['DROP TABLE', 'unparseable'],
  ['dorp table t', 'unparseable'],
  ['', 'unparseable'],
  [';', 'unparseable'],
  ['  ;  ; ', 'unparseable'],
  ['select 1\u0000; drop table t', 'unparseable'],
  ['select 1 /* unterminated', 'unparseable'],
  ["select 'unterminated", 'unparseable'],
  ['DROP\u00a0TABLE t', 'unparseable'],
  ['select 1; drop table', 'unparseable'],
];

describe('a deny rule cannot be walked around', () => {
  it('has at least 40 attempts', () => {
    expect(attempts.length).toBeGreaterThanOrEqual(40);
  });

  it.each(attempts)('%j is denied by %s', (sql, rule) => {
    const verdict = evaluateStatements(policy, engineer, classifySql(sql), session);
    expect(verdict.action).toBe('deny');
    expect(verdict.rule).toBe(rule);
  });
});

const allowed: string[] = [
  'select 1',
  'SELECT * FROM t WHERE id = 1',
  'select u.id, count(*) from users u join orders o on o.uid = u.id group by u.id',
  'BEGIN; SELECT 1; COMMIT',
  'begin isolation level serializable; select 1; rollback',
  'SAVEPOINT a; RELEASE SAVEPOINT a',
  'delete from t where id = 1',
  'update t set a = 1 where id = $1',
  'insert into t (a) values (1) returning id',
  "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a",
  'with d as (delete from t where id = 1 returning *) select * from d',
  'select 1 as "drop table t"',
  "select 'drop table t'",
  'select $$drop table t$$',
  'select $x$ DROP TABLE t; $x$',
  '-- drop table t\nselect 1',
  'explain delete from t',
  'COPY t TO STDOUT',
  "set search_path = app, public",
  'SHOW search_path',
  'prepare q as select 1',
  'execute q',
  'DO $$ BEGIN PERFORM 1; END $$',
  'declare c cursor for select 1; fetch 10 from c; close c',
  "select set_config('application_name', 'x', false)",
];

describe('allowed work stays allowed', () => {
  it.each(allowed)('%j is allowed', (sql) => {
    const verdict = evaluateStatements(policy, engineer, classifySql(sql), session);
    expect(verdict).toMatchObject({ action: 'allow' });
  });
});
