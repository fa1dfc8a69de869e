import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as netConnect } from 'node:net';
import { once } from 'node:events';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FrameScanner, MAX_BACKEND_FRAME } from '../../src/broker/protocols/postgres/frame-scanner.js';
import { Writer } from '../../src/lib/pg-wire/buffer-writer.js';
import {
  createBind,
  createCopyData,
  createExecute,
  createParse,
  createQuery,
  createStartupMessage,
  createSync,
  parseErrorResponse,
} from '../../src/broker/protocols/postgres/messages.js';
import { startPgCluster, type PgCluster } from '../../src/dev/pg-cluster.js';
import { initPolicyEngine } from '../../src/policy/index.js';
import { VerdictCache } from '../../src/broker/protocols/postgres/verdict-cache.js';
import { runPsql, startPolicyProxy, type PolicyProxy } from '../support/pg-proxy-harness.js';
import { DENY_POLICY, attempts, type Attempt } from '../support/policy-attempts.js';

/** A read-only, per-schema grant for analysts; DBAs may do everything no deny rule names. */
const READ_ONLY_POLICY = {
  defaultAction: 'deny',
  rules: [
    { name: 'analysts-read', match: { identity: { groups: ['analysts'] }, category: ['read', 'transaction'], tables: ['public.*'] }, action: 'allow' },
    { name: 'no-drop', match: { statement: ['DropStmt', 'TruncateStmt'] }, action: 'deny' },
  ],
};

let cluster: PgCluster;
let admin: pg.Client;
let proxy: PolicyProxy;
let fileDir: string;
const verdicts = new VerdictCache();

const GUARDED_ROWS = 5;

async function guardedIntact(): Promise<void> {
  const { rows } = await admin.query('select count(*)::int as n, sum(v)::int as total from public.guarded');
  expect(rows[0]).toEqual({ n: GUARDED_ROWS, total: 150 });
  const cols = await admin.query(`select attname from pg_attribute where attrelid = 'public.guarded'::regclass and attnum > 0 and not attisdropped order by attnum`);
  expect(cols.rows.map((r) => r.attname)).toEqual(['id', 'v']);
  const role = await admin.query(`select count(*)::int as n from pg_roles where rolname = 'victim_role'`);
  expect(role.rows[0].n).toBe(1);
}

beforeAll(async () => {
  await initPolicyEngine();
  cluster = await startPgCluster({ auth: 'scram-sha-256' });
  admin = new pg.Client({ connectionString: cluster.url() });
  await admin.connect();
  await admin.query('create table public.guarded (id int primary key, v int)');
  await admin.query('insert into public.guarded select g, g * 10 from generate_series(1, 5) g');
  await admin.query('create table public.other (id int)');
  await admin.query('create table public.tx_log (id int)');
  await admin.query('create role victim_role');
  fileDir = mkdtempSync(join(tmpdir(), 'hoop-policy-'));
  // Through the verdict cache, as in the broker: texts sent again (by another client, in another session) are hits.
  proxy = await startPolicyProxy({ cluster, policy: DENY_POLICY, identity: { subject: 'dev@example.com', kind: 'human', groups: ['developers'] }, verdicts });
});

afterAll(async () => {
  await proxy?.close();
  await admin?.end();
  await cluster?.stop();
  if (fileDir) rmSync(fileDir, { recursive: true, force: true });
});

async function viaPg(attempt: Attempt, n: number): Promise<{ code?: string; message: string }> {
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'laptop-user', database: 'postgres' });
  await client.connect();
  try {
    if (attempt.via === 'pg simple') await client.query(attempt.sql);
    else if (attempt.via === 'pg extended') await client.query({ text: attempt.sql, values: [], queryMode: 'extended' } as pg.QueryConfig);
    else await client.query({ name: `attempt_${n}`, text: attempt.sql });
    return { message: 'no error' };
  } catch (e) {
    const err = e as { code?: string; message: string };
    return { code: err.code, message: err.message };
  } finally {
    await client.end();
  }
}

