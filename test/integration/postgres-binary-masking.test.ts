/**
 * Binary results through the masking proxy, driven by the real drivers that ask for them: pgjdbc (binary after
 * its prepareThreshold), psycopg 3 with `binary=True`, node-postgres with `binary: true`. And JSON built from a
 * masked column, which must stay JSON of the same shape.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPgCluster, type PgCluster } from '../../src/dev/pg-cluster.js';
import { initPolicyEngine } from '../../src/policy/index.js';
import { runPsql, startPolicyProxy, type PolicyProxy, expectNoRaw as expectRawAbsent } from '../support/pg-proxy-harness.js';
import { runJdbcTenTimes, runPsycopgTenTimes } from '../support/pg-drivers.js';

const EMAILS = ['alice.liddell@example.com', 'bob.builder@corp.example.org'];
const CARDS = ['4111 1111 1111 1111', '5500-0000-0000-0004'];
const SSNS = ['536-22-4871', '412-68-3390'];
const RAW = [...EMAILS, ...CARDS, ...CARDS.map((c) => c.replace(/\D/g, '')), ...SSNS];
const REF = '6f1c2a4e-9b3d-4c1a-8e2f-0a1b2c3d4e5f';

const POLICY = {
  rules: [
    {
      name: 'pii',
      match: { identity: { groups: ['contractors'] } },
      mask: { columns: ['email', 'customers.ssn', 'card'], detectors: ['email', 'credit_card', 'us_ssn'] },
    },
    { name: 'pii-null', match: { identity: { groups: ['auditors'] } }, mask: { columns: ['email', 'ssn'], detectors: ['email'], strategy: 'null' } },
  ],
};

let cluster: PgCluster;
let contractors: PolicyProxy;
let auditors: PolicyProxy;
/** Everything any client received in this file. */
let seen = '';

const expectNoRaw = (text: string, where: string) => expectRawAbsent(RAW, text, where);

beforeAll(async () => {
  await initPolicyEngine();
  cluster = await startPgCluster({ auth: 'scram-sha-256' });
  const admin = new pg.Client({ connectionString: cluster.url() });
  await admin.connect();
  await admin.query(
    'create table customers (id int primary key, email text, card varchar(40), ssn text, notes text, code char(6), profile jsonb, ref uuid, amount numeric(12,2), big bigint)',
  );
  await admin.query('insert into customers values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10), ($11, $12, $13, $14, $15, $16, $17, $18, $19, $20)', [
    1, EMAILS[0], CARDS[0], SSNS[0], `prefers ${EMAILS[1]} for billing`, 'ab12', JSON.stringify({ contact: EMAILS[0], tier: 'gold', n: 7 }), REF, '1234.50', '9007199254740993',
    2, EMAILS[1], CARDS[1], SSNS[1], 'no notes', 'cd34', JSON.stringify({ tier: 'silver' }), null, '-0.07', '-42',
  ]);
  await admin.end();
  contractors = await startPolicyProxy({ cluster, policy: POLICY, identity: { subject: 'c@example.com', kind: 'human', groups: ['contractors'] } });
  auditors = await startPolicyProxy({ cluster, policy: POLICY, identity: { subject: 'a@example.com', kind: 'human', groups: ['auditors'] } });
});

afterAll(async () => {
  await contractors?.close();
  await auditors?.close();
  for (const proxy of [contractors, auditors]) {
    if (!proxy) continue;
    expectNoRaw(JSON.stringify(proxy.events), 'the recording');
    expectNoRaw(proxy.log(), 'the log');
  }
  expectNoRaw(seen, 'the client output');
  await cluster?.stop();
});

/** Runs a JDBC PreparedStatement (parameter 1 bound to 1) ten times with the driver's default settings. */
async function jdbcTenTimes(proxy: PolicyProxy, sql: string): Promise<string[]> {
  const r = await runJdbcTenTimes(proxy.port, 'postgres', sql);
  seen += r.output;
  return r.lines;
}

/** Runs a query (parameter 1 bound to 1) ten times through psycopg 3 with binary results; it prepares after 5. */
async function psycopgTenTimes(proxy: PolicyProxy, sql: string): Promise<string[]> {
  const r = await runPsycopgTenTimes(proxy.port, 'postgres', sql);
  seen += r.output;
  return r.lines;
}

