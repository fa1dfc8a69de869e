/**
 * Spellings of one effect — rows of `guarded` deleted or overwritten — that a single effect rule must refuse on
 * every path: the policy unit suite, the live proxy (psql -c, psql -f, extended protocol), `hoopctl exec` and
 * `hoopctl policy check`. Each is refused by the rule `guarded-rows`; none may leave a trace in the table.
 */
export const EFFECT_RULE = 'guarded-rows';

export const EFFECT_POLICY = {
  defaultAction: 'allow',
  rules: [{ name: EFFECT_RULE, match: { effects: ['delete', 'update', 'truncate'], tables: ['guarded'] }, action: 'deny' }],
};

/** Set up by each live suite as the database owner: a function whose body the gate cannot see. */
export const HIDDEN_WIPE_FUNCTION =
  'create function public.tidy_up() returns int language sql as $$ delete from public.guarded returning 1 $$';

export const effectAttempts: string[] = [
  'delete from guarded',
  'DELETE FROM guarded WHERE id = id',
  'delete from guarded where id is not null',
  'update guarded set v = 0 where v = v',
  'merge into guarded g using (select 1 as id) s on g.id = s.id when matched then delete',
  'merge into guarded g using guarded s on g.id = s.id when matched then delete',
  'merge into guarded g using (select id from guarded) s on g.id = s.id when matched then update set v = 0',
  'with gone as (delete from guarded where id > 0 returning *) select count(*) from gone',
  'with x as (select 1) update guarded set v = 0 where id in (select id from guarded)',
  'insert into guarded values (1, 0) on conflict (id) do update set v = 0',
  'truncate guarded',
  'drop table guarded',
  'explain analyze delete from guarded where id > 0',
  'prepare wipe_all as delete from guarded where id > 0',
  'create rule wipe_on_insert as on insert to other do also delete from guarded',
  'create or replace rule wipe_on_insert as on insert to other do instead update guarded set v = 0',
  'create function wipe_trigger() returns trigger language plpgsql as $$ begin delete from guarded; return null; end $$',
  'create trigger wipe_after_insert after insert on other for each statement execute function tidy_up_trigger()',
  'do $$ begin delete from guarded where id > 0; end $$',
  "do $$ begin execute 'delete from ' || 'guarded'; end $$",
  'select tidy_up()',
  'select count(*) from public.tidy_up()',
  "copy (select 1) to program 'true'",
];

/** Work that touches `guarded` without deleting or overwriting it, or writes elsewhere: the rule lets it through. */
export const effectAllowed: string[] = [
  'select * from guarded where id = 1',
  'insert into other values (7)',
  'delete from other where id = 7',
  'select count(*), max(v), lower(\'X\') from guarded',
];
