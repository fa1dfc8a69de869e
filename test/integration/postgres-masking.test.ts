import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPgCluster, type PgCluster } from '../../src/dev/pg-cluster.js';
import { initPolicyEngine } from '../../src/policy/index.js';
import { runPsql, startPolicyProxy, type PolicyProxy, expectNoRaw as expectRawAbsent } from '../support/pg-proxy-harness.js';

const EMAILS = ['alice.liddell@example.com', 'bob.builder@corp.example.org'];
const CARDS = ['4111 1111 1111 1111', '5500-0000-0000-0004', '4012888888881881'];
const SSNS = ['536-22-4871', '412-68-3390'];
/** Every raw value, and the cards as bare digits too. */
const RAW = [...EMAILS, ...CARDS, ...CARDS.map((c) => c.replace(/\D/g, '')), ...SSNS];

const POLICY = {
  rules: [
    {
      name: 'pii',
      match: { identity: { groups: ['contractors'] } },
      mask: { columns: ['email', 'customers.ssn', 'card'], detectors: ['email', 'credit_card', 'us_ssn'] },
    },
    { name: 'pii-detect', match: { identity: { groups: ['ops'] } }, mask: { detectors: ['email', 'credit_card', 'us_ssn'], strategy: 'partial' } },
  ],
};

let cluster: PgCluster;
let contractors: PolicyProxy;
let ops: PolicyProxy;
/** Everything any client received in this file. */
let seen = '';

const expectNoRaw = (text: string, where: string) => expectRawAbsent(RAW, text, where);

beforeAll(async () => {
  await initPolicyEngine();
  cluster = await startPgCluster({ auth: 'scram-sha-256' });
  const admin = new pg.Client({ connectionString: cluster.url() });
  await admin.connect();
  await admin.query('create table customers (id int primary key, name text, email text, card text, ssn text, notes text, profile jsonb)');
  await admin.query('insert into customers values ($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14)', [
    1, 'Alice', EMAILS[0], CARDS[0], SSNS[0], `prefers ${EMAILS[1]} for billing`, JSON.stringify({ contact: EMAILS[0], card: CARDS[2], tier: 'gold' }),
    2, 'Bob', EMAILS[1], CARDS[1], SSNS[1], `card on file ${CARDS[2]}`, JSON.stringify({ tier: 'silver' }),
  ]);
  await admin.query('create table orders (id int, customer_id int, total int)');
  await admin.query('insert into orders values (10, 1, 99), (11, 2, 42)');
  await admin.query('create view cust_contacts as select id, email as contact, ssn from customers');
  await admin.end();
  contractors = await startPolicyProxy({ cluster, policy: POLICY, identity: { subject: 'c@example.com', kind: 'human', groups: ['contractors'] } });
  ops = await startPolicyProxy({ cluster, policy: POLICY, identity: { subject: 'o@example.com', kind: 'human', groups: ['ops'] }, maskKey: 'test-key' });
});

afterAll(async () => {
  await contractors?.close();
  await ops?.close();
  // Nothing raw was recorded or logged, by either session, whatever the statement.
  for (const proxy of [contractors, ops]) {
    if (!proxy) continue;
    expect(proxy.events.length).toBeGreaterThan(10);
    expectNoRaw(JSON.stringify(proxy.events), 'the recording');
    expect(proxy.log().length).toBeGreaterThan(0);
    expectNoRaw(proxy.log(), 'the log');
  }
  expectNoRaw(seen, 'the client output');
  await cluster?.stop();
});

async function psql(proxy: PolicyProxy, sql: string): Promise<string> {
  const r = await runPsql(proxy.port, ['-c', sql]);
  const out = r.stdout + r.stderr;
  seen += out;
  return out;
}

function client(proxy: PolicyProxy): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'laptop-user', database: 'postgres' });
  return c.connect().then(() => c);
}