describe('binary results (contractors: redact)', () => {
  it('pgjdbc: a prepared statement run ten times (binary from the fifth) gets correct numbers and masked text', async () => {
    const lines = await jdbcTenTimes(contractors, 'select id, email, notes, card, ref, amount, big, code from customers where id = ?');
    expectNoRaw(lines.join('\n'), 'pgjdbc');
    const expected = `1|[REDACTED]|prefers [REDACTED:email] for billing|[REDACTED]|${REF}|1234.50|9007199254740993|ab12  `;
    expect(lines).toEqual([...Array<string>(10).fill(expected), 'still open 2']);
  });

  it('pgjdbc: a column rule on a number is refused once it goes binary, naming the column and the setting; the session goes on', async () => {
    const lines = await jdbcTenTimes(contractors, 'select id, 123456789 as ssn from customers where id = ?');
    expect(lines.slice(0, 5)).toEqual(Array<string>(5).fill('1|[REDACTED]'));
    for (const line of lines.slice(5, 10)) {
      expect(line).toMatch(/^ERROR 42501 .*binary-result-masked.*column "ssn" \(int4\).*prepareThreshold=0/);
    }
    expect(lines[10]).toBe('still open 2');
    expect(lines.join('\n')).not.toContain('123456789');
  });

  it('psycopg binary=True: text, varchar, bpchar, jsonb, uuid and numbers, ten times (prepared from the fifth)', async () => {
    const lines = await psycopgTenTimes(contractors, 'select id, email, notes, card, code, profile, ref, amount, big, ssn from customers where id = %s');
    expectNoRaw(lines.join('\n'), 'psycopg');
    const row = ['1', '[REDACTED]', 'prefers [REDACTED:email] for billing', '[REDACTED]', 'ab12  ', { contact: '[REDACTED:email]', n: 7, tier: 'gold' }, REF, '1234.50', '9007199254740993', '[REDACTED]'];
    expect(lines.map((l) => (l.startsWith('[') ? JSON.parse(l) : l))).toEqual([...Array<unknown>(10).fill(row), 'still open 2']);
  });

  it('node-postgres binary: true: a named prepared statement ten times', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: contractors.port, user: 'laptop-user', database: 'postgres' });
    await c.connect();
    const results: unknown[] = [];
    for (let run = 0; run < 10; run++) {
      const { rows } = await c.query({ name: 'by-id', text: 'select id, email, notes, card, big from customers where id = $1', values: [1], binary: true });
      results.push(rows[0]);
    }
    await c.end();
    seen += JSON.stringify(results);
    const row = { id: 1, email: '[REDACTED]', notes: 'prefers [REDACTED:email] for billing', card: '[REDACTED]', big: '9007199254740993' };
    expect(results).toEqual(Array<unknown>(10).fill(row));
  });

  it('node-postgres binary: true: a column rule on a number cannot be masked in binary, and the error says which column and what to set', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: contractors.port, user: 'laptop-user', database: 'postgres' });
    await c.connect();
    c.on('error', () => undefined);
    const failed = await c.query({ text: 'select id, 123456789 as ssn from customers where id = $1', values: [1], binary: true }).then(
      (r) => JSON.stringify(r.rows),
      (e: Error) => e.message,
    );
    await c.end().catch(() => undefined);
    seen += failed;
    expect(failed).toContain('"ssn"');
    expect(failed).toContain('binary: false');
    expect(failed).not.toContain('123456789');
  });
  it('a client that binds binary results with no Describe still gets them masked (the broker describes the portal itself)', async () => {
    // node-postgres' protocol connection, driven by hand: Parse, Bind (binary results), Execute, Sync — no Describe.
    const conn = new pg.Connection();
    const messages: Array<{ name: string; fields?: unknown[] }> = [];
    const done = new Promise<void>((resolve, reject) => {
      let ready = 0;
      conn.on('readyForQuery', () => {
        if (++ready === 1) {
          conn.parse({ text: 'select id, email, notes from customers where id = $1', types: [] });
          conn.bind({ values: ['1'], binary: true });
          conn.execute({});
          conn.sync();
        } else resolve();
      });
      conn.on('message', (m: { name: string; fields?: unknown[] }) => messages.push(m));
      conn.on('errorMessage', (e: Error) => reject(e));
    });
    conn.on('connect', () => conn.startup({ user: 'laptop-user', database: 'postgres' }));
    conn.connect(contractors.port, '127.0.0.1');
    await done;
    conn.end();
    const names = messages.map((m) => m.name);
    expect(names).toContain('dataRow');
    // The broker's own Describe is answered to it alone.
    expect(names).not.toContain('rowDescription');
    const row = messages.find((m) => m.name === 'dataRow')!.fields!.map((f) => (Buffer.isBuffer(f) ? f.toString('utf8') : f));
    seen += JSON.stringify(row);
    expect(row.slice(1)).toEqual(['[REDACTED]', 'prefers [REDACTED:email] for billing']);
  });
});

describe('binary results (auditors: null strategy)', () => {
  it('sends NULL for a number named by a column rule, and the rest as it is', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: auditors.port, user: 'laptop-user', database: 'postgres' });
    await c.connect();
    const { rows } = await c.query({ text: 'select id, 123456789 as ssn, email from customers where id = $1', values: [1], binary: true });
    await c.end();
    expect(rows).toEqual([{ id: 1, ssn: null, email: null }]);
  });
});

describe('JSON built from a masked column', () => {
  it('psql: jsonb_build_object keeps its keys and numbers, and masks the value that came from the masked column', async () => {
    const r = await runPsql(contractors.port, ['-c', "select jsonb_build_object('contact', email, 'n', id) from customers order by id"]);
    seen += r.stdout + r.stderr;
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown);
    expect(rows).toEqual([
      { contact: '[REDACTED]', n: 1 },
      { contact: '[REDACTED]', n: 2 },
    ]);
  });

  it('node-postgres: json_build_object with nested objects and arrays keeps its shape', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: contractors.port, user: 'laptop-user', database: 'postgres' });
    await c.connect();
    const { rows } = await c.query(
      "select json_build_object('who', json_build_object('mail', lower(email), 'id', id), 'tags', json_build_array('a', 1), 'ok', true) as doc from customers where id = 1",
    );
    await c.end();
    seen += JSON.stringify(rows);
    expect(rows[0].doc).toEqual({ who: { mail: '[REDACTED]', id: 1 }, tags: ['a', 1], ok: true });
  });
});
