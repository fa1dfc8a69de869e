import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import pg from 'pg';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CliProcess, loginAs, runCli, runProcess, startStack, type Stack } from '../support/stack.js';
import type { Review } from '../../src/api/review.js';

/**
 * Just-in-time approval end to end: a DELETE held by a `review` rule while real psql waits, decided by a second
 * identity with `hoopctl approve`, and a connection that opens only inside an approved, time-boxed window.
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;
let bob: NodeJS.ProcessEnv;
let mallory: NodeJS.ProcessEnv;
let tunnel: CliProcess;
let port: number;
/** The tunnel's own password, from the URL connect prints. */
let password: string;

const psqlEnv = () => ({ PATH: process.env.PATH, PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'x', PGDATABASE: 'app', PGCONNECT_TIMEOUT: '10', PGPASSWORD: password });

function startPsql(sql: string): { child: ChildProcess; out: () => string; exit: Promise<number> } {
  const child = spawn('psql', ['-X', '-w', '-c', sql], { env: psqlEnv() });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exit = new Promise<number>((resolve) => child.on('exit', (c) => resolve(c ?? -1)));
  return { child, out: () => out, exit };
}

async function pendingReview(env: NodeJS.ProcessEnv, match: (r: Review) => boolean): Promise<Review> {
  for (let i = 0; i < 100; i++) {
    const r = await runCli(['reviews', '-o', 'json'], env);
    const found = (JSON.parse(r.stdout) as Review[]).find(match);
    if (found) return found;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error('no pending review appeared');
}

async function directCount(where: string): Promise<number> {
  const c = new pg.Client({ connectionString: stack.cluster.url('app') });
  await c.connect();
  const { rows } = await c.query(`select count(*)::int as n from items where ${where}`);
  await c.end();
  return rows[0].n;
}

/** A chat webhook (Slack's incoming-webhook shape) the broker posts review messages to. */
const chat: string[] = [];
let chatServer: Server;

beforeAll(async () => {
  chatServer = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      chat.push((JSON.parse(body) as { text: string }).text);
      res.end('ok');
    });
  });
  await new Promise<void>((r) => chatServer.listen(0, '127.0.0.1', r));
  stack = await startStack({
    extraConfig: { notify: [{ name: 'chat', type: 'slack', url: { value: `http://127.0.0.1:${(chatServer.address() as AddressInfo).port}/services/T000/B000/secret` } }] },
    appPgPolicy: { rules: [{ name: 'held-deletes', match: { statement: ['DeleteStmt'] }, action: 'review' }] },
    // Generous: a review must outlive the CLI start-ups of a busy machine. Expiry has its own connection.
    appPg: { reviews: { groups: ['leads'], timeout: '10m' } },
    extraConnections: [
      { name: 'jit-pg', access: { groups: ['dba'], approval: { groups: ['leads'], maxDuration: '1m', reason: 'required' } } },
      { name: 'expiring-pg', rules: [{ name: 'held-deletes', match: { statement: ['DeleteStmt'] }, action: 'review' }], reviews: { groups: ['leads'], timeout: '2s' } },
    ],
  });
  [alice, bob, mallory] = await Promise.all([loginAs(stack, 'alice'), loginAs(stack, 'bob'), loginAs(stack, 'mallory')]);
  tunnel = new CliProcess(['connect', 'app-pg', '-o', 'json'], alice);
  const ready = JSON.parse((await tunnel.waitFor(/\{.*\}\n/))[0]!) as { port: number; url: string };
  port = ready.port;
  password = decodeURIComponent(new URL(ready.url).password);
  const setup = await runProcess('psql', ['-X', '-w', '-v', 'ON_ERROR_STOP=1', '-c', 'create table items (id int primary key, label text)', '-c',
    'insert into items select g, \'item \' || g from generate_series(1, 20) g'], psqlEnv());
  expect(setup.code, setup.stdout + setup.stderr).toBe(0);
}, 120_000);

afterAll(async () => {
  chatServer?.close();
  await tunnel?.stop().catch(() => undefined);
  await stack?.stop();
});

