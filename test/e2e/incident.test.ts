import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { SignJWT, importJWK } from 'jose';
import { APP_PASSWORD, AUDIENCE, CliProcess, loginAs, readText, runCli, startStack, type Stack } from '../support/stack.js';

/**
 * Incident response through the broker process: an admin (bob, group `leads`) ends a live session and locks an
 * identity out; the locked one's live session ends with the reason, new ones are refused, and the lock is lifted.
 * Real psql-protocol clients (node-postgres) through `hoopctl connect`.
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;
let bob: NodeJS.ProcessEnv;
let tunnel: CliProcess;
let port: number;

beforeAll(async () => {
  stack = await startStack({
    // The broker's stdout is this test's broker log: events exported there as JSON lines, one per line.
    extraConfig: { export: [{ name: 'console', type: 'stdout' }] },
    extraConnections: [
      { name: 'short-pg', access: { groups: ['dba'], session: { idleTimeout: '2s', maxDuration: '5s' } } },
      { name: 'token-pg', access: { groups: ['dba'], session: { endWithToken: true } } },
      { name: 'one-pg', access: { groups: ['dba'], session: { maxConcurrent: 1 } } },
    ],
  });
  [alice, bob] = await Promise.all([loginAs(stack, 'alice'), loginAs(stack, 'bob')]);
  tunnel = new CliProcess(['connect', 'app-pg', '-o', 'json'], alice);
  port = await readyPort(tunnel);
}, 120_000);

afterAll(async () => {
  await tunnel?.stop().catch(() => undefined);
  await stack?.stop();
});

/** Each tunnel's own password, by port (clients present it; the broker's credential is another matter). */
const passwords = new Map<number, string>();

/** The port of a tunnel once `connect` is ready; keeps its password. */
async function readyPort(p: CliProcess): Promise<number> {
  const ready = JSON.parse((await p.waitFor(/\{.*"port".*\}\n/))[0]!) as { port: number; url: string };
  passwords.set(ready.port, decodeURIComponent(new URL(ready.url).password));
  return ready.port;
}

/** A client through alice's tunnel, with what ends it. */
async function aliceClient(through = port): Promise<{ client: pg.Client; ended: Promise<string> }> {
  const client = new pg.Client({ host: '127.0.0.1', port: through, user: 'app', database: 'app', password: passwords.get(through) });
  const ended = new Promise<string>((resolve) => {
    client.on('error', (e) => resolve(e.message));
    client.on('end', () => resolve('ended'));
  });
  await client.connect();
  await client.query('select 1');
  return { client, ended };
}

async function liveSessionOf(env: NodeJS.ProcessEnv): Promise<string> {
  const list = JSON.parse((await runCli(['sessions', '--status', 'open', '--connection', 'app-pg', '-o', 'json'], env)).stdout) as Array<{ id: string; status: string }>;
  expect(list.map((s) => s.status)).toEqual(['open']);
  return list[0]!.id;
}

