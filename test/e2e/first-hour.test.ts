import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { parse, stringify } from 'yaml';
import { completeDeviceLogin } from '../support/device-user.js';
import { join } from 'node:path';
import { importJWK, SignJWT } from 'jose';
import { AUDIENCE, BIN, CliProcess, loginAs, mapLimit, runCli, runProcess, startStack, type Stack } from '../support/stack.js';
import { freePort } from '../../src/lib/net.js';

/**
 * The first hour of a new user: what they may use, where they stand, and the messages they meet, with the CLI as a process against a real broker, OIDC issuer and
 * PostgreSQL: each says what is actually wrong, and exits with the documented code.
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;

beforeAll(async () => {
  stack = await startStack({
    appPgPolicy: { defaultAction: 'allow', rules: [{ name: 'no-ddl', match: { category: ['ddl'] }, action: 'deny' }] },
    appPg: { description: 'the application database', reviews: { groups: ['leads'] } },
    extraConnections: [{ name: 'jit-pg', access: { groups: ['dba'], approval: { groups: ['leads'], maxDuration: '1m' } } }],
  });
  alice = await loginAs(stack, 'alice');
}, 120_000);

afterAll(async () => {
  await stack?.stop();
});

/** A token the issuer's own key signed, expired half an hour ago: only its expiry is wrong. */
async function expiredToken(): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ groups: ['dba'], client_id: 'ci' })
    .setProtectedHeader({ alg: 'RS256', kid: stack.issuer.kid, typ: 'at+jwt' })
    .setIssuer(stack.issuer.issuer).setAudience(AUDIENCE).setSubject('ci-job')
    .setIssuedAt(now - 3600).setExpirationTime(now - 1800)
    .sign(await importJWK(stack.issuer.signingKey, 'RS256'));
}

/** `connect -o json`'s line: its port, and its own password (in its URL) that psql presents on TCP. */
function tunnelReady(line: string): { port: number; password: string } {
  const ready = JSON.parse(line) as { port: number; url: string };
  return { port: ready.port, password: decodeURIComponent(new URL(ready.url).password) };
}

describe('usage errors', () => {
  it('exit 2 for an unknown command, an unknown option and a missing argument; --version answers 0', async () => {
    const env = stack.cliEnv();
    for (const args of [['frobnicate'], ['exec', 'app-pg', '--bogus'], ['exec'], []]) {
      const r = await runCli(args, env);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
    }
    expect((await runCli(['exec'], env)).stderr).toContain("missing required argument 'connection'");
    const version = await runCli(['--version'], env);
    expect(version).toMatchObject({ code: 0, stdout: '0.1.0\n' });
  });

  it('says "no SQL given" for exec with an empty standard input, and sends nothing', async () => {
    const r = await runCli(['exec', 'app-pg'], alice, '\n');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('no SQL given (standard input was empty)');
  });

  it('says --reason and --duration are not needed on a connection without just-in-time access', async () => {
    const r = await runCli(['connect', 'app-pg', '--reason', 'INC-1', '--duration', '10m'], alice);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('app-pg does not need a just-in-time access request');
  });

  it('names an unknown review: "no review rev_x"', async () => {
    const malformed = await runCli(['approve', 'rev_x', '--reason', 'ok'], alice);
    expect(malformed.code).toBe(1);
    expect(malformed.stderr).toContain('error: no review rev_x');
    const unknown = await runCli(['revoke', 'rev_00c0ffee', '--reason', 'ok'], alice);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('error: no review rev_00c0ffee');
  });
});