describe('statement reviews with psql', () => {
  it('holds a DELETE, tells psql the review id, and runs it once an approver approves', async () => {
    const psql = startPsql('delete from items where id = 1');
    const review = await pendingReview(bob, (r) => r.statement === 'delete from items where id = 1');
    expect(review).toMatchObject({ kind: 'statement', rule: 'held-deletes', requester: { subject: 'alice' } });
    expect(await directCount('id = 1')).toBe(1);
    const approve = await runCli(['approve', review.id, '--reason', 'checked the ticket'], bob);
    expect(approve.code, approve.stderr).toBe(0);
    expect(await psql.exit).toBe(0);
    expect(psql.out()).toContain(`statement held for review ${review.id}`);
    expect(psql.out()).toContain('DELETE 1');
    expect(await directCount('id = 1')).toBe(0);
    // Approvers were told in chat, where they are, and the outcome followed.
    for (let i = 0; i < 300 && !chat.some((t) => t.startsWith(`review ${review.id} approved`)); i++) await new Promise((r) => setTimeout(r, 100));
    expect(chat).toContain(`alice@example.com asks for approval to run on app-pg: \`delete from items where id = 1\` (rule held-deletes) — review ${review.id}, needs 1 approval(s) from leads. Decide with: hoopctl approve ${review.id}`);
    expect(chat).toContain(`review ${review.id} approved by bob: checked the ticket (alice@example.com, to run on app-pg: \`delete from items where id = 1\` (rule held-deletes))`);
  });

  it('refuses self-approval and non-approvers, and shows psql the reason of a rejection', async () => {
    const psql = startPsql('delete from items where id = 2');
    const review = await pendingReview(bob, (r) => r.statement === 'delete from items where id = 2');
    const self = await runCli(['approve', review.id, '--reason', 'me'], alice);
    expect(self.code).not.toBe(0);
    expect(self.stderr).toContain('you cannot decide your own request');
    const outsider = await runCli(['approve', review.id], mallory);
    expect(outsider.code).not.toBe(0);
    expect(outsider.stderr).toMatch(/not found|not an approver/);
    const noReason = await runCli(['approve', review.id, '--reject'], bob);
    expect(noReason.stderr).toContain('a reason is required to reject');
    expect((await runCli(['approve', review.id, '--reject', '--reason', 'use a migration'], bob)).code).toBe(0);
    expect(await psql.exit).not.toBe(0);
    expect(psql.out()).toContain(`review ${review.id} rejected by bob: use a migration`);
    expect(await directCount('id = 2')).toBe(1);
  });

  it('expires a review nobody decides, and withdraws one when psql is interrupted', async () => {
    // The clock of a review starts when it is filed, after the CLI is up: a short timeout races nothing.
    const expiring = await runCli(['exec', 'expiring-pg', '-e', 'delete from items where id = 3'], alice);
    expect(expiring.code).toBe(1);
    expect(expiring.stderr).toMatch(/review rev_[0-9a-f]+ expired: nobody decided in time/);

    const interrupted = startPsql('delete from items where id = 4');
    const review = await pendingReview(bob, (r) => r.statement === 'delete from items where id = 4');
    interrupted.child.kill('SIGINT');
    expect(await interrupted.exit).not.toBe(0);
    expect(interrupted.out()).toContain('canceling statement due to user request');
    const all = JSON.parse((await runCli(['reviews', '--status', 'all', '-o', 'json'], bob)).stdout) as Review[];
    expect(all.find((r) => r.id === review.id)?.status).toBe('withdrawn');
    expect(await directCount('id in (3, 4)')).toBe(2);
  });

  it('never blocks other sessions while one statement is held', async () => {
    const held = startPsql('delete from items where id = 5');
    await pendingReview(bob, (r) => r.statement === 'delete from items where id = 5');
    const other = await runProcess('psql', ['-X', '-w', '-At', '-c', 'select count(*) from items'], psqlEnv());
    expect(other.stdout.trim()).toMatch(/^\d+$/);
    held.child.kill('SIGINT');
    await held.exit;
  });
});

