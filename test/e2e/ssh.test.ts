import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { BIN, CliProcess, loginAs, runCli, startStack, type Stack } from '../support/stack.js';
import { keygen, startSshd, type TestSshd } from '../../src/dev/sshd.js';
import { runSsh, sshOptions } from '../support/ssh-proxy-harness.js';
import type { Review } from '../../src/api/review.js';
import type { SessionRow, StoredEvent } from '../../src/api/session.js';

/**
 * SSH end to end: a real OpenSSH sshd, the broker as a process holding the only key that sshd accepts, and
 * OpenSSH's own ssh/scp plus `hoopctl exec` and `hoopctl replay` as a user runs them.
 */
let sshd: TestSshd;
let stack: Stack;
let alice: NodeJS.ProcessEnv;
let bob: NodeJS.ProcessEnv;
let tunnel: CliProcess;
let port: number;
let knownHosts: string;
const cliOutput: string[] = [];

/** The tunnel's own key (`connect` writes it and prints `ssh -i …`): ssh, scp and sftp present it. */
let identity: string[];
const ssh = (args: string[], input?: string) => runSsh(['-p', String(port), ...sshOptions(knownHosts), ...identity, ...args], input);

async function eventsOf(id: string): Promise<{ session: SessionRow; events: StoredEvent[] }> {
  const r = await runCli(['replay', id, '-o', 'json'], alice);
  return JSON.parse(r.stdout) as { session: SessionRow; events: StoredEvent[] };
}

async function latestSession(match: (events: StoredEvent[]) => boolean): Promise<string> {
  const r = await runCli(['sessions', '--connection', 'ssh-host', '-o', 'json'], alice);
  for (const s of JSON.parse(r.stdout) as SessionRow[]) {
    if (match((await eventsOf(s.id)).events)) return s.id;
  }
  throw new Error('no matching session');
}