describe('deny rules hold against real psql and node-postgres', () => {
  it('has at least 40 attempts', () => {
    expect(attempts.length).toBeGreaterThanOrEqual(40);
  });

  it.each(attempts.map((a, i) => ({ ...a, n: i })))('refuses $via: $sql', async (attempt) => {
    const before = proxy.events.length;
    if (attempt.via.startsWith('psql')) {
      let r;
      if (attempt.via === 'psql -f') {
        const file = join(fileDir, `attempt-${attempt.n}.sql`);
        writeFileSync(file, attempt.sql);
        r = await runPsql(proxy.port, ['-f', file]);
      } else r = await runPsql(proxy.port, ['-c', attempt.sql]);
      // A typo is refused as what it is, a syntax error (42601, with the parser's position), not a permission denial.
      if (attempt.rule === 'unparseable') {
        expect(r.stderr).toContain('ERROR:  42601: hoopctl: syntax error at or near');
      } else {
        expect(r.stderr).toContain(`ERROR:  42501: hoopctl: statement`);
        expect(r.stderr).toContain(`by rule "${attempt.rule}"`);
      }
    } else {
      const r = await viaPg(attempt, attempt.n);
      expect(r.code).toBe(attempt.rule === 'unparseable' ? '42601' : '42501');
      if (attempt.rule !== 'unparseable') expect(r.message).toContain(`rule "${attempt.rule}"`);
    }
    const verdicts = proxy.events.slice(before).filter((e) => e.type === 'verdict' && e.data.refused === true);
    expect(verdicts.map((v) => v.data.rule)).toContain(attempt.rule);
    await guardedIntact();
  });

  it('records a verdict the cache gives for every statement, as it records a fresh one', async () => {
    const before = proxy.events.length;
    const hits = verdicts.hits;
    for (let i = 0; i < 2; i++) {
      const r = await runPsql(proxy.port, ['-c', 'drop table guarded']);
      expect(r.stderr).toContain('by rule "no-ddl"');
    }
    expect(verdicts.hits).toBeGreaterThan(hits);
    const mine = proxy.events.slice(before).filter((e) => e.type === 'verdict');
    expect(mine).toHaveLength(2);
    expect(new Set(mine.map((e) => e.sessionId)).size).toBe(2);
    for (const v of mine) expect(v.data).toMatchObject({ action: 'deny', rule: 'no-ddl', refused: true });
    await guardedIntact();
  });

  it('the review action fails closed with a message saying approval is required', async () => {
    const r = await runPsql(proxy.port, ['-c', 'grant select on guarded to victim_role']);
    expect(r.stderr).toMatch(/held for review by rule "grants-need-review": approval is required .* not yet available/);
    const { rows } = await admin.query(`select has_table_privilege('victim_role', 'public.guarded', 'select') as granted`);
    expect(rows[0].granted).toBe(false);
  });

  it('records each verdict right after its statement, before any result', async () => {
    const before = proxy.events.length;
    await runPsql(proxy.port, ['-c', 'select 40 + 2']);
    await runPsql(proxy.port, ['-c', 'truncate guarded']);
    const mine = proxy.events.slice(before).filter((e) => ['statement', 'verdict', 'result'].includes(e.type));
    const allowed = mine.find((e) => e.type === 'statement' && e.data.sql === 'select 40 + 2')!;
    const seq = allowed.data.statementSeq;
    const sameSession = mine.filter((e) => e.sessionId === allowed.sessionId && e.data.statementSeq === seq).map((e) => e.type);
    expect(sameSession).toEqual(['statement', 'verdict', 'result']);
    const verdict = mine.find((e) => e.type === 'verdict' && e.sessionId === allowed.sessionId)!;
    expect(verdict.data).toMatchObject({ action: 'allow', refused: false });
    const refused = mine.find((e) => e.type === 'verdict' && e.data.refused === true)!;
    expect(refused.data).toMatchObject({ action: 'deny', rule: 'no-ddl' });
    const result = mine.find((e) => e.type === 'result' && e.sessionId === refused.sessionId && e.data.statementSeq === refused.data.statementSeq)!;
    expect(result.data).toMatchObject({ error: { code: '42501' } });
    expect(proxy.summaries.find((s) => s.errorCount > 0)).toBeDefined();
  });

  it('psql inside BEGIN … denied … ROLLBACK behaves exactly as with a server error', async () => {
    const script = (bad: string) =>
      `begin;\ninsert into tx_log values (1);\n${bad}\nselect 'after the error';\nrollback;\nselect count(*) from tx_log;\n`;
    const denied = await runPsql(proxy.port, [], script('drop table guarded;'));
    const serverError = await runPsql(proxy.port, [], script('select 1/0;'));
    expect(denied.stdout).toBe(serverError.stdout);
    expect(denied.stdout).toBe('BEGIN\nINSERT 0 1\nROLLBACK\n0\n');
    expect(denied.stderr).toContain('42501: hoopctl: statement denied by rule "no-ddl"');
    expect(denied.stderr).toContain('25P02: current transaction is aborted');
    expect(serverError.stderr).toContain('25P02: current transaction is aborted');
    await guardedIntact();
  });

  it('node-postgres in a transaction: the denied statement fails the transaction, ROLLBACK recovers', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'laptop-user', database: 'postgres' });
    await client.connect();
    await client.query('begin');
    await client.query('insert into tx_log values (2)');
    await expect(client.query('delete from guarded', [])).rejects.toMatchObject({ code: '42501' });
    await expect(client.query('select 1')).rejects.toMatchObject({ code: '25P02' });
    await client.query('rollback');
    const { rows } = await client.query('select count(*)::int as n from tx_log');
    expect(rows[0].n).toBe(0);
    await client.end();
    await guardedIntact();
  });

  it('a pipelined denied batch answers in order, and the next batch runs normally', async () => {
    const socket = netConnect({ host: '127.0.0.1', port: proxy.port });
    const scanner = new FrameScanner({ wanted: new Set(Array.from({ length: 128 }, (_, i) => i)), maxLength: MAX_BACKEND_FRAME });
    const codes: string[] = [];
    const errors: string[] = [];
    socket.on('data', (chunk: Buffer) => {
      for (const f of scanner.observe(chunk)) {
        const code = String.fromCharCode(f.code);
        codes.push(code);
        if (code === 'E') errors.push(parseErrorResponse(f.body).code);
      }
    });
    await once(socket, 'connect');
    socket.write(createStartupMessage({ user: 'u', database: 'postgres' }));
    const waitZ = async (n: number) => {
      const deadline = Date.now() + 10_000;
      while (codes.filter((c) => c === 'Z').length < n) {
        if (Date.now() > deadline) throw new Error(`timed out, got ${codes.join('')}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await waitZ(1);
    codes.length = 0;
    socket.write(
      Buffer.concat([
        createParse({ sql: 'select 1' }),
        createBind({}),
        createExecute(),
        createParse({ name: 'bad', sql: 'truncate guarded' }),
        createBind({ statement: 'bad' }),
        createExecute(),
        createSync(),
        createParse({ sql: 'select 2' }),
        createBind({}),
        createExecute(),
        createSync(),
        // the fast-path function call protocol cannot be judged: refused
        new Writer().addInt32(1259).addInt16(0).addInt16(0).addInt16(0).frame('F'),
        createQuery('select 3'),
      ]),
    );
    await waitZ(4);
    expect(codes.join('')).toBe('12DCEZ12DCZEZTDCZ');
    expect(errors).toEqual(['42501', '42501']);
    socket.destroy();
    await guardedIntact();
  });
});

/**
 * A raw protocol session with a proxy, for sequences no driver sends: every answer's type letter (a ReadyForQuery as
 * Z and its status) and every error, and a wait for the n-th answer of a kind (the answer arrives or the session is
 * cut: no deadline of its own).
 */
async function rawSession(port: number) {
  const socket = netConnect({ host: '127.0.0.1', port });
  const scanner = new FrameScanner({ wanted: new Set(Array.from({ length: 128 }, (_, i) => i)), maxLength: MAX_BACKEND_FRAME });
  const codes: string[] = [];
  const errors: Array<{ code: string; message: string }> = [];
  let closed = false;
  socket.on('close', () => (closed = true));
  socket.on('error', () => undefined);
  socket.on('data', (chunk: Buffer) => {
    for (const f of scanner.observe(chunk)) {
      const code = String.fromCharCode(f.code);
      codes.push(code === 'Z' ? `Z${String.fromCharCode(f.body[0]!)}` : code);
      if (code === 'E') errors.push(parseErrorResponse(f.body));
    }
  });
  /** Waits for the n-th answer whose letter is `type` since the start. */
  const waitFor = async (type: string, n: number) => {
    while (codes.filter((c) => c[0] === type).length < n) {
      if (closed) throw new Error(`the session was cut; got ${codes.join(' ')}, errors ${JSON.stringify(errors)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  await once(socket, 'connect');
  return { socket, codes, errors, waitFor, isClosed: () => closed };
}

describe('protocol shields, on a connection without rules', () => {
  let open: PolicyProxy;
  beforeAll(async () => {
    open = await startPolicyProxy({ cluster, policy: { defaultAction: 'allow' }, identity: { subject: 'dba@example.com', kind: 'human', groups: ['dba'] } });
    await admin.query('create table public.copy_sink (line text)');
  });
  afterAll(async () => open?.close());

  it('refuses an Execute of the unnamed portal no Bind opened, which crashes PostgreSQL 15 after a failed COPY, and the server stays up', async () => {
    const { socket, errors, waitFor } = await rawSession(open.port);
    socket.write(createStartupMessage({ user: 'u', database: 'postgres' }));
    await waitFor('Z', 1);
    // The sequence the fuzz found (SECURITY.md), each step after the server's answer to the one before.
    socket.write(Buffer.concat([createQuery('begin'), createQuery('copy public.copy_sink from stdin')]));
    await waitFor('G', 1);
    socket.write(createCopyData(Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xe2, 0x82, 0x28, 0xf0, 0x28, 0x8c, 0xbc, 0x0a, 0x0a])));
    await waitFor('Z', 3);
    socket.write(Buffer.concat([createQuery('select id, v from public.guarded where id = 1'), createExecute({ maxRows: 1 })]));
    await waitFor('E', 3);
    socket.write(createSync());
    await waitFor('Z', 5);
    expect(errors.map((e) => e.code)).toEqual(['22021', '25P02', '34000']);
    expect(errors[2]!.message).toBe('portal "" does not exist');
    // The session goes on, and the server never restarted: the admin connection opened before all this still works.
    socket.write(createQuery('rollback'));
    await waitFor('Z', 6);
    expect((await admin.query('select 1 as ok')).rows[0].ok).toBe(1);
    socket.destroy();
    const refused = open.events.find((e) => e.type === 'verdict' && (e.data as { rule?: string }).rule === 'no-unnamed-portal');
    expect(refused).toBeDefined();
  });

  it('knows the unnamed portal is gone when its transaction ends, as the server drops it (at Sync, or at a COMMIT inside a Sync group), and kept while the transaction lasts', async () => {
    const { socket, codes, errors, isClosed } = await rawSession(open.port);
    /** Sends `messages` and returns the answer up to the next ReadyForQuery (as type letters, Z with its status). */
    const exchange = async (...messages: Buffer[]): Promise<string> => {
      const from = codes.length;
      socket.write(Buffer.concat(messages));
      while (!codes.slice(from).some((c) => c.startsWith('Z'))) {
        if (isClosed()) throw new Error(`the session was cut; got ${codes.join(' ')}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      return codes.slice(from).join(' ');
    };
    const refusals = () => open.events.filter((e) => e.type === 'verdict' && (e.data as { rule?: string }).rule === 'no-unnamed-portal').length;
    socket.write(createStartupMessage({ user: 'u', database: 'postgres' }));
    await exchange();
    const before = refusals();

    // Autocommit: the implicit transaction ends at Sync, and the unnamed portal with it.
    expect(await exchange(createParse({ sql: 'select 1' }), createBind({}), createExecute(), createSync())).toBe('1 2 D C ZI');
    expect(await exchange(createExecute(), createSync())).toBe('E ZI');
    expect(errors.at(-1)).toMatchObject({ code: '34000', message: 'portal "" does not exist' });
    expect(refusals()).toBe(before + 1);

    // An error ends the implicit transaction too (rolled back at Sync): the portal is gone as well.
    expect(await exchange(createParse({ sql: 'select 1 / g from generate_series(0, 0) g' }), createBind({}), createExecute(), createSync())).toBe('1 2 E ZI');
    expect(await exchange(createExecute(), createSync())).toBe('E ZI');
    expect(refusals()).toBe(before + 2);

    // Inside a transaction block the portal outlives Sync: a suspended one runs on where it stopped.
    expect(await exchange(createQuery('begin'))).toBe('C ZT');
    expect(await exchange(createParse({ sql: 'select generate_series(1, 3)' }), createBind({}), createExecute({ maxRows: 1 }), createSync())).toBe('1 2 D s ZT');
    expect(await exchange(createExecute(), createSync())).toBe('D D C ZT');
    expect(await exchange(createQuery('commit'))).toBe('C ZI');
    expect(refusals()).toBe(before + 2);

    // A COMMIT inside one Sync group, a BEGIN behind it: ReadyForQuery says `T`, yet the server dropped the portals
    // bound before the COMMIT (the suspended unnamed one) and kept those bound after it.
    expect(await exchange(createQuery('begin'))).toBe('C ZT');
    expect(await exchange(
      createParse({ sql: 'select generate_series(1, 3)' }), createBind({}), createExecute({ maxRows: 1 }),
      createParse({ sql: 'commit' }), createBind({ portal: 'c' }), createExecute({ portal: 'c' }),
      createParse({ sql: 'begin' }), createBind({ portal: 'b' }), createExecute({ portal: 'b' }),
      createSync(),
    )).toBe('1 2 D s 1 2 C 1 2 C ZT');
    expect(await exchange(createExecute(), createSync())).toBe('E ZE');
    expect(errors.at(-1)).toMatchObject({ code: '34000', message: 'portal "" does not exist' });
    expect(refusals()).toBe(before + 3);
    expect(await exchange(createQuery('rollback'))).toBe('C ZI');
    expect(await exchange(createQuery('begin'))).toBe('C ZT');
    expect(await exchange(
      createParse({ sql: 'commit' }), createBind({ portal: 'c' }), createExecute({ portal: 'c' }),
      createParse({ sql: 'begin' }), createBind({ portal: 'b' }), createExecute({ portal: 'b' }),
      createParse({ sql: 'select generate_series(1, 3)' }), createBind({}), createExecute({ maxRows: 1 }),
      createSync(),
    )).toBe('1 2 C 1 2 C 1 2 D s ZT');
    expect(await exchange(createExecute(), createSync())).toBe('D D C ZT');
    expect(await exchange(createQuery('commit'))).toBe('C ZI');
    expect(refusals()).toBe(before + 3);
    socket.destroy();
  });
});

describe('allowed work is untouched', () => {
  let readOnly: PolicyProxy;
  beforeAll(async () => {
    readOnly = await startPolicyProxy({ cluster, policy: READ_ONLY_POLICY, identity: { subject: 'ana@example.com', kind: 'human', groups: ['analysts'] } });
  });
  afterAll(async () => readOnly?.close());

  it('a read-only identity runs its SELECTs, transactions and cursors through psql', async () => {
    const r = await runPsql(readOnly.port, [], [
      'select count(*) from public.guarded;',
      'begin;',
      'declare c cursor for select id from public.guarded order by id;',
      'fetch 2 from c;',
      'fetch next from c;',
      'close c;',
      'commit;',
    ].join('\n'));
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('5\nBEGIN\nDECLARE CURSOR\n1\n2\n3\nCLOSE CURSOR\nCOMMIT\n');
  });

  it('a read-only identity uses prepared statements with node-postgres', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: readOnly.port, user: 'laptop-user', database: 'postgres' });
    await client.connect();
    for (const id of [1, 2, 3]) {
      const { rows } = await client.query({ name: 'by-id', text: 'select v from public.guarded where id = $1', values: [id] });
      expect(rows).toEqual([{ v: id * 10 }]);
    }
    await client.query('begin');
    const { rows } = await client.query('select sum(v)::int as s from public.guarded where id > $1', [2]);
    expect(rows[0].s).toBe(120);
    await client.query('commit');
    // …and writes are not theirs.
    await expect(client.query('insert into public.tx_log values (1)')).rejects.toMatchObject({ code: '42501' });
    await expect(client.query('select count(*) from guarded')).rejects.toMatchObject({ code: '42501' });
    await client.end();
  });

  it('a DBA on the same connection is still refused what a deny rule names', async () => {
    const dba = await startPolicyProxy({ cluster, policy: READ_ONLY_POLICY, identity: { subject: 'dba@example.com', kind: 'human', groups: ['analysts', 'dba'] } });
    try {
      const r = await runPsql(dba.port, ['-c', 'drop table public.tx_log']);
      expect(r.stderr).toContain('by rule "no-drop"');
    } finally {
      await dba.close();
    }
  });
});
