import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT, importJWK } from 'jose';
import pg from 'pg';
import { clientCredentialsLogin } from '../../src/auth/oidc.js';
import { AUDIENCE, CliProcess, loginAs, mapLimit, runCli, startStack, type Stack } from '../support/stack.js';

/**
 * `hoopctl exec` on one stack: Ctrl-C, who a process runs as (a service identity named in the environment, a CI job
 * token), and what the sessions record of it.
 *
 * Issue 10: Ctrl-C on `hoopctl exec` cancels the statement on the server (a CancelRequest through a new tunnel with
 * the key the broker handed out), says so, exits 130, and the recording says cancelled. The regression: the process
 * just died, the backend kept running the statement and the replay said "ok".
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;
let admin: pg.Client;

beforeAll(async () => {
  stack = await startStack({
    extraConnections: [
      {
        name: 'deploy-pg',
        access: { claims: { repository: 'acme/deploy', ref: ['refs/heads/main', 'refs/heads/release/*'] } },
        rules: [{ name: 'ddl-from-main-only', match: { statement: ['CreateStmt', 'DropStmt'], identity: { claims: { ref: 'refs/heads/release/*' } } }, action: 'deny' }],
      },
    ],
  });
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

/**
 * Issue 10: a process that names a service identity in its environment runs as that identity or not at all.
 * The regression: on a laptop where a person had logged in, `HOOPCTL_CLIENT_ID=… HOOPCTL_CLIENT_SECRET=wrong`
 * ran as the person and exited 0.
 */
interface SessionJson {
  id: string;
  connection: string;
  identity: { subject: string; kind: string; clientId?: string };
}

async function sessions(): Promise<SessionJson[]> {
  const r = await runCli(['sessions', '-o', 'json', '-n', '200', '--connection', 'app-pg'], alice);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as SessionJson[];
}

describe('an identity named in the environment beats a stored human login', () => {
  it('a wrong client secret is "not authenticated" (exit 3) and never runs as the logged-in person', async () => {
    const before = await sessions();
    const wrong = { ...alice, HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'wrong' };
    const r = await runCli(['exec', 'app-pg', '-e', 'select current_user'], wrong);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toContain('ci-report');
    expect(r.stdout).toBe('');
    const who = await runCli(['whoami', '-o', 'json'], wrong);
    expect(who.code).toBe(3);
    expect(who.stdout).not.toContain('alice');
    // No session was opened for anybody: the broker never saw a token.
    expect((await sessions()).map((s) => s.id)).toEqual(before.map((s) => s.id));
  });

  it('the right client secret runs as the client, and the session records the client', async () => {
    const ci = { ...alice, HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'ci-report-secret' };
    const r = await runCli(['exec', 'app-pg', '-o', 'json', '-e', "select 'from ci' as who"], ci);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)[0].rows).toEqual([{ who: 'from ci' }]);
    const [newest] = await sessions();
    expect(newest!.identity).toMatchObject({ kind: 'service', clientId: 'ci-report' });
    expect(newest!.identity.subject).not.toBe('alice');

    const who = await runCli(['whoami', '-o', 'json'], ci);
    expect(who.code, who.stderr).toBe(0);
    expect(JSON.parse(who.stdout)).toMatchObject({
      kind: 'service',
      clientId: 'ci-report',
      source: { kind: 'client-credentials', clientId: 'ci-report', text: 'client credentials (HOOPCTL_CLIENT_ID=ci-report)' },
    });
    const text = await runCli(['whoami'], ci);
    expect(text.stdout).toMatch(/^source {3}client credentials \(HOOPCTL_CLIENT_ID=ci-report\)$/m);
    expect(text.stdout).not.toContain('ci-report-secret');
  });

  it('only half of the client pair is a usage error naming the missing variable', async () => {
    const noSecret = await runCli(['exec', 'app-pg', '-e', 'select 1'], { ...alice, HOOPCTL_CLIENT_ID: 'ci-report' });
    expect(noSecret.code).toBe(2);
    expect(noSecret.stderr).toContain('HOOPCTL_CLIENT_SECRET');
    const noId = await runCli(['exec', 'app-pg', '-e', 'select 1'], { ...alice, HOOPCTL_CLIENT_SECRET: 'ci-report-secret' });
    expect(noId.code).toBe(2);
    expect(noId.stderr).toContain('HOOPCTL_CLIENT_ID');
    expect(noId.stderr).not.toContain('ci-report-secret');
  });

  it('an empty HOOPCTL_TOKEN (a CI variable that did not resolve) is not authenticated, not the stored login', async () => {
    const r = await runCli(['whoami', '-o', 'json'], { ...alice, HOOPCTL_TOKEN: '' });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('HOOPCTL_TOKEN');
    expect(r.stdout).not.toContain('alice');
  });
});