describe('hoopctl exec and reviews', () => {
  it('--no-wait prints the review id and exits 5; the same SQL runs once after approval', async () => {
    const sql = 'delete from items where id = 6';
    const held = await runCli(['exec', 'app-pg', '--no-wait', '-e', sql, '-o', 'json'], alice);
    expect(held.code).toBe(5);
    const { review } = JSON.parse(held.stdout) as { review: string };
    expect(review).toMatch(/^rev_/);
    expect((await runCli(['approve', review, '--reason', 'ok'], bob)).code).toBe(0);
    const rerun = await runCli(['exec', 'app-pg', '--no-wait', '-e', sql], alice);
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(rerun.stdout).toContain('DELETE 1');
    const again = await runCli(['exec', 'app-pg', '--no-wait', '-e', sql], alice);
    expect(again.code).toBe(5);
  });

  it('waits for the decision like psql does, for a CI service account', async () => {
    const ciEnv = stack.cliEnv({ HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'ci-report-secret', XDG_CONFIG_HOME: `${stack.dir}/config-ci-exec` });
    const exec = new CliProcess(['exec', 'app-pg', '-e', 'delete from items where id = 7'], ciEnv);
    const review = await pendingReview(bob, (r) => r.statement === 'delete from items where id = 7');
    expect(review.requester).toMatchObject({ kind: 'service', clientId: 'ci-report' });
    await runCli(['approve', review.id, '--reason', 'nightly cleanup'], bob);
    expect(await exec.exit()).toBe(0);
    expect(exec.stdout).toContain('DELETE 1');
    expect(exec.stderr).toContain(`held for review ${review.id}`);
  });
});

describe('just-in-time access windows', () => {
  it('refuses a connection without a grant and asks for a reason', async () => {
    const direct = await runCli(['exec', 'jit-pg', '-e', 'select 1'], alice);
    expect(direct.code).toBe(4);
    expect(direct.stderr).toContain('jit-pg needs an approved access request');
    const noReason = await runCli(['connect', 'jit-pg'], alice);
    expect(noReason.code).not.toBe(0);
    expect(noReason.stderr).toContain('requires a reason');
  });

  it('opens the tunnel once approved, and ends sessions and the tunnel when the window closes', async () => {
    const connect = new CliProcess(['connect', 'jit-pg', '--reason', 'INC-123: stuck orders', '--duration', '6s', '-o', 'json'], alice);
    const review = await pendingReview(bob, (r) => r.kind === 'access' && r.connection === 'jit-pg' && r.status === 'pending');
    expect(review).toMatchObject({ reason: 'INC-123: stuck orders', durationMs: 6000 });
    expect((await runCli(['approve', review.id, '--reason', 'on call'], bob)).code).toBe(0);
    const ready = JSON.parse((await connect.waitFor(/\{.*\}\n/))[0]!);
    expect(ready.grant).toBe(review.id);
    const client = new pg.Client({ host: '127.0.0.1', port: ready.port, user: 'x', database: 'app', password: decodeURIComponent(new URL(ready.url).password) });
    const ended = new Promise<Error>((resolve) => client.on('error', resolve));
    await client.connect();
    expect((await client.query('select 1 as one')).rows).toEqual([{ one: 1 }]);
    expect((await ended).message).toContain(`access grant ${review.id} ended`);
    expect(await connect.exit()).not.toBe(0);
    expect(connect.stderr).toContain(`access grant ${review.id} ended`);
    const after = await runCli(['exec', 'jit-pg', '-e', 'select 1'], alice);
    expect(after.code).toBe(4);
  });

  it('lets an approver revoke an active grant', async () => {
    const connect = new CliProcess(['connect', 'jit-pg', '--reason', 'INC-124', '--duration', '1m', '-o', 'json'], alice);
    const review = await pendingReview(bob, (r) => r.kind === 'access' && r.status === 'pending' && r.reason === 'INC-124');
    await runCli(['approve', review.id], bob);
    await connect.waitFor(/\{.*\}\n/);
    const revoke = await runCli(['revoke', review.id, '--reason', 'incident closed'], bob);
    expect(revoke.code, revoke.stderr).toBe(0);
    expect(await connect.exit()).not.toBe(0);
    expect(connect.stderr).toContain('was revoked by bob: incident closed');
    expect((await runCli(['exec', 'jit-pg', '-e', 'select 1'], alice)).code).toBe(4);
  });
});

