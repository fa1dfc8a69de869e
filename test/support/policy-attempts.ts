/**
 * The table of attempts to get a forbidden statement past deny rules, shared by the live proxy suite
 * (test/integration/postgres-policy.test.ts) and the `hoopctl policy check` parity suite.
 */
/** Deny rules on the statements that would harm `guarded`, plus one review rule (which must fail closed). */
export const DENY_POLICY = {
  defaultAction: 'allow',
  rules: [
    { name: 'no-ddl', match: { statement: ['DropStmt', 'TruncateStmt', 'AlterTableStmt', 'RenameStmt'] }, action: 'deny' },
    { name: 'no-unbounded-write', match: { statement: ['DeleteStmt', 'UpdateStmt', 'MergeStmt'], where: 'absent' }, action: 'deny' },
    { name: 'no-role-change', match: { roleChange: true }, action: 'deny' },
    { name: 'no-server-programs', match: { category: ['copy-program'] }, action: 'deny' },
    { name: 'no-dynamic-sql', match: { category: ['dynamic'] }, action: 'deny' },
    { name: 'grants-need-review', match: { statement: ['GrantStmt'] }, action: 'review' },
  ],
};

export interface Attempt {
  via: 'psql -c' | 'psql -f' | 'pg simple' | 'pg extended' | 'pg named';
  sql: string;
  rule: string;
}

export const attempts: Attempt[] = [
  // psql -c: every form of the parser's reach
  { via: 'psql -c', sql: 'drop table guarded', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'DROP TABLE public.guarded', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'dRoP tAbLe "guarded"', rule: 'no-ddl' },
  { via: 'psql -c', sql: '/* harmless */ drop /* really */ table guarded -- comment', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'DROP\tTABLE\n\n  guarded', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'drop table U&"gu\\0061rded"', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'drop table if exists other, guarded cascade', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'select 1; drop table guarded', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'begin; drop table guarded; commit', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'truncate guarded', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'truncate table only guarded restart identity cascade', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'alter table guarded drop column v', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'alter table guarded rename to renamed', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'drop schema public cascade', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'delete from guarded', rule: 'no-unbounded-write' },
  { via: 'psql -c', sql: 'update guarded set v = 0', rule: 'no-unbounded-write' },
  { via: 'psql -c', sql: 'with gone as (delete from guarded returning *) select count(*) from gone', rule: 'no-unbounded-write' },
  { via: 'psql -c', sql: 'with x as (select 1) delete from guarded', rule: 'no-unbounded-write' },
  { via: 'psql -c', sql: 'explain analyze delete from guarded', rule: 'no-unbounded-write' },
  { via: 'psql -c', sql: 'merge into guarded g using (select 1 as a) s on true when matched then delete', rule: 'no-unbounded-write' },
  { via: 'psql -c', sql: 'prepare wipe as delete from guarded', rule: 'no-unbounded-write' },
  { via: 'psql -c', sql: 'prepare wipe2 as delete from guarded; execute wipe2', rule: 'no-unbounded-write' },
  { via: 'psql -c', sql: 'do $$ begin drop table guarded; end $$', rule: 'no-ddl' },
  { via: 'psql -c', sql: 'DO LANGUAGE plpgsql $x$ BEGIN TRUNCATE guarded; END $x$', rule: 'no-ddl' },
  { via: 'psql -c', sql: "do $$ begin execute 'drop table ' || 'guarded'; end $$", rule: 'no-dynamic-sql' },
  { via: 'psql -c', sql: "create function wipe() returns void language sql as 'delete from guarded'", rule: 'no-unbounded-write' },
  { via: 'psql -c', sql: "select query_to_xml('delete from guarded', true, true, '')", rule: 'no-dynamic-sql' },
  { via: 'psql -c', sql: 'set role victim_role', rule: 'no-role-change' },
  { via: 'psql -c', sql: 'set session authorization victim_role', rule: 'no-role-change' },
  { via: 'psql -c', sql: "select set_config('role', 'victim_role', false)", rule: 'no-role-change' },
  { via: 'psql -c', sql: "copy guarded to program 'cat > /dev/null'", rule: 'no-server-programs' },
  { via: 'psql -c', sql: "copy (select 1) to program 'true'", rule: 'no-server-programs' },
  { via: 'psql -c', sql: 'grant all on guarded to victim_role', rule: 'grants-need-review' },
  { via: 'psql -c', sql: 'drop tabel guarded', rule: 'unparseable' },
  { via: 'psql -c', sql: 'execute never_prepared', rule: 'unknown-prepared-statement' },
  // psql -f: files of several statements, each sent as its own Query
  { via: 'psql -f', sql: 'select 1;\ndrop table guarded;\nselect 2;\n', rule: 'no-ddl' },
  { via: 'psql -f', sql: 'begin;\ndelete from guarded;\ncommit;\n', rule: 'no-unbounded-write' },
  { via: 'psql -f', sql: '-- cleanup\nselect 1 as ok;\ntruncate guarded;\n', rule: 'no-ddl' },
  { via: 'psql -f', sql: 'set search_path = public;\nreset role;\ndrop table guarded;\n', rule: 'no-role-change' },
  // node-postgres: simple and extended protocol, named prepared statements
  { via: 'pg simple', sql: 'DROP TABLE guarded', rule: 'no-ddl' },
  { via: 'pg simple', sql: 'select 1; truncate guarded; select 2', rule: 'no-ddl' },
  { via: 'pg extended', sql: 'delete from guarded', rule: 'no-unbounded-write' },
  { via: 'pg extended', sql: 'update guarded set v = 0', rule: 'no-unbounded-write' },
  { via: 'pg extended', sql: 'drop table guarded', rule: 'no-ddl' },
  { via: 'pg extended', sql: "select set_config('role', 'victim_role', false)", rule: 'no-role-change' },
  { via: 'pg extended', sql: 'execute never_prepared', rule: 'unknown-prepared-statement' },
  { via: 'pg named', sql: 'truncate guarded', rule: 'no-ddl' },
  { via: 'pg named', sql: 'with d as (delete from guarded returning 1) select count(*) from d', rule: 'no-unbounded-write' },
  { via: 'pg named', sql: 'alter table guarded add column extra int', rule: 'no-ddl' },
];