describe('whoami says where the token came from', () => {
  it('names the stored login, HOOPCTL_TOKEN, or client credentials', async () => {
    const stored = await runCli(['whoami'], alice);
    expect(stored.code, stored.stderr).toBe(0);
    expect(stored.stdout).toMatch(/^source {3}stored login$/m);
    expect(JSON.parse((await runCli(['whoami', '-o', 'json'], alice)).stdout)).toMatchObject({ subject: 'alice', source: { kind: 'stored', text: 'stored login' } });

    const tokens = await clientCredentialsLogin({ issuer: stack.issuer.issuer, clientId: 'ci-other', clientSecret: 'ci-other-secret' });
    const fromEnv = await runCli(['whoami', '-o', 'json'], { ...alice, HOOPCTL_TOKEN: tokens.accessToken });
    expect(fromEnv.code, fromEnv.stderr).toBe(0);
    expect(JSON.parse(fromEnv.stdout)).toMatchObject({ clientId: 'ci-other', source: { kind: 'env', text: 'HOOPCTL_TOKEN' } });
    expect(fromEnv.stdout).not.toContain(tokens.accessToken);
  });
});

/**
 * "Which job ran which statement": a CI platform's job token (shaped like GitHub Actions', signed by an issuer the
 * broker trusts) opens a connection that admits by repository and branch, and the session records the run. A job
 * of another repository or branch is refused; a rule can treat jobs off the main branch differently.
 */
/** A job token as GitHub Actions issues one: the subject names repo and ref; run, workflow and actor ride along. */
async function jobToken(repository: string, ref: string, runId: number): Promise<string> {
  const key = await importJWK(stack.issuer.signingKey, 'RS256');
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ repository, ref, run_id: runId, workflow: 'nightly-migrate', actor: 'octocat', event_name: 'schedule' })
    .setProtectedHeader({ alg: 'RS256', kid: stack.issuer.kid, typ: 'at+jwt' })
    .setIssuer(stack.issuer.issuer)
    .setAudience(AUDIENCE)
    .setSubject(`repo:${repository}:ref:${ref}`)
    .setIssuedAt(now)
    .setExpirationTime(now + 600)
    .sign(key);
}

const asJob = async (repository: string, ref: string, runId: number) =>
  stack.cliEnv({ HOOPCTL_TOKEN: await jobToken(repository, ref, runId), XDG_CONFIG_HOME: `${stack.dir}/config-job-${runId}` });

describe('CI job identities', () => {
  it('admits the repository and branches the connection names, records the run, and refuses other jobs', async () => {
    const main = await runCli(['exec', 'deploy-pg', '-o', 'json', '-e', "select 'migrated' as step"], await asJob('acme/deploy', 'refs/heads/main', 4242));
    expect(main.code, main.stderr).toBe(0);
    expect(JSON.parse(main.stdout)[0].rows).toEqual([{ step: 'migrated' }]);

    const fork = await runCli(['exec', 'deploy-pg', '-e', 'select 1'], await asJob('mallory/deploy', 'refs/heads/main', 5));
    expect(fork.code).toBe(4);
    expect(fork.stderr).toContain('service account repo:mallory/deploy:ref:refs/heads/main (groups: none) may not open connection deploy-pg');
    const branch = await runCli(['exec', 'deploy-pg', '-e', 'select 1'], await asJob('acme/deploy', 'refs/heads/try-things', 6));
    expect(branch.code).toBe(4);

    const sessions = JSON.parse((await runCli(['sessions', '-o', 'json', '--connection', 'deploy-pg', '-n', '20'], alice)).stdout) as Array<{ id: string; status: string }>;
    const transcripts = (await mapLimit(sessions, 4, async (x) => (await runCli(['replay', x.id], alice)).stdout)).join('\n');
    expect(transcripts).toMatch(/claims  repository=acme\/deploy {2}workflow=nightly-migrate {2}ref=refs\/heads\/main {2}run_id=4242 {2}actor=octocat {2}event_name=schedule/);
    expect(transcripts).toContain("select 'migrated' as step");
    expect(transcripts).toMatch(/refused\s+service account repo:mallory\/deploy/);

    // An auditor asks what one run did.
    const run = JSON.parse((await runCli(['sessions', '--claim', 'run_id=4242', '--claim', 'repository=acme/deploy', '-o', 'json'], alice)).stdout) as Array<{ identity: { claims: Record<string, string> }; statementCount: number }>;
    expect(run).toHaveLength(1);
    expect(run[0]).toMatchObject({ identity: { claims: { run_id: '4242', workflow: 'nightly-migrate' } }, statementCount: 1 });
    const bad = await runCli(['sessions', '--claim', 'run-id'], alice);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('claim filter must be NAME=VALUE');
  });

  it('lets a rule tell jobs apart by their claims: DDL from a release branch is denied, from main allowed', async () => {
    const release = await runCli(['exec', 'deploy-pg', '-e', 'create table t_release (id int)'], await asJob('acme/deploy', 'refs/heads/release/2.1', 7));
    expect(release.code).toBe(1);
    expect(release.stderr).toContain('denied by rule "ddl-from-main-only"');
    const main = await runCli(['exec', 'deploy-pg', '-e', 'create table t_main (id int)'], await asJob('acme/deploy', 'refs/heads/main', 8));
    expect(main.code, main.stderr).toBe(0);
  });
});