beforeAll(async () => {
  sshd = await startSshd();
  const sshTarget = { host: sshd.host, port: sshd.port, user: sshd.user };
  keygen(join(sshd.dir, 'not-the-host'), 'other');
  const otherKey = readFileSync(join(sshd.dir, 'not-the-host.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
  stack = await startStack({
    extraConnections: [
      {
        name: 'ssh-host', type: 'ssh',
        target: { ...sshTarget, hostKey: sshd.hostPublicKey },
        credentials: { privateKey: { file: sshd.clientKeyPath } },
        access: { groups: ['dba'] },
        reviews: { groups: ['leads'], timeout: '20s' },
        rules: [
          { name: 'no-rm-rf', match: { command: ['rm -rf *', 'rm --recursive --force *'] }, action: 'deny' },
          { name: 'no-sudo', match: { command: 'sudo *' }, action: 'deny' },
          { name: 'held-touch', match: { command: 'touch *' }, action: 'review' },
        ],
        mask: { detectors: ['email'] },
      },
      { name: 'ssh-wrong-key', type: 'ssh', target: { ...sshTarget, hostKey: otherKey }, credentials: { privateKey: { file: sshd.clientKeyPath } }, access: { groups: ['dba'] } },
    ],
  });
  [alice, bob] = await Promise.all([loginAs(stack, 'alice'), loginAs(stack, 'bob')]);
  tunnel = new CliProcess(['connect', 'ssh-host', '-o', 'json'], alice);
  const ready = JSON.parse((await tunnel.waitFor(/\{.*\}\n/))[0]!) as { port: number; hostKey: string; hostKeyFingerprint: string; ssh: string; identityFile: string };
  cliOutput.push(tunnel.stdout);
  port = ready.port;
  identity = ['-i', ready.identityFile, '-o', 'IdentitiesOnly=yes'];
  expect(ready.ssh).toBe(`ssh -i ${ready.identityFile} -o IdentitiesOnly=yes -p ${port} ${sshd.user}@127.0.0.1`);
  knownHosts = join(stack.dir, 'known_hosts');
  writeFileSync(knownHosts, `[127.0.0.1]:${port} ${ready.hostKey}\n`);
}, 120_000);

afterAll(async () => {
  await tunnel?.stop().catch(() => undefined);
  await stack?.stop();
  await sshd?.stop();
});

describe('hoopctl connect to an ssh connection', () => {
  it('prints the ssh line and the broker host key fingerprint that ssh then sees', async () => {
    const text = new CliProcess(['connect', 'ssh-host'], alice);
    try {
      const [, key, p] = await text.waitFor(/ssh -i (\S+) -o IdentitiesOnly=yes -p (\d+) \S+@127\.0\.0\.1\n/);
      const [, fp] = await text.waitFor(/host key fingerprint to expect: (SHA256:\S+)/);
      cliOutput.push(text.stdout);
      // What ssh prints for an unknown host is the same fingerprint.
      const first = await runSsh(['-p', p!, '-i', key!, '-o', 'IdentitiesOnly=yes', '-F', '/dev/null', '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${join(stack.dir, 'empty_known_hosts')}`, '-o', 'StrictHostKeyChecking=accept-new', `${sshd.user}@127.0.0.1`, 'true']);
      expect(first.code, first.stderr).toBe(0);
      const added = readFileSync(join(stack.dir, 'empty_known_hosts'), 'utf8').trim().split(' ');
      const kf = join(stack.dir, 'seen.pub');
      writeFileSync(kf, `${added[1]} ${added[2]}\n`);
      expect(execFileSync('ssh-keygen', ['-lf', kf], { encoding: 'utf8' })).toContain(fp!);
    } finally {
      await text.stop();
    }
  });
});

describe('ssh and scp through the tunnel', () => {
  it('runs commands and brings their exit status back', async () => {
    const ok = await ssh([`${sshd.user}@127.0.0.1`, 'echo "hello from $(hostname)"']);
    expect(ok.code, ok.stderr).not.toBe(0); // $(…) is dynamic: the connection has rules, so it is refused
    const plain = await ssh([`${sshd.user}@127.0.0.1`, 'echo hello; id -un']);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).toBe(`hello\n${sshd.user}\n`);
    const three = await ssh([`${sshd.user}@127.0.0.1`, 'exit 3']);
    expect(three.code).toBe(3);
  });

  it('copies a file with scp', async () => {
    const src = join(stack.dir, 'upload.bin');
    writeFileSync(src, Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7) % 256)));
    const dest = join(sshd.dir, 'copied.bin');
    const r = await runSsh(['-P', String(port), ...sshOptions(knownHosts), ...identity, src, `${sshd.user}@127.0.0.1:${dest}`], undefined, 'scp');
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(dest).equals(readFileSync(src))).toBe(true);
    const id = await latestSession((ev) => ev.some((e) => e.type === 'sftp' && e.data.path === dest));
    expect((await runCli(['replay', id], alice)).stdout).toContain(`sftp       open ${dest} (write,creat`);
  });

  it('lists, uploads and downloads with sftp, each operation recorded', async () => {
    const local = join(stack.dir, 'sftp-up.txt');
    writeFileSync(local, 'sent with sftp\n');
    const remote = join(sshd.dir, 'sftp-remote.txt');
    const back = join(stack.dir, 'sftp-back.txt');
    const batch = join(stack.dir, 'sftp.batch');
    writeFileSync(batch, `put ${local} ${remote}\nls ${sshd.dir}\nget ${remote} ${back}\n`);
    const r = await runSsh(['-P', String(port), ...sshOptions(knownHosts), ...identity, '-b', batch, `${sshd.user}@127.0.0.1`], undefined, 'sftp');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('sftp-remote.txt');
    expect(readFileSync(remote, 'utf8')).toBe('sent with sftp\n');
    expect(readFileSync(back, 'utf8')).toBe('sent with sftp\n');
    const id = await latestSession((ev) => ev.some((e) => e.type === 'sftp' && e.data.path === remote));
    const transcript = (await runCli(['replay', id], alice)).stdout;
    expect(transcript).toContain(`sftp       open ${remote} (write,creat`);
    expect(transcript).toContain(`sftp       open ${remote} (read`);
  });

  it.each([
    ['rm -rf /tmp/hoop-nothing', 'no-rm-rf'],
    ['echo hi; rm -rf /tmp/hoop-nothing', 'no-rm-rf'],
    ['echo hi && "rm" -fr /tmp/hoop-nothing', 'no-rm-rf'],
    ["bash -c 'rm -rf /tmp/hoop-nothing'", 'no-rm-rf'],
    ['sudo -u root id', 'no-sudo'],
  ])('denies %j naming rule %s, exit status 1', async (command, rule) => {
    const r = await ssh([`${sshd.user}@127.0.0.1`, command]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`policy rule "${rule}"`);
  });

  it('holds a reviewed command until an approver approves it', async () => {
    const marker = join(sshd.dir, 'held-marker');
    const child = spawn('ssh', ['-p', String(port), ...sshOptions(knownHosts), ...identity, `${sshd.user}@127.0.0.1`, `echo before; touch ${marker} && echo touched`]);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exit = new Promise<number>((r) => child.on('close', (c) => r(c ?? -1)));
    let review: Review | undefined;
    for (let i = 0; i < 100 && !review; i++) {
      const list = JSON.parse((await runCli(['reviews', '-o', 'json'], bob)).stdout) as Review[];
      review = list.find((r) => r.statement?.includes('held-marker') && r.status === 'pending');
      if (!review) await new Promise((r) => setTimeout(r, 100));
    }
    expect(review).toMatchObject({ rule: 'held-touch', requester: { subject: 'alice' } });
    expect(() => statSync(marker)).toThrow();
    const approve = await runCli(['approve', review!.id, '--reason', 'ticket OPS-1'], bob);
    expect(approve.code, approve.stderr).toBe(0);
    expect(await exit).toBe(0);
    expect(out).toBe('before\ntouched\n');
    expect(err).toContain(`command held for review ${review!.id}`);
    expect(statSync(marker).isFile()).toBe(true);
  });

  it('refuses ssh -L port forwarding by default', async () => {
    const local = await import('../../src/lib/net.js').then((m) => m.freePort());
    const fwd = spawn('ssh', ['-p', String(port), ...sshOptions(knownHosts), ...identity, '-N', '-L', `${local}:127.0.0.1:${sshd.port}`, `${sshd.user}@127.0.0.1`]);
    let fwdErr = '';
    fwd.stderr.on('data', (d) => (fwdErr += d));
    try {
      let got: string | undefined;
      for (let i = 0; i < 50 && got === undefined; i++) {
        got = await new Promise<string | undefined>((resolve) => {
          const s = connect(local, '127.0.0.1');
          let data = '';
          s.on('data', (d) => (data += d));
          s.on('error', () => resolve(undefined));
          s.on('close', () => resolve(data));
        });
        if (got === undefined) await new Promise((r) => setTimeout(r, 100));
      }
      // Through a working forward, sshd would greet with "SSH-2.0-OpenSSH…".
      expect(got).toBe('');
      await new Promise((r) => setTimeout(r, 200));
      expect(fwdErr).toMatch(/administratively prohibited|open failed/);
    } finally {
      fwd.kill();
    }
  });
});