describe('masking by column rules and detectors (contractors: redact)', () => {
  it.each([
    'select * from customers order by id',
    'select email as e, name from customers order by id',
    'select lower(email), upper(card) from customers order by id',
    "select email || '' as x, ssn || '' from customers order by id",
    'select c.email, o.total from customers c join orders o on o.customer_id = c.id order by o.id',
    'select * from cust_contacts order by id',
    'select json_agg(c) from customers c',
    'select row_to_json(c)::text from customers c',
    'select profile from customers order by id',
    'select notes from customers order by id',
    'begin; declare cur cursor for select email, notes from customers order by id; fetch all from cur; commit',
  ])('psql: %s', async (sql) => {
    const out = await psql(contractors, sql);
    expectNoRaw(out, sql);
    expect(out).toContain('REDACTED');
    expect(out).not.toContain('ERROR');
  });

  it('leaves what no rule names alone', async () => {
    const out = await psql(contractors, 'select c.id, name, profile->>\'tier\' as tier, o.total from customers c join orders o on o.customer_id = c.id order by c.id');
    expect(out).toBe('1|Alice|gold|99\n2|Bob|silver|42\n');
  });

  it('keeps JSON valid while masking it', async () => {
    const c = await client(contractors);
    const { rows } = await c.query('select json_agg(c) as all from customers c');
    await c.end();
    seen += JSON.stringify(rows);
    const all = rows[0].all as Array<Record<string, unknown>>;
    expect(all.map((r) => r.name)).toEqual(['Alice', 'Bob']);
    expect(all[0].email).toBe('[REDACTED]');
    expect((all[0].profile as Record<string, string>).contact).toBe('[REDACTED:email]');
  });

  it('masks the extended protocol, named prepared statements and cursors through node-postgres', async () => {
    const c = await client(contractors);
    const outputs: unknown[] = [];
    outputs.push((await c.query('select email, card, ssn, notes from customers where id = $1', [1])).rows);
    for (const id of [1, 2]) outputs.push((await c.query({ name: 'one', text: 'select lower(email) as who, notes from customers where id = $1', values: [id] })).rows);
    outputs.push((await c.query('select id from customers where email = $1', [EMAILS[1]])).rows);
    await c.end();
    const text = JSON.stringify(outputs);
    seen += text;
    expectNoRaw(text, 'node-postgres results');
    expect(outputs[0]).toEqual([{ email: '[REDACTED]', card: '[REDACTED]', ssn: '[REDACTED]', notes: 'prefers [REDACTED:email] for billing' }]);
    expect(outputs[3]).toEqual([{ id: 2 }]);
  });

  it('masks binary results in their binary form (node-postgres binary: true), and the session goes on', async () => {
    const c = await client(contractors);
    const { rows } = await c.query({ text: 'select id, email, notes from customers where id > $1 order by id', values: [0], binary: true });
    seen += JSON.stringify(rows);
    expect(rows).toEqual([
      { id: 1, email: '[REDACTED]', notes: 'prefers [REDACTED:email] for billing' },
      { id: 2, email: '[REDACTED]', notes: 'card on file [REDACTED:credit_card]' },
    ]);
    const { rows: counted } = await c.query('select count(*)::int as n from customers');
    expect(counted[0].n).toBe(2);
    await c.end();
  });

  it('refuses COPY of a whole table under column rules (its rows carry no column names), naming the way that works', async () => {
    const out = await psql(contractors, 'copy customers to stdout');
    expect(out).toContain('42501: hoopctl: statement denied by rule "pii"');
    expect(out).toContain('copy a query (COPY (SELECT …) TO STDOUT) or name the columns');
    const star = await psql(contractors, 'copy (select * from customers) to stdout with (format csv)');
    expect(star).toContain('42501');
  });

  it('says that `*` is the problem when COPY copies a query with *, and how to write it', async () => {
    for (const sql of ['copy (select * from customers) to stdout with (format csv)', 'copy (select c.* from customers c) to stdout']) {
      const out = await psql(contractors, sql);
      expect(out).toContain('hoopctl: statement denied by rule "pii": `*` in a COPY query cannot be masked by column');
      expect(out).toContain('list the columns (COPY (SELECT id, email FROM t) TO STDOUT)');
      expect(out).not.toContain('of a whole table');
    }
  });

  it.each([
    ['a query, text format', "copy (select id, name, email, card from customers order by id) to stdout"],
    ['a query, CSV with a header', 'copy (select id, name, lower(email) as mail, card from customers order by id) to stdout with (format csv, header)'],
    ['a column list, CSV with another delimiter and NULL', "copy customers (id, name, email, card) to stdout with (format csv, delimiter ';', null 'NULL')"],
  ])('masks COPY TO STDOUT by column when its columns are known: %s', async (_what, sql) => {
    const out = await psql(contractors, sql);
    expectNoRaw(out, sql);
    const lines = out.trim().split('\n');
    const data = lines.filter((l) => /^[12]/.test(l));
    expect(data).toHaveLength(2);
    // Unmasked columns come through as they are; masked ones are replaced whole, field count intact.
    expect(data[0]).toMatch(/^1[\t,;]Alice[\t,;]/);
    expect(data[1]).toMatch(/^2[\t,;]Bob[\t,;]/);
    for (const line of data) expect(line).toMatch(/\[REDACTED\][\t,;]\[REDACTED\]$/);
    if (sql.includes('header')) expect(lines[0]).toBe('id,name,mail,card');
  });

  it('masks COPY by column under \\copy too (psql writes the rows to a file on the client)', async () => {
    const { mkdtempSync, readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const file = join(mkdtempSync(join(tmpdir(), 'hoop-copy-')), 'export.csv');
    const out = await psql(contractors, `\\copy (select name, email from customers order by id) to '${file}' with (format csv)`);
    expect(out).toBe('COPY 2\n');
    expect(readFileSync(file, 'utf8')).toBe('Alice,[REDACTED]\nBob,[REDACTED]\n');
  });

  it('masks values in error messages and in what is recorded of the statement', async () => {
    const err = await psql(contractors, 'select email::int from customers');
    expect(err).toContain('invalid input syntax for type integer');
    expect(err).toContain('[REDACTED:email]');
    const out = await psql(contractors, `select id from customers where email = '${EMAILS[0]}' or card = '${CARDS[1]}' order by id`);
    expect(out).toBe('1\n2\n');
    const recorded = contractors.events.filter((e) => e.type === 'statement').map((e) => String(e.data.sql));
    expect(recorded.some((s) => s.includes("where email = '[REDACTED:email]' or card = '[REDACTED:credit_card]'"))).toBe(true);
  });
});

describe('masking by detectors alone (ops: partial)', () => {
  it('masks select * partially, keeping the last four', async () => {
    const out = await psql(ops, 'select email, card, ssn from customers order by id');
    expectNoRaw(out, 'select');
    expect(out).toContain('**** **** **** 1111');
  });

  it.each(['copy customers to stdout', 'copy customers to stdout with (format csv, header)', "copy (select name, notes, email from customers) to stdout with (delimiter '|')"])(
    'masks COPY rows: %s',
    async (sql) => {
      const out = await psql(ops, sql);
      expectNoRaw(out, sql);
      expect(out).toContain('Alice');
      expect(out.trim().split('\n').length).toBeGreaterThanOrEqual(2);
    },
  );

  it('ends the session rather than send binary COPY it cannot mask', async () => {
    const out = await psql(ops, 'copy customers to stdout with (format binary)');
    expectNoRaw(out, 'binary copy');
    expect(out).toContain('binary COPY output cannot be masked');
  });
});