describe('incident response', () => {
  it('lets an auditor watch a live session as it happens, until it ends', async () => {
    const { client } = await aliceClient();
    const id = await liveSessionOf(alice);
    const watch = new CliProcess(['sessions', 'watch', id], alice);
    await watch.waitFor(/--- live: alice@example\.com on app-pg ---/);
    await client.query("select 'watched-' || 42 as tag");
    await watch.waitFor(/query\s+select 'watched-' \|\| 42 as tag\n\s+\+[\d.]+s\s+→ SELECT 1/);
    await client.end();
    await watch.waitFor(/--- session closed ---/);
    expect(await watch.exit()).toBe(0);
    const notTheirs = await runCli(['sessions', 'watch', id], bob);
    expect(notTheirs.code).not.toBe(0);
    expect(notTheirs.stderr).toContain(`session ${id} not found`);
  });

  it('lets an admin end a live session with a reason the client sees; others may not', async () => {
    const { ended } = await aliceClient();
    const id = await liveSessionOf(alice);
    const notAdmin = await runCli(['sessions', 'end', id, '--reason', 'mine'], alice);
    expect(notAdmin.code).toBe(4);
    expect(notAdmin.stderr).toContain('only members of the admin groups may end sessions');
    const r = await runCli(['sessions', 'end', id, '--reason', 'runaway query'], bob);
    expect(r.code, r.stderr).toBe(0);
    expect(await ended).toContain('session ended by bob: runaway query');
    const replay = await runCli(['replay', id], alice);
    expect(replay.stdout).toContain('ended      by bob: runaway query');
  });

  it('locks an identity: its live session ends, new ones are refused with the reason, until an admin unlocks it', async () => {
    const { ended } = await aliceClient();
    const lock = await runCli(['lock', 'alice', '--reason', 'laptop reported stolen', '--duration', '1h', '-o', 'json'], bob);
    expect(lock.code, lock.stderr).toBe(0);
    const { lock: made, endedSessions } = JSON.parse(lock.stdout) as { lock: { id: string }; endedSessions: string[] };
    expect(endedSessions).toHaveLength(1);
    expect(await ended).toContain('identity alice was locked by bob: laptop reported stolen');

    const refused = new pg.Client({ host: '127.0.0.1', port, user: 'app', database: 'app', password: passwords.get(port) });
    await expect(refused.connect()).rejects.toThrow(/identity alice is locked by bob until .*: laptop reported stolen/);
    const exec = await runCli(['exec', 'app-pg', '-e', 'select 1'], alice);
    expect(exec.code).toBe(4);
    expect(exec.stderr).toContain('identity alice is locked by bob');
    expect(exec.stderr).toContain(`hoopctl unlock ${made.id}`);

    const locks = await runCli(['locks'], alice);
    expect(locks.stdout).toMatch(new RegExp(`${made.id}\\s+alice\\s+.*bob\\s+laptop reported stolen`));
    expect((await runCli(['unlock', made.id], alice)).code).toBe(4);
    const unlock = await runCli(['unlock', made.id], bob);
    expect(unlock.stdout).toBe(`${made.id}: alice unlocked\n`);
    const back = await runCli(['exec', 'app-pg', '-e', 'select 40 + 2 as n', '-o', 'json'], alice);
    expect(back.code, back.stderr).toBe(0);
    expect(JSON.parse(back.stdout)).toMatchObject([{ command: 'SELECT', rows: [{ n: 42 }] }]);
  });

  it('locks a service account by client id, leaving people who share nothing with it alone', async () => {
    const ci = stack.cliEnv({ HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'ci-report-secret', XDG_CONFIG_HOME: `${stack.dir}/config-ci-lock` });
    expect((await runCli(['exec', 'app-pg', '-e', 'select 1'], ci)).code).toBe(0);
    const lock = await runCli(['lock', '--client-id', 'ci-report', '--reason', 'token leaked in a build log', '-o', 'json'], bob);
    const id = (JSON.parse(lock.stdout) as { lock: { id: string } }).lock.id;
    const refused = await runCli(['exec', 'app-pg', '-e', 'select 1'], ci);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain('client ci-report is locked by bob: token leaked in a build log');
    expect((await runCli(['exec', 'app-pg', '-e', 'select 1'], alice)).code).toBe(0);
    await runCli(['unlock', id], bob);
    const events = JSON.parse((await runCli(['audit', 'events', '-o', 'json'], alice)).stdout) as Array<{ type: string; data: Record<string, unknown> }>;
    expect(events.filter((e) => ['session-ended', 'lock-created', 'lock-lifted'].includes(e.type)).map((e) => [e.type, e.data.by])).toEqual([
      ['session-ended', 'bob'], ['lock-created', 'bob'], ['lock-lifted', 'bob'], ['lock-created', 'bob'], ['lock-lifted', 'bob'],
    ]);
    expect(JSON.stringify(events)).not.toContain(APP_PASSWORD);

    // The same audit events reached the stdout export, as JSON lines a log shipper can read.
    const lockEvents = () =>
      readText(stack.brokerLogPath).split('\n').filter((l) => l.startsWith('{"stream":')).map((l) => JSON.parse(l) as { stream: string; type: string })
        .filter((e) => e.stream === 'audit' && e.type.startsWith('lock-')).map((e) => e.type);
    // The export runs about once a second: wait for all four, not the first lift.
    for (let i = 0; i < 300 && lockEvents().length < 4; i++) await new Promise((r) => setTimeout(r, 100));
    expect(lockEvents()).toEqual(['lock-created', 'lock-lifted', 'lock-created', 'lock-lifted']);
  });

  it('ends a session idle past its connection\'s idleTimeout, and a busy one at its maxDuration', async () => {
    const short = new CliProcess(['connect', 'short-pg', '-o', 'json'], alice);
    try {
      const shortPort = await readyPort(short);
      const idle = await aliceClient(shortPort);
      const started = Date.now();
      expect(await idle.ended).toContain('the session was idle for 2s');
      expect(Date.now() - started).toBeGreaterThanOrEqual(1500);

      const busy = await aliceClient(shortPort);
      const opened = Date.now();
      // The broker's FATAL reaches whichever holds the connection: a ticking query in flight at that instant gets it
      // (and the client then only hears the socket close), otherwise the client's error event does.
      const queryErrors: string[] = [];
      const ticker = setInterval(() => void busy.client.query('select 1').catch((e: Error) => queryErrors.push(e.message)), 300);
      try {
        const ended = await busy.ended;
        expect([ended, ...queryErrors].join('\n')).toContain('the session reached its maximum duration of 5s');
      } finally {
        clearInterval(ticker);
      }
      expect(Date.now() - opened).toBeGreaterThanOrEqual(4000);
    } finally {
      await short.stop();
    }
  });

  it('ends a session when the token that opened it expires, where the connection asks for it (endWithToken)', async () => {
    const key = await importJWK(stack.issuer.signingKey, 'RS256');
    const now = Math.floor(Date.now() / 1000);
    const shortLived = await new SignJWT({ groups: ['dba'], client_id: 'hoopctl-cli', email: 'alice@example.com' })
      .setProtectedHeader({ alg: 'RS256', kid: stack.issuer.kid, typ: 'at+jwt' })
      .setIssuer(stack.issuer.issuer).setAudience(AUDIENCE).setSubject('alice').setIssuedAt(now).setExpirationTime(now + 12)
      .sign(key);
    const short = new CliProcess(['connect', 'token-pg', '-o', 'json'], { ...alice, HOOPCTL_TOKEN: shortLived });
    try {
      const shortPort = await readyPort(short);
      const { client, ended } = await aliceClient(shortPort);
      const ticker = setInterval(() => void client.query('select 1').catch(() => undefined), 300);
      try {
        expect(await ended).toContain('the access token that opened the session expired');
      } finally {
        clearInterval(ticker);
      }
    } finally {
      await short.stop();
    }
  });

  it('caps the sessions one identity may hold open on a connection at once (maxConcurrent), per identity', async () => {
    const one = new CliProcess(['connect', 'one-pg', '-o', 'json'], alice);
    try {
      const onePort = await readyPort(one);
      const first = await aliceClient(onePort);
      const second = new pg.Client({ host: '127.0.0.1', port: onePort, user: 'app', database: 'app', password: passwords.get(onePort) });
      await expect(second.connect()).rejects.toThrow(/alice@example\.com already has 1 session\(s\) open on one-pg/);
      const bobsOwn = await runCli(['exec', 'one-pg', '-e', 'select 1'], bob);
      expect(bobsOwn.code, bobsOwn.stderr).toBe(0);
      await first.client.end();
      await first.ended;
      let again: Awaited<ReturnType<typeof aliceClient>> | undefined;
      for (let i = 0; i < 20 && !again; i++) {
        again = await aliceClient(onePort).catch(async () => {
          await new Promise((r) => setTimeout(r, 100));
          return undefined;
        });
      }
      expect(again, 'a slot frees when the session ends').toBeDefined();
      await again!.client.end();
    } finally {
      await one.stop();
    }
  });
});
