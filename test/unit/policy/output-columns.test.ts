import { beforeAll, describe, expect, it } from 'vitest';
import { initPolicyEngine, maskedOutputColumns } from '../../../src/policy/index.js';

beforeAll(async () => {
  await initPolicyEngine();
});

const plan = { columns: ['email', 'customers.ssn'] };

describe('masked output columns', () => {
  it.each<[string, boolean[] | 'unknown']>([
    ['select email, id from users', [true, false]],
    ['select email as e from users', [true]],
    ['select lower(email) as e, id from users', [true, false]],
    ["select email || '' from users", [true]],
    ['select email::text, upper(trim(email)) from users', [true, true]],
    ["select coalesce(email, 'none'), case when id > 1 then email else 'x' end from users", [true, true]],
    ['select u.email, o.total from public.users u join orders o on o.uid = u.id', [true, false]],
    ['select c.ssn, e.ssn from customers c join employees e on e.id = c.id', [true, false]],
    ['select ssn from customers', [true]],
    ['select (select email from users limit 1) as x, 1', [true, false]],
    ['select x.e, x.id from (select email as e, id from users) x', [true, false]],
    ['with c as (select email as m, id from users) select m, id from c', [true, false]],
    ['with c(m, n) as (select email, id from users) select n, m from c', [false, true]],
    ['select id from t union all select email from u', [true]],
    ['select row_to_json(u) from users u', [true]],
    ['select json_agg(u.*) from users u', [true]],
    ['select count(*), max(id) from users', [false, false]],
    ['select * from users', 'unknown'],
    ['select u.* from users u', 'unknown'],
    ['delete from users where id = 1 returning email, id', [true, false]],
    ['update users set name = $1 where id = 1 returning lower(email)', [true]],
    ['insert into users (email) values ($1) returning id', [false]],
    ['values (1, 2)', [false, false]],
    ['drop table t', 'unknown'],
    ['selec 1', 'unknown'],
  ])('%j → %j', (sql, expected) => {
    expect(maskedOutputColumns(sql, plan)).toEqual(expected);
  });

  it('reads the statement at the given index', () => {
    expect(maskedOutputColumns('select 1; select email from users', plan, 1)).toEqual([true]);
  });
});