describe('hoopctl exec for ssh', () => {
  it('runs a command, streams output, masks it and propagates the exit status', async () => {
    const up = await runCli(['exec', 'ssh-host', '--', 'uptime'], alice);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stdout).toMatch(/load average/);
    const three = await runCli(['exec', 'ssh-host', '--', 'sh', '-c', 'exit 3'], alice);
    expect(three.code, three.stderr).toBe(3);
    const masked = await runCli(['exec', 'ssh-host', '--', 'echo', 'mail bob@example.com'], alice);
    expect(masked.stdout).toBe('mail [REDACTED:email]\n');
    const stdin = await runCli(['exec', 'ssh-host', '--', 'wc -l'], alice, 'a\nb\nc\n');
    expect(stdin.stdout.trim()).toBe('3');
    const denied = await runCli(['exec', 'ssh-host', '--', 'echo ok; sudo id'], alice);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain('policy rule "no-sudo"');
    cliOutput.push(up.stdout, up.stderr, three.stdout, denied.stderr);
  });

  it('--no-wait: a held command exits 5 naming the review; once approved, running it again runs it once', async () => {
    const marker = join(sshd.dir, 'no-wait-marker');
    const first = await runCli(['exec', 'ssh-host', '--no-wait', '--', `touch ${marker}`], alice);
    expect(first.code, first.stderr).toBe(5);
    const id = /review (rev_[0-9a-f]+)/.exec(first.stderr)?.[1];
    expect(id).toBeTruthy();
    expect(() => statSync(marker)).toThrow();
    const approve = await runCli(['approve', id!, '--reason', 'ok'], bob);
    expect(approve.code, approve.stderr).toBe(0);
    const again = await runCli(['exec', 'ssh-host', '--no-wait', '--', `touch ${marker}`], alice);
    expect(again.code, again.stderr).toBe(0);
    expect(statSync(marker).isFile()).toBe(true);
    const third = await runCli(['exec', 'ssh-host', '--no-wait', '--', `touch ${marker}`], alice);
    expect(third.code).toBe(5);
  });

  it('refuses the session when the backend host key does not match the pin', async () => {
    const r = await runCli(['exec', 'ssh-wrong-key', '--', 'echo', 'should-not-run'], alice);
    expect(r.code).not.toBe(0);
    expect(r.stdout).not.toContain('should-not-run');
    expect(r.stderr).toContain('does not match the pinned key');
    const list = JSON.parse((await runCli(['sessions', '--connection', 'ssh-wrong-key', '-o', 'json'], alice)).stdout) as SessionRow[];
    const { events } = await eventsOf(list[0]!.id);
    expect(events.find((e) => e.type === 'host-key-mismatch')?.data).toMatchObject({ presented: sshd.hostFingerprint });
    expect(list[0]!.status).toBe('failed');
  });
});