describe('the broker URL and the token', () => {
  it('says a URL nothing answers on cannot be reached, not "not logged in"', async () => {
    const nowhere = `http://127.0.0.1:${await freePort()}`;
    const r = await runCli(['sessions', '--broker', nowhere], stack.cliEnv());
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot reach the broker at ${nowhere}`);
    expect(r.stderr).not.toContain('not logged in');
  });

  it('says a URL that answers but is no hoopctl broker (the OIDC issuer) is not one', async () => {
    const issuer = new URL(stack.issuer.issuer).origin;
    const r = await runCli(['sessions', '--broker', issuer], stack.cliEnv());
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`the broker at ${issuer} did not return its login settings`);
    expect(r.stderr).toContain('check that the URL points at a hoopctl broker');
  });

  it('with an expired HOOPCTL_TOKEN, the hint names the variable instead of hoopctl login', async () => {
    const expired = await runCli(['sessions'], stack.cliEnv({ HOOPCTL_TOKEN: await expiredToken() }));
    expect(expired.code).toBe(3);
    // Sent all the same: the broker refuses it, and records the refusal.
    expect(expired.stderr).toMatch(/^error: .*expired.* \(the token in HOOPCTL_TOKEN\)$/m);
    expect(expired.stderr).toContain('unset HOOPCTL_TOKEN');
    expect(expired.stderr).not.toContain('hoopctl login');
    // One the broker rejects (not a JWT at all): its refusal, with the same hint.
    const rejected = await runCli(['sessions'], stack.cliEnv({ HOOPCTL_TOKEN: 'not-a-token' }));
    expect(rejected.code).toBe(3);
    expect(rejected.stderr).toMatch(/hint: refresh the token in HOOPCTL_TOKEN .*or unset HOOPCTL_TOKEN/);
  });
});

describe('a SQL syntax error', () => {
  it('is reported as a syntax error with the position, still refused and recorded', async () => {
    const r = await runCli(['exec', 'app-pg', '-e', 'select 1 frm items'], alice);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('syntax error at or near "items" at character 14');
    expect(r.stderr).toContain('SQLSTATE 42601');
    expect(r.stderr).not.toMatch(/denied/);

    // psql shows the position the way PostgreSQL's own errors do: the line and a caret under the word.
    const tunnel = new CliProcess(['connect', 'app-pg', '-o', 'json'], alice);
    try {
      const { port, password } = tunnelReady((await tunnel.waitFor(/\{.*\}\n/))[0]!);
      const psql = await runProcess('psql', ['-X', '-w', '-c', 'select 1 frm items'], { PATH: process.env.PATH, PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'x', PGDATABASE: 'app', PGPASSWORD: password });
      expect(psql.code).toBe(1);
      expect(psql.stderr).toContain('ERROR:  hoopctl: syntax error at or near "items" at character 14; the statement was not run');
      expect(psql.stderr).toContain('LINE 1: select 1 frm items');
    } finally {
      await tunnel.stop();
    }

    const sessions = JSON.parse((await runCli(['sessions', '-o', 'json'], alice)).stdout) as Array<{ id: string }>;
    const transcripts = await mapLimit(sessions, 4, async (s) => (await runCli(['replay', s.id, '-o', 'json'], alice)).stdout);
    const verdicts = transcripts.flatMap((t) => (JSON.parse(t) as { events: Array<{ type: string; data: Record<string, unknown> }> }).events)
      .filter((e) => e.type === 'verdict' && e.data.rule === 'unparseable');
    expect(verdicts.length).toBe(2);
    for (const v of verdicts) expect(v.data).toMatchObject({ action: 'deny', refused: true, message: 'syntax error at or near "items" at character 14' });
  });
});

describe('broker config errors', () => {
  it('name the file, line and column, and what was probably meant', async () => {
    const path = join(stack.dir, 'typos.yaml');
    writeFileSync(path, [
      'server: { listen: 127.0.0.1:8080 }',
      'auth:',
      '  issuers: [{ issuer: https://login.example.com, audience: x }]',
      'loging: { level: info }',
      'connections:',
      '  - name: pg',
      '    type: postgres',
      '    target: { host: db, database: app, sslmode: verify-fulll }',
      '    credentials: { user: u, password: { value: p } }',
      '    defualtAction: deny',
      '  - name: other',
      '    type: postgress',
      '',
    ].join('\n'));
    const r = await runCli(['broker', 'check', '--config', path], stack.cliEnv());
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`(root): unknown key "loging" (did you mean "logging"?) at ${path}:4:1`);
    expect(r.stderr).toContain(`connections[0]: unknown key "defualtAction" (did you mean "defaultAction"?) at ${path}:10:5`);
    expect(r.stderr).toMatch(new RegExp(`connections\\[0\\]\\.target\\.sslmode: .*\\(did you mean "verify-full"\\?\\) at ${path}:8:49`));
    expect(r.stderr).toContain(`connections[1].type: unknown value "postgress", expected one of postgres, ssh, http, kubernetes, tcp (did you mean "postgres"?) at ${path}:12:11`);
  });
});

describe('NO_COLOR', () => {
  it('turns colour off in the Ink approver console too', async () => {
    const screens: Record<string, string> = {};
    for (const [name, noColor] of [['plain', true], ['coloured', false]] as const) {
      const session = `hoop-nocolor-${name}-${process.pid}`;
      const env: NodeJS.ProcessEnv = { ...alice, TERM: 'xterm-256color' };
      if (noColor) env.NO_COLOR = '1';
      else delete env.NO_COLOR;
      const envArgs = Object.entries(env).map(([k, v]) => `${k}=${JSON.stringify(String(v))}`).join(' ');
      execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '120', '-y', '30', `env -i ${envArgs} ${process.execPath} ${BIN} approve`]);
      // -e keeps the escape sequences of colours in the captured screen.
      const screen = () => execFileSync('tmux', ['capture-pane', '-e', '-p', '-t', session], { encoding: 'utf8' });
      try {
        for (let i = 0; i < 600 && !/live/.test(screen()); i++) await new Promise((r) => setTimeout(r, 100));
        screens[name] = screen();
      } finally {
        execFileSync('tmux', ['kill-session', '-t', session]);
      }
    }
    expect(screens.coloured).toContain('live');
    expect(screens.coloured).toMatch(/\x1b\[3\dm/);
    expect(screens.plain).toContain('● live');
    expect(screens.plain).not.toMatch(/\x1b\[3\dm/);
  });
});

describe('hoopctl connections', () => {
  it('lists what this identity may use, with JIT access and reviews; JSON for scripts', async () => {
    const text = await runCli(['connections'], alice);
    expect(text.code).toBe(0);
    const lines = text.stdout.split('\n');
    expect(lines[0]).toMatch(/^NAME +TYPE +ACCESS +REVIEWS +DESCRIPTION$/);
    expect(lines.find((l) => l.startsWith('app-pg '))).toMatch(/^app-pg +postgres +direct +on +the application database$/);
    expect(lines.find((l) => l.startsWith('jit-pg '))).toMatch(/^jit-pg +postgres +just-in-time +-/);
    const json = JSON.parse((await runCli(['connections', '-o', 'json'], alice)).stdout) as Array<{ name: string; approval?: unknown; reviews?: boolean }>;
    expect(json.map((c) => c.name)).toEqual(['app-pg', 'jit-pg']);
    expect(json[0]).toMatchObject({ reviews: true });
    expect(json[1]!.approval).toMatchObject({ maxDuration: 60_000 });
    // A service account in no admitted group sees nothing, and is told so.
    const other = await runCli(['connections'], stack.cliEnv({ HOOPCTL_CLIENT_ID: 'ci-other', HOOPCTL_CLIENT_SECRET: 'ci-other-secret' }));
    expect(other).toMatchObject({ code: 0, stdout: 'no connections you may use\n' });
  });

  it('answers an unknown connection name with "did you mean" and the names there are', async () => {
    for (const args of [['exec', 'app-gp', '-e', 'select 1'], ['connect', 'app-gp']]) {
      const r = await runCli(args, alice);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain('error: no connection "app-gp" (did you mean "app-pg"?)');
      expect(r.stderr).toContain('hint: you may use: app-pg, jit-pg (hoopctl connections)');
    }
  });
});

describe('hoopctl status', () => {
  it('shows the broker, who I am, the token source and expiry, and the open tunnels', async () => {
    const tunnel = new CliProcess(['connect', 'app-pg', '-o', 'json'], alice);
    let port: number;
    try {
      port = JSON.parse((await tunnel.waitFor(/\{.*\}\n/))[0]!).port as number;
      const r = await runCli(['status'], alice);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(`broker   ${stack.brokerUrl}\n`);
      expect(r.stdout).toMatch(/^as       alice@example\.com \(human, groups: dba, auditors\)$/m);
      expect(r.stdout).toMatch(/^token    stored login, expires \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(in \d+ min\)$/m);
      expect(r.stdout).toMatch(new RegExp(`^  app-pg +postgres +127\\.0\\.0\\.1:${port} +\\d{4}-`, 'm'));
      const json = JSON.parse((await runCli(['status', '-o', 'json'], alice)).stdout) as { tunnels: Array<{ connection: string; port: number }> };
      expect(json.tunnels).toEqual([expect.objectContaining({ connection: 'app-pg', port })]);
    } finally {
      await tunnel.stop();
    }
    expect((await runCli(['status'], alice)).stdout).toContain('tunnels  none open\n');
  });

  it('says what is missing when not logged in, and exits 3', async () => {
    const r = await runCli(['status'], stack.cliEnv());
    expect(r.code).toBe(3);
    expect(r.stdout).toContain(`as       unknown: not logged in to ${stack.brokerUrl}`);
    expect(r.stdout).toContain('tunnels  none open');
  });
});

/** A second broker on the same issuer and database (its own port and store), run as a process like the first. */
async function startSecondBroker(): Promise<{ url: string; stop(): Promise<void> }> {
  const config = parse(readFileSync(stack.configPath, 'utf8')) as { server: { listen: string }; store: { path: string } };
  const port = await freePort();
  config.server.listen = `127.0.0.1:${port}`;
  config.store.path = join(stack.dir, 'second-broker.db');
  const path = join(stack.dir, 'second-broker.yaml');
  writeFileSync(path, stringify(config));
  const child = spawn(process.execPath, [BIN, 'broker', 'start', '--config', path], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      stderr += d;
      if (stderr.includes('broker listening on')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`second broker exited ${code}: ${stderr}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

describe('profiles', () => {
  it('keeps two brokers side by side, reuses a valid login, and takes localhost for 127.0.0.1', async () => {
    const second = await startSecondBroker();
    // As a person at a terminal: no HOOPCTL_BROKER, the saved settings decide.
    const env = { ...alice };
    delete env.HOOPCTL_BROKER;
    try {
      // alice's login (loginAs) saved the first broker as the default. Logging in again reuses it, however spelled.
      const again = await runCli(['login', '--broker', stack.brokerUrl.replace('127.0.0.1', 'localhost')], env);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).toMatch(/^Already logged in to http:\/\/localhost:\d+ as alice@example\.com \(token valid until /);
      expect(again.stdout).not.toContain('To sign in');

      const login = new CliProcess(['login', '--broker', second.url, '--profile', 'second', '--poll-interval', '0.2'], env);
      const [, uri] = await login.waitFor(/or open (\S+)/);
      await completeDeviceLogin(uri!, 'bob');
      expect(await login.exit()).toBe(0);

      const first = JSON.parse((await runCli(['whoami', '-o', 'json'], env)).stdout) as { broker: string; subject: string };
      expect(first).toMatchObject({ subject: 'alice' });
      expect(new URL(first.broker).hostname).toMatch(/^(localhost|127\.0\.0\.1)$/);
      expect(new URL(first.broker).port).toBe(new URL(stack.brokerUrl).port);
      for (const run of [['--profile', 'second', 'whoami', '-o', 'json'], ['whoami', '-o', 'json', '--profile=second']]) {
        expect(JSON.parse((await runCli(run, env)).stdout)).toMatchObject({ broker: second.url, subject: 'bob' });
      }
      expect(JSON.parse((await runCli(['whoami', '-o', 'json'], { ...env, HOOPCTL_PROFILE: 'second' })).stdout)).toMatchObject({ subject: 'bob' });

      const list = await runCli(['profiles'], env);
      expect(list.code).toBe(0);
      expect(list.stdout).toMatch(/^\* +\(default\) +http:\/\/\S+ +alice +until /m);
      expect(list.stdout).toMatch(new RegExp(`^ +second +${second.url.replace(/[.]/g, '\\.')} +bob +until `, 'm'));

      const typo = await runCli(['--profile', 'secnod', 'whoami'], env);
      expect(typo.code).toBe(2);
      expect(typo.stderr).toContain('error: no profile "secnod" (did you mean "second"?)');
    } finally {
      await second.stop();
    }
  });
});

describe('session search', () => {
  it('finds sessions by text, verdict and client application, and names each session\'s client', async () => {
    const tunnel = new CliProcess(['connect', 'app-pg', '-o', 'json'], alice);
    try {
      const { port, password } = tunnelReady((await tunnel.waitFor(/\{.*\}\n/))[0]!);
      const psqlEnv = { PATH: process.env.PATH, PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'x', PGDATABASE: 'app', PGPASSWORD: password };
      expect((await runProcess('psql', ['-X', '-w', '-c', 'drop table needle_from_psql'], psqlEnv)).stderr).toContain('denied by rule "no-ddl"');
      expect((await runProcess('psql', ['-X', '-w', '-c', 'select 1 as needle_from_psql'], psqlEnv)).code).toBe(0);
    } finally {
      await tunnel.stop();
    }
    expect((await runCli(['exec', 'app-pg', '-e', 'drop table needle_from_exec'], alice)).code).toBe(1);

    const denied = await runCli(['sessions', '--grep', 'NEEDLE_FROM', '--verdict', 'deny', '-n', '200'], alice);
    const rows = denied.stdout.trim().split('\n').slice(1);
    expect(rows).toHaveLength(2);
    expect(denied.stdout.split('\n')[0]).toMatch(/ CLIENT$/);
    expect(rows.filter((r) => / psql from 127\.0\.0\.1:\d+$/.test(r))).toHaveLength(1);

    const fromPsql = JSON.parse((await runCli(['sessions', '--grep', 'needle_from', '--client', 'psql', '-o', 'json', '-n', '200'], alice)).stdout) as Array<{ id: string }>;
    expect(fromPsql).toHaveLength(2);
    const deniedPsql = JSON.parse((await runCli(['sessions', '--grep', 'needle_from', '--verdict', 'deny', '--client', 'psql', '-o', 'json', '-n', '200'], alice)).stdout) as Array<{ id: string }>;
    expect(deniedPsql).toHaveLength(1);
    const replay = (await runCli(['replay', deniedPsql[0]!.id], alice)).stdout;
    // The verdict as a sentence, right under its statement (the JSON stays in -o json).
    expect(replay).toMatch(/query +drop table needle_from_psql\n +\+\d+\.\d{3}s  verdict    denied by rule no-ddl\n/);
    expect(replay).not.toMatch(/\{"statementSeq"/);

    expect((await runCli(['sessions', '--grep', 'needle_from', '--verdict', 'review'], alice)).stdout).toBe('no sessions match\n');
    expect((await runCli(['sessions', '--verdict', 'maybe'], alice)).code).toBe(2);
  });
});

describe('shell completion', () => {
  it('completes a connection name in a real bash (tmux), and prints zsh and fish scripts', async () => {
    // `hoopctl` on the PATH, as an installed CLI is.
    const binDir = join(stack.dir, 'completion-bin');
    execFileSync('mkdir', ['-p', binDir]);
    execFileSync('ln', ['-sf', BIN, join(binDir, 'hoopctl')]);
    const env: NodeJS.ProcessEnv = { ...alice, PATH: `${binDir}:${process.env.PATH}`, TERM: 'xterm-256color', PS1: '$ ' };
    const envArgs = Object.entries(env).map(([k, v]) => `${k}=${JSON.stringify(String(v))}`).join(' ');
    const session = `hoop-complete-${process.pid}`;
    execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '120', '-y', '30', `env -i ${envArgs} bash --norc --noprofile`]);
    const screen = () => execFileSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' });
    const waitForScreen = async (pattern: RegExp) => {
      for (let i = 0; i < 600; i++) {
        if (pattern.test(screen())) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`screen never showed ${pattern}:\n${screen()}`);
    };
    try {
      execFileSync('tmux', ['send-keys', '-t', session, '-l', 'source <(hoopctl completion bash) && echo completion-loaded']);
      execFileSync('tmux', ['send-keys', '-t', session, 'Enter']);
      await waitForScreen(/^completion-loaded$/m);
      execFileSync('tmux', ['send-keys', '-t', session, '-l', 'hoopctl exec app-']);
      execFileSync('tmux', ['send-keys', '-t', session, 'Tab']);
      // capture-pane drops the trailing space bash adds after a completed word.
      await waitForScreen(/^\$ hoopctl exec app-pg$/m);
    } finally {
      execFileSync('tmux', ['kill-session', '-t', session]);
    }
    for (const [shell, marker] of [['zsh', 'compdef _hoopctl hoopctl'], ['fish', 'complete -c hoopctl']] as const) {
      const r = await runCli(['completion', shell], alice);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(marker);
    }
    expect((await runCli(['completion', 'tcsh'], alice)).code).toBe(2);
  }, 180_000);
});

describe('hoopctl psql', () => {
  it('runs the real psql through a tunnel it opens and closes, passing psql\'s exit status through', async () => {
    const ok = await runCli(['psql', 'app-pg', '--', '-X', '-A', '-t', '-c', 'select 6 * 7 as answer'], alice);
    expect(ok.stderr).toBe('');
    expect(ok).toMatchObject({ code: 0, stdout: '42\n' });
    // psql's own failure, its own status: the SQL error is psql's message, not hoopctl's.
    const failed = await runCli(['psql', 'app-pg', '--', '-X', '-v', 'ON_ERROR_STOP=1', '-c', 'select 1/0'], alice);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain('ERROR:  division by zero');
    expect(failed.stderr).not.toContain('error:');
  });
});

describe('hoopctl withdraw', () => {
  it('lets a requester withdraw their own pending request, and nobody else', async () => {
    const waiting = new CliProcess(['connect', 'jit-pg', '--reason', 'INC-7: look at orders', '--duration', '1m', '-o', 'json'], alice);
    try {
      let pending: { id: string } | undefined;
      for (let i = 0; i < 300 && !pending; i++) {
        const list = JSON.parse((await runCli(['reviews', '-o', 'json'], alice)).stdout) as Array<{ id: string; connection: string; status: string }>;
        pending = list.find((r) => r.connection === 'jit-pg' && r.status === 'pending');
        if (!pending) await new Promise((r) => setTimeout(r, 100));
      }
      expect(pending).toBeDefined();
      // While it waits it says so on stderr, with the review's id; stdout keeps only the JSON line (none yet).
      expect(waiting.stderr).toContain('filing an access request for jit-pg…\n');
      expect(waiting.stderr).toContain(`waiting for approval of ${pending!.id} by leads (Ctrl-C to stop)\n`);
      expect(waiting.stdout).toBe('');
      const other = await runCli(['withdraw', pending!.id], stack.cliEnv({ HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'ci-report-secret' }));
      expect(other.code).toBe(1);
      expect(other.stderr).toContain(`no review ${pending!.id} of yours`);
      const mine = await runCli(['withdraw', pending!.id, '--reason', 'fixed from the runbook'], alice);
      expect(mine).toMatchObject({ code: 0, stdout: `${pending!.id}: withdrawn\n` });
      // The waiting connect learns it at once and gives up.
      expect(await waiting.exit()).not.toBe(0);
      const withdrawn = JSON.parse((await runCli(['reviews', '--status', 'withdrawn', '-o', 'json'], alice)).stdout) as Array<{ id: string }>;
      expect(withdrawn.map((r) => r.id)).toContain(pending!.id);
      expect((await runCli(['withdraw', pending!.id], alice)).stderr).toContain('is withdrawn, not pending');
      // The audit stream's review rows name the review and its requester (alice is an auditor here).
      const rows = (await runCli(['audit', 'events'], alice)).stdout.split('\n').filter((l) => l.includes(pending!.id));
      expect(rows.find((l) => / review-requested /.test(l))).toContain(`${pending!.id}  requested by alice  access to jit-pg  (INC-7: look at orders)`);
      expect(rows.find((l) => / review-withdrawn /.test(l))).toContain(`${pending!.id}  requested by alice  access to jit-pg  (fixed from the runbook)`);
    } finally {
      await waiting.stop();
    }
  });
});

describe('connect remembers the port', () => {
  /** Opens `connect app-pg -o json` with `args`, reads its port and what it said on stderr, and closes it. */
  async function connectOnce(args: string[] = []): Promise<{ port: number; stderr: string }> {
    const tunnel = new CliProcess(['connect', 'app-pg', '-o', 'json', ...args], alice);
    try {
      const { port } = tunnelReady((await tunnel.waitFor(/\{.*\}\n/))[0]!);
      expect(tunnel.stdout.split('\n').filter(Boolean)).toHaveLength(1);
      return { port, stderr: tunnel.stderr };
    } finally {
      expect(await tunnel.stop()).toBe(0);
    }
  }

  it('listens on the same port as last time without --port; --port wins; a taken one falls back with a note', async () => {
    const first = await connectOnce();
    // What it waited for went to stderr (not a terminal: plain lines); stdout stayed the one JSON line.
    expect(first.stderr).toBe(`asking the broker at ${stack.brokerUrl} about app-pg…\n`);
    const again = await connectOnce();
    expect(again.port).toBe(first.port);
    // Someone else holds it now: a free port, and a note saying why.
    const squatter = createServer();
    await new Promise<void>((r) => squatter.listen(first.port, '127.0.0.1', r));
    try {
      const moved = await connectOnce();
      expect(moved.port).not.toBe(first.port);
      expect(moved.stderr).toContain(`port ${first.port} (this connection's last) is taken now; listening on a free one instead`);
    } finally {
      await new Promise((r) => squatter.close(r));
    }
    const chosen = await freePort();
    expect((await connectOnce(['--port', String(chosen)])).port).toBe(chosen);
    expect((await connectOnce()).port).toBe(chosen);
    // An explicit --port that is taken is still an error, not a fallback.
    const held = createServer();
    await new Promise<void>((r) => held.listen(chosen, '127.0.0.1', r));
    try {
      const r = await runCli(['connect', 'app-pg', '--port', String(chosen)], alice);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`cannot listen on 127.0.0.1:${chosen}`);
    } finally {
      await new Promise((r) => held.close(r));
    }
  });
});