describe('durability', () => {
  it('keeps an approved grant across a broker crash, and marks a statement held by the dead broker orphaned', async () => {
    const connect = new CliProcess(['connect', 'jit-pg', '--reason', 'INC-125', '--duration', '1m', '-o', 'json'], alice);
    const grant = await pendingReview(bob, (r) => r.kind === 'access' && r.status === 'pending' && r.reason === 'INC-125');
    await runCli(['approve', grant.id], bob);
    await connect.waitFor(/\{.*\}\n/);
    const held = startPsql('delete from items where id = 9');
    const statement = await pendingReview(bob, (r) => r.statement === 'delete from items where id = 9');
    await stack.restartBroker('SIGKILL');
    expect(await held.exit).not.toBe(0);
    const after = await runCli(['exec', 'jit-pg', '-e', 'select 1 as still_granted', '-o', 'json'], alice);
    expect(after.code, after.stderr).toBe(0);
    expect(JSON.parse(after.stdout)[0].rows).toEqual([{ still_granted: 1 }]);
    const all = JSON.parse((await runCli(['reviews', '--status', 'all', '-o', 'json'], bob)).stdout) as Review[];
    expect(all.find((r) => r.id === statement.id)?.status).toBe('orphaned');
    expect(all.find((r) => r.id === grant.id)?.status).toBe('approved');
    await connect.stop();
  });

  it('marks a held statement orphaned, not withdrawn, when the broker stops cleanly', async () => {
    const held = startPsql('delete from items where id = 10');
    const statement = await pendingReview(bob, (r) => r.statement === 'delete from items where id = 10');
    await stack.restartBroker('SIGTERM');
    expect(await held.exit).not.toBe(0);
    expect(held.out()).toContain('FATAL:  hoopctl: the broker is stopping');
    const all = JSON.parse((await runCli(['reviews', '--status', 'all', '-o', 'json'], bob)).stdout) as Review[];
    expect(all.find((r) => r.id === statement.id)?.status).toBe('orphaned');
  });
});

describe('the live approver console (hoopctl approve in a real terminal)', () => {
  it('shows a new held statement as it arrives and approves it with a reason', async () => {
    const { execFileSync } = await import('node:child_process');
    const { BIN } = await import('../support/stack.js');
    const session = `hoop-approve-${process.pid}`;
    const envArgs = Object.entries({ ...bob, TERM: 'xterm-256color' }).map(([k, v]) => `${k}=${JSON.stringify(String(v))}`).join(' ');
    execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '160', '-y', '40', `env -i ${envArgs} ${process.execPath} ${BIN} approve`]);
    const screen = () => execFileSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' });
    // Generous waits: a busy machine renders late, and how fast is not what this test asserts.
    const waitForScreen = async (pattern: RegExp) => {
      for (let i = 0; i < 600; i++) {
        if (pattern.test(screen())) return screen();
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`screen never showed ${pattern}:\n${screen()}`);
    };
    const selectedLine = () => screen().split('\n').find((l) => l.includes('›')) ?? '';
    try {
      await waitForScreen(/live/);
      const psql = startPsql('delete from items where id = 8');
      const review = await pendingReview(bob, (r) => r.statement === 'delete from items where id = 8');
      const shown = await waitForScreen(new RegExp(review.id));
      expect(shown).toContain('delete from items where id = 8');
      expect(shown).toContain('alice');
      // Put the selection (›) on this review, whatever else is pending.
      // One key at a time, each waited for (the selection line changes), so a slow render cannot be overshot.
      for (let i = 0; i < 20 && !new RegExp(`› .*${review.id}`).test(screen()); i++) {
        const before = selectedLine();
        execFileSync('tmux', ['send-keys', '-t', session, 'Down']);
        for (let j = 0; j < 100 && selectedLine() === before; j++) await new Promise((r) => setTimeout(r, 100));
      }
      expect(screen()).toMatch(new RegExp(`› .*${review.id}`));
      execFileSync('tmux', ['send-keys', '-t', session, 'a']);
      await waitForScreen(/reason/i);
      execFileSync('tmux', ['send-keys', '-t', session, '-l', 'looks right']);
      execFileSync('tmux', ['send-keys', '-t', session, 'Enter']);
      expect(await psql.exit).toBe(0);
      expect(psql.out()).toContain('DELETE 1');
      const decided = JSON.parse((await runCli(['reviews', '--status', 'approved', '-o', 'json'], bob)).stdout) as Review[];
      expect(decided.find((r) => r.id === review.id)?.decisions[0]).toMatchObject({ subject: 'bob', action: 'approve', reason: 'looks right' });
    } finally {
      execFileSync('tmux', ['kill-session', '-t', session]);
    }
  }, 180_000);
});
