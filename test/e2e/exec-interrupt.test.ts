import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { CliProcess, loginAs, runCli, startStack, type Stack } from '../support/stack.js';

/**
 * Issue 10: Ctrl-C on `hoopctl exec` cancels the statement on the server (a CancelRequest through a new tunnel with
 * the key the broker handed out), says so, exits 130, and the recording says cancelled. The regression: the process
 * just died, the backend kept running the statement and the replay said "ok".
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;
let admin: pg.Client;

beforeAll(async () => {
  stack = await startStack();
  alice = await loginAs(stack, 'alice');
  admin = new pg.Client({ connectionString: stack.cluster.url() });
  await admin.connect();
}, 120_000);

afterAll(async () => {
  await admin?.end().catch(() => undefined);
  await stack?.stop();
});

/** Backends running `sql` right now, as the server itself sees them. */
async function activeRuns(sql: string): Promise<number[]> {
  const r = await admin.query<{ pid: number }>("select pid from pg_stat_activity where state = 'active' and query = $1 and pid <> pg_backend_pid()", [sql]);
  return r.rows.map((row) => row.pid);
}

/** Polls until `check` holds: the server's own view is the event waited for (the machine may be slow). */
async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function listSessions(): Promise<Array<{ id: string; status: string }>> {
  return JSON.parse((await runCli(['sessions', '-o', 'json', '-n', '1000'], alice)).stdout) as Array<{ id: string; status: string }>;
}

/** The session that ran `sql`, once it has ended: its transcript and raw events. */
async function sessionThatRan(sql: string): Promise<{ id: string; transcript: string; events: Array<{ type: string; data: Record<string, unknown> }> }> {
  return until(`the session that ran ${sql} to end`, async () => {
    const list = JSON.parse((await runCli(['sessions', '-o', 'json', '-n', '20', '--connection', 'app-pg'], alice)).stdout) as Array<{ id: string; status: string }>;
    for (const s of list) {
      if (s.status === 'open') continue;
      const json = JSON.parse((await runCli(['replay', s.id, '-o', 'json'], alice)).stdout) as { events: Array<{ type: string; data: Record<string, unknown> }> };
      if (!json.events.some((e) => e.type === 'statement' && e.data.sql === sql)) continue;
      return { id: s.id, transcript: (await runCli(['replay', s.id], alice)).stdout, events: json.events };
    }
    return undefined;
  });
}

describe('Ctrl-C on hoopctl exec', () => {
  it('cancels the statement on the server, says so, exits 130, and the replay shows it cancelled, and who cancelled', async () => {
    const sql = "select pg_sleep(600) as interrupted_by_ctrl_c";
    const before = new Set((await listSessions()).map((s) => s.id));
    const exec = new CliProcess(['exec', 'app-pg', '-e', sql], alice);
    const pid = await until('the statement to run on the server', async () => (await activeRuns(sql))[0]);
    exec.child.kill('SIGINT');
    expect(await exec.exit(), exec.stderr).toBe(130);
    expect(exec.stderr).toContain('hoopctl: cancelled; the server stopped the statement');
    expect(exec.stdout).toBe('');
    expect(await activeRuns(sql)).toEqual([]);
    const state = await admin.query<{ state: string }>('select state from pg_stat_activity where pid = $1', [pid]);
    expect(state.rows.map((r) => r.state)).not.toContain('active');

    const { id, transcript, events } = await sessionThatRan(sql);
    const result = events.find((e) => e.type === 'result');
    expect(result?.data).toMatchObject({ cancelled: true, error: { code: '57014' } });
    expect(transcript).toMatch(/✗ cancelled .*57014 canceling statement due to user request/);
    expect(transcript).not.toMatch(/→ ok/);
    // The cancel travelled on a tunnel of its own, yet it is an event of this session, not a session.
    expect(events.find((e) => e.type === 'cancel-request')?.data).toMatchObject({ outcome: 'forwarded', via: 'tunnel', by: { subject: 'alice' } });
    expect(transcript).toMatch(/cancel +requested by alice from 127\.0\.0\.1:\d+: the server was asked to stop the running statement/);
    expect((await listSessions()).filter((s) => !before.has(s.id)).map((s) => s.id)).toEqual([id]);
  });

  it('exits at once on a second Ctrl-C, saying the cancel was not confirmed, while the broker cannot answer', async () => {
    const sql = 'select pg_sleep(60) as ctrl_c_twice';
    const exec = new CliProcess(['exec', 'app-pg', '-e', sql], alice);
    const pid = await until('the statement to run on the server', async () => (await activeRuns(sql))[0]);
    // A frozen broker takes no cancel: only the second Ctrl-C can end the wait.
    stack.broker.kill('SIGSTOP');
    try {
      exec.child.kill('SIGINT');
      await until('hoopctl to start cancelling', async () => (exec.stderr.includes('cancelling the statement') ? true : undefined));
      exec.child.kill('SIGINT');
      expect(await exec.exit()).toBe(130);
    } finally {
      stack.broker.kill('SIGCONT');
    }
    expect(exec.stderr).toContain('hoopctl: interrupted; the cancel was not confirmed');
    expect(exec.stderr).not.toContain('hoopctl: cancelled;');
    // The cancel hoopctl sent may still reach the thawed broker before it sees the client gone: either way, not ok.
    const { transcript } = await sessionThatRan(sql);
    expect(transcript).toMatch(/→ unfinished: the session ended before the server answered|✗ cancelled/);
    expect(transcript).not.toMatch(/→ ok/);
    await admin.query('select pg_terminate_backend($1)', [pid]);
  });

  it('cancels on the server a statement whose client went away, and records it as unfinished, not ok', async () => {
    const sql = 'select pg_sleep(600) as client_went_away';
    const exec = new CliProcess(['exec', 'app-pg', '-e', sql], alice);
    await until('the statement to run on the server', async () => (await activeRuns(sql))[0]);
    exec.child.kill('SIGKILL');
    await exec.exit();
    // Nobody is left to read its answer: the broker cancels it (it would otherwise sleep its ten minutes).
    await until('the orphaned statement to stop on the server', async () => ((await activeRuns(sql)).length === 0 ? true : undefined), 60_000);
    const { transcript, events } = await sessionThatRan(sql);
    const result = events.find((e) => e.type === 'result');
    expect(result?.data).toMatchObject({ incomplete: true });
    expect(events.find((e) => e.type === 'cancel-sent')?.data).toMatchObject({ reason: 'the client went away while its statement ran', outcome: 'forwarded' });
    expect(transcript).toMatch(/→ unfinished: the session ended before the server answered/);
    expect(transcript).not.toMatch(/→ ok/);
  });
});