describe('recorded terminals', () => {
  it('records an interactive shell driven in tmux, and replay reproduces its output', async () => {
    const name = `hoop-ssh-${process.pid}`;
    const cmd = ['ssh', '-p', String(port), ...sshOptions(knownHosts), ...identity, '-tt', `${sshd.user}@127.0.0.1`].map((a) => `'${a}'`).join(' ');
    execFileSync('tmux', ['new-session', '-d', '-s', name, '-x', '100', '-y', '30', `env -i PATH=${process.env.PATH} TERM=xterm ${cmd}`]);
    const screen = () => execFileSync('tmux', ['capture-pane', '-p', '-t', name], { encoding: 'utf8' });
    const waitScreen = async (re: RegExp) => {
      for (let i = 0; i < 100; i++) {
        if (re.test(screen())) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`screen never matched ${re}:\n${screen()}`);
    };
    try {
      await waitScreen(/[$#]\s*$/m);
      execFileSync('tmux', ['send-keys', '-t', name, '-l', 'echo tmux-marker-$((20+22))']);
      execFileSync('tmux', ['send-keys', '-t', name, 'Enter']);
      await waitScreen(/^tmux-marker-42$/m);
      execFileSync('tmux', ['resize-window', '-t', name, '-x', '90', '-y', '25']);
      await new Promise((r) => setTimeout(r, 300));
      execFileSync('tmux', ['send-keys', '-t', name, '-l', 'exit']);
      execFileSync('tmux', ['send-keys', '-t', name, 'Enter']);
      for (let i = 0; i < 50; i++) {
        try {
          execFileSync('tmux', ['has-session', '-t', name], { stdio: 'ignore' });
          await new Promise((r) => setTimeout(r, 100));
        } catch {
          break;
        }
      }
    } finally {
      try {
        execFileSync('tmux', ['kill-session', '-t', name], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
    let id = '';
    for (let i = 0; i < 50 && !id; i++) {
      id = await latestSession((ev) => ev.some((e) => e.type === 'close') && ev.some((e) => e.type === 'cast' && JSON.stringify(e.data).includes('tmux-marker-42'))).catch(() => '');
      if (!id) await new Promise((r) => setTimeout(r, 100));
    }
    expect(id).toMatch(/^ses_/);
    const { events } = await eventsOf(id);
    const casts = events.filter((e) => e.type === 'cast').flatMap((e) => (e.data as { events: Array<[number, string, string]> }).events);
    expect(casts.some(([, k, d]) => k === 'r' && d === '90x25')).toBe(true);
    expect(casts.some(([, k, d]) => k === 'i' && d.includes('echo'))).toBe(true);

    const replay = await runCli(['replay', id], alice);
    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stdout).toContain('shell      terminal xterm 100x30');
    expect(replay.stdout).toMatch(/--- terminal, channel \d+ ---[\s\S]*tmux-marker-42[\s\S]*--- end of terminal ---/);

    const verify = await runCli(['audit', 'verify', id], alice);
    expect(verify.stdout).toContain('chain intact');

    // In a real terminal the recording plays with its timing: at 1/20 speed nothing shows yet; → seeks forward
    // (past the marker), q stops.
    const player = `hoop-replay-${process.pid}`;
    const envArgs = Object.entries(alice).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}='${v}'`).join(' ');
    execFileSync('tmux', ['new-session', '-d', '-s', player, '-x', '120', '-y', '40', `env -i ${envArgs} TERM=xterm ${process.execPath} ${BIN} replay ${id} --speed 0.05; sleep 30`]);
    const playerScreen = () => execFileSync('tmux', ['capture-pane', '-p', '-t', player], { encoding: 'utf8' });
    const waitPlayer = async (re: RegExp) => {
      for (let i = 0; i < 100; i++) {
        if (re.test(playerScreen())) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`player never showed ${re}:\n${playerScreen()}`);
    };
    try {
      await waitPlayer(/space pause/);
      await new Promise((r) => setTimeout(r, 300));
      expect(playerScreen()).not.toContain('tmux-marker-42');
      for (let i = 0; i < 4; i++) execFileSync('tmux', ['send-keys', '-t', player, 'Right']);
      await waitPlayer(/^tmux-marker-42/m);
      execFileSync('tmux', ['send-keys', '-t', player, 'q']);
      await waitPlayer(/replay (stopped|ended)/);
    } finally {
      execFileSync('tmux', ['kill-session', '-t', player], { stdio: 'ignore' });
    }

    const castFile = join(stack.dir, 'session.cast');
    const asCast = await runCli(['replay', id, '--format', 'asciicast', '--out', castFile, '--skip-idle', '0.5'], alice);
    expect(asCast.code, asCast.stderr).toBe(0);
    const [header, ...lines] = readFileSync(castFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(header).toMatchObject({ version: 2, width: 100, height: 30, env: { TERM: 'xterm' }, idle_time_limit: 0.5 });
    expect(lines.filter((l: [number, string, string]) => l[1] === 'o').map((l: [number, string, string]) => l[2]).join('')).toContain('tmux-marker-42');
    const times = lines.map((l: [number]) => l[0]);
    expect(times).toEqual([...times].sort((a, b) => a - b));
  });

  it('exec transcripts show the command, its masked output and exit status', async () => {
    const id = await latestSession((ev) => ev.some((e) => e.type === 'command' && e.data.command === "echo 'mail [REDACTED:email]'"));
    const replay = await runCli(['replay', id], alice);
    expect(replay.stdout).toContain("command    echo 'mail [REDACTED:email]'");
    expect(replay.stdout).not.toContain('bob@example.com');
    expect(replay.stdout).toContain('| mail [REDACTED:email]');
    expect(replay.stdout).toContain('→ exit 0');
  });
});

describe('the user holds no backend key', () => {
  it('nothing on the client side contains the key the broker logs in with', () => {
    const keyBody = sshd.clientPrivateKey.split('\n').slice(1, -2).join('');
    const files: string[] = [];
    const walk = (d: string) => {
      for (const f of readdirSync(d, { withFileTypes: true })) {
        if (f.isDirectory()) walk(join(d, f.name));
        else files.push(join(d, f.name));
      }
    };
    for (const d of readdirSync(stack.dir).filter((n) => n.startsWith('config-') || n.startsWith('client-'))) walk(join(stack.dir, d));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      const text = readFileSync(f, 'utf8');
      // The one private key on this side is the tunnel's own (it opens that tunnel only), never the broker's.
      // The one private key on this side is the tunnel's own (it opens that tunnel only), never the broker's; every
      // OpenSSH key starts with the same bytes, so it is compared whole.
      if (/\/hoopctl\/ssh\/ssh-host\.\d+\.key$/.test(f)) {
        expect(text.replace(/\s/g, '')).not.toContain(keyBody);
        continue;
      }
      expect(text).not.toContain('OPENSSH PRIVATE KEY');
      expect(text).not.toContain(keyBody.slice(0, 40));
    }
    for (const out of [...cliOutput, tunnel.stdout, tunnel.stderr]) {
      expect(out).not.toContain('PRIVATE KEY');
      expect(out).not.toContain(keyBody.slice(0, 40));
    }
    expect(readFileSync(stack.brokerLogPath, 'utf8')).not.toContain(keyBody.slice(0, 40));
  });
});

