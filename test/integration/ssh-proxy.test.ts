import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSshd, type TestSshd } from '../../src/dev/sshd.js';
import { sshConnection, startSshProxy, type SshProxyHarness } from '../support/ssh-proxy-harness.js';

let sshd: TestSshd;
let proxy: SshProxyHarness;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hoop-ssh-it-'));
  sshd = await startSshd();
  proxy = await startSshProxy({
    dir,
    connection: sshConnection(sshd, {
      rules: [
        { name: 'no-rm-rf', match: { command: ['rm -rf *'] }, action: 'deny' },
        { name: 'no-sudo', match: { command: 'sudo *' }, action: 'deny' },
      ],
      mask: { detectors: ['email'] },
    }),
  });
});

afterAll(async () => {
  await proxy?.close();
  await sshd?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('ssh through the proxy', () => {
  it('runs a command and returns its output and exit status', async () => {
    const r = await proxy.ssh(['x@127.0.0.1', 'echo hello; echo oops >&2; exit 7']);
    expect(r.stdout).toBe('hello\n');
    expect(r.stderr).toContain('oops');
    expect(r.code).toBe(7);
  });

  it('denies rm -rf in a chain, naming the rule, with exit status 1', async () => {
    const r = await proxy.ssh(['x@127.0.0.1', 'echo hi; "rm" -rf /tmp/nothing-here']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('denied by policy rule "no-rm-rf"');
  });

  it('masks exec output and records command, output and exit', async () => {
    const r = await proxy.ssh(['x@127.0.0.1', 'echo contact: bob@example.com']);
    expect(r.stdout).toBe('contact: [REDACTED:email]\n');
    const out = proxy.events.filter((e) => e.type === 'output').map((e) => e.data.data).join('');
    expect(out).toContain('contact: [REDACTED:email]');
    expect(JSON.stringify(proxy.events)).not.toContain('bob@example.com');
  });
});

describe('channels other than exec', () => {
  it('copies a file with scp (sftp subsystem) both ways', async () => {
    const { writeFileSync, readFileSync } = await import('node:fs');
    const { runSsh, sshOptions } = await import('../support/ssh-proxy-harness.js');
    const src = join(dir, 'upload.txt');
    writeFileSync(src, 'payload over scp\n'.repeat(1000));
    const remote = join(dir, 'remote-copy.txt');
    const up = await runSsh(['-P', String(proxy.port), ...sshOptions(proxy.knownHosts), src, `x@127.0.0.1:${remote}`], undefined, 'scp');
    expect(up.code, up.stderr).toBe(0);
    expect(readFileSync(remote, 'utf8')).toBe(readFileSync(src, 'utf8'));
    const back = join(dir, 'downloaded.txt');
    const down = await runSsh(['-P', String(proxy.port), ...sshOptions(proxy.knownHosts), `x@127.0.0.1:${remote}`, back], undefined, 'scp');
    expect(down.code, down.stderr).toBe(0);
    expect(readFileSync(back, 'utf8')).toBe(readFileSync(src, 'utf8'));
    expect(proxy.events.some((e) => e.type === 'subsystem' && e.data.name === 'sftp' && e.data.verdict === 'allow')).toBe(true);
    const ops = proxy.events.filter((e) => e.type === 'sftp').map((e) => [e.data.op, e.data.path, e.data.mode]);
    expect(ops).toContainEqual(['open', remote, expect.stringContaining('write')]);
    expect(ops).toContainEqual(['open', remote, 'read']);
  });

  it('refuses port forwarding by default and records it', async () => {
    const r = await proxy.ssh(['-W', `127.0.0.1:${sshd.port}`, 'x@127.0.0.1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/open failed|administratively prohibited/i);
    expect(proxy.events.some((e) => e.type === 'forward-refused' && e.data.destination === `127.0.0.1:${sshd.port}`)).toBe(true);
  });

  it('records a PTY shell as asciicast events with input, output and timing', async () => {
    const r = await proxy.ssh(['-tt', 'x@127.0.0.1'], 'echo marker-$((6*7))\nexit 3\n');
    expect(r.code).toBe(3);
    expect(r.stdout).toContain('marker-42');
    const terminal = proxy.events.find((e) => e.type === 'terminal');
    expect(terminal?.data).toMatchObject({ version: 2, width: expect.any(Number), height: expect.any(Number) });
    const mine = proxy.events.filter((e) => e.sessionId === terminal!.sessionId);
    const casts = mine.filter((e) => e.type === 'cast').flatMap((e) => e.data.events as Array<[number, string, string]>);
    expect(casts.filter(([, k]) => k === 'o').map(([, , d]) => d).join('')).toContain('marker-42');
    expect(casts.filter(([, k]) => k === 'i').map(([, , d]) => d).join('')).toContain('echo marker');
    const times = casts.map(([t]) => t);
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(mine.find((e) => e.type === 'exit')?.data.code).toBe(3);
  });
});

describe('host key pinning', () => {
  it('refuses the session when the backend presents another key, and says why', async () => {
    const { keygen } = await import('../../src/dev/sshd.js');
    const { readFileSync } = await import('node:fs');
    keygen(join(dir, 'other'), 'other');
    const other = readFileSync(join(dir, 'other.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
    const wrong = await startSshProxy({ dir, connection: sshConnection(sshd, { target: { host: sshd.host, port: sshd.port, user: sshd.user, hostKey: other } }) });
    try {
      const r = await wrong.ssh(['-o', 'LogLevel=INFO', 'x@127.0.0.1', 'echo should-not-run']);
      expect(r.code).toBe(255);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain('does not match the pinned key');
      const ev = wrong.events.find((e) => e.type === 'host-key-mismatch');
      expect(ev?.data).toMatchObject({ expected: other, presented: sshd.hostFingerprint });
      expect(wrong.summaries[0]).toMatchObject({ outcome: 'failed' });
    } finally {
      await wrong.close();
    }
  });

  it('accepts a pin given as a SHA256 fingerprint', async () => {
    const byFingerprint = await startSshProxy({ dir, connection: sshConnection(sshd, { target: { host: sshd.host, port: sshd.port, user: sshd.user, hostKey: sshd.hostFingerprint } }) });
    try {
      const r = await byFingerprint.ssh(['x@127.0.0.1', 'echo pinned']);
      expect(r.stdout).toBe('pinned\n');
    } finally {
      await byFingerprint.close();
    }
  });
});

describe('reviews', () => {
  it('holds a command until the review decides, telling the client on stderr', async () => {
    const held: string[] = [];
    const reviewed = await startSshProxy({
      dir,
      connection: sshConnection(sshd, { rules: [{ name: 'held-restarts', match: { command: 'touch *' }, action: 'review' }], reviews: { groups: ['leads'] } }),
      reviews: {
        async hold(request, io) {
          held.push(request.statement);
          await io.notice(`hoopctl: statement held for review rev_1 by rule "${request.rule}"`);
          return request.statement.includes('ok')
            ? { approved: true, reviewId: 'rev_1', message: 'approved in review rev_1' }
            : { approved: false, reviewId: 'rev_1', message: 'hoopctl: review rev_1 rejected by bob: no' };
        },
      },
    });
    try {
      const ok = await reviewed.ssh(['x@127.0.0.1', `echo a && touch ${dir}/ok && echo done`]);
      expect(ok.code).toBe(0);
      expect(ok.stdout).toBe('a\ndone\n');
      expect(ok.stderr).toContain('command held for review rev_1 by rule "held-restarts"');
      const no = await reviewed.ssh(['x@127.0.0.1', `touch ${dir}/no`]);
      expect(no.code).toBe(1);
      expect(no.stderr).toContain('review rev_1 rejected by bob: no');
      expect(held).toEqual([`echo a && touch ${dir}/ok && echo done`, `touch ${dir}/no`]);
    } finally {
      await reviewed.close();
    }
  });
});

describe('session details', () => {
  it('passes only allow-listed environment variables', async () => {
    const r = await proxy.ssh(['-o', 'SetEnv=LANG=C.UTF-8 HOOP_SECRET=leak', 'x@127.0.0.1', 'echo "$LANG/$HOOP_SECRET"']);
    expect(r.stdout).toBe('C.UTF-8/\n');
  });

  it('relays a signal death as exit-signal and records it', async () => {
    const r = await proxy.ssh(['x@127.0.0.1', 'kill -TERM $$']);
    expect(r.code).toBe(255);
    const exits = proxy.events.filter((e) => e.type === 'exit').map((e) => e.data.signal);
    expect(exits).toContain('SIGTERM');
  });

  it('relays port forwarding when the connection allows it', async () => {
    const open = await startSshProxy({ dir, connection: sshConnection(sshd, { allow: { portForwarding: true } }) });
    try {
      const r = await open.ssh(['-W', `127.0.0.1:${sshd.port}`, 'x@127.0.0.1'], 'SSH-2.0-probe\r\n');
      expect(r.stdout).toMatch(/^SSH-2\.0-OpenSSH/);
      expect(open.events.some((e) => e.type === 'forward' && e.data.destination === `127.0.0.1:${sshd.port}`)).toBe(true);
    } finally {
      await open.close();
    }
  });

  it('relays remote forwarding (ssh -R) when the connection allows it: a connection on the backend host reaches the client side', async () => {
    const { spawn } = await import('node:child_process');
    const { createServer } = await import('node:http');
    const { sshOptions } = await import('../support/ssh-proxy-harness.js');
    const clientSide = createServer((req, res) => res.end(`served on the client side: ${req.url}\n`));
    await new Promise<void>((r) => clientSide.listen(0, '127.0.0.1', r));
    const open = await startSshProxy({ dir, connection: sshConnection(sshd, { allow: { remoteForwarding: true } }) });
    const ssh = spawn('ssh', ['-p', String(open.port), ...sshOptions(open.knownHosts), '-o', 'ExitOnForwardFailure=yes', '-N', '-R', `0:127.0.0.1:${(clientSide.address() as { port: number }).port}`, 'x@127.0.0.1']);
    let stderr = '';
    ssh.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      for (let i = 0; i < 600 && !/Allocated port \d+/.test(stderr) && ssh.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
      const port = Number(/Allocated port (\d+)/.exec(stderr)?.[1]);
      expect(port, stderr).toBeGreaterThan(0);
      // The backend host's loopback (sshd runs on this machine): the request travels back through the gate.
      const body = await (await fetch(`http://127.0.0.1:${port}/hello`)).text();
      expect(body).toBe('served on the client side: /hello\n');
      for (let i = 0; i < 1500 && !open.events.some((e) => e.type === 'forward' && e.data.direction === 'remote'); i++) await new Promise((r) => setTimeout(r, 20));
      expect(open.events.find((e) => e.type === 'forward-listen')?.data).toMatchObject({ direction: 'remote', bind: `localhost:${port}` });
      expect(open.events.find((e) => e.type === 'forward' && e.data.direction === 'remote')?.data).toMatchObject({ bind: `localhost:${port}`, origin: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
    } finally {
      ssh.kill();
      await open.close();
      clientSide.close();
    }
  });

  it('refuses a forward it cannot record (fail closed), instead of relaying it or leaving it hanging', async () => {
    const unrecorded = await startSshProxy({ dir, connection: sshConnection(sshd, { allow: { portForwarding: true } }), failTypes: ['forward'] });
    try {
      const r = await unrecorded.ssh(['-W', `127.0.0.1:${sshd.port}`, 'x@127.0.0.1'], 'SSH-2.0-probe\r\n');
      expect(r.code).not.toBe(0);
      expect(r.stdout).not.toMatch(/OpenSSH/);
      expect(r.stderr).toMatch(/open failed|administratively prohibited/i);
    } finally {
      await unrecorded.close();
    }
  });

  it('refuses remote forwarding by default: ssh -R fails and the refusal is recorded', async () => {
    const r = await proxy.ssh(['-o', 'ExitOnForwardFailure=yes', '-N', '-R', '0:127.0.0.1:9', 'x@127.0.0.1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/remote port forwarding failed/i);
    expect(proxy.events.some((e) => e.type === 'forward-refused' && e.data.request === 'tcpip-forward' && e.data.reason === 'remote forwarding is not allowed on this connection')).toBe(true);
  });

  it('refuses sftp when the connection does not allow it', async () => {
    const closed = await startSshProxy({ dir, connection: sshConnection(sshd, { allow: { sftp: false } }) });
    try {
      const { runSsh, sshOptions } = await import('../support/ssh-proxy-harness.js');
      const r = await runSsh(['-P', String(closed.port), ...sshOptions(closed.knownHosts), `x@127.0.0.1:/etc/hostname`, join(dir, 'nope')], undefined, 'scp');
      expect(r.code).not.toBe(0);
      expect(closed.events.some((e) => e.type === 'subsystem' && e.data.verdict === 'deny')).toBe(true);
    } finally {
      await closed.close();
    }
  });
});

describe('tunnels that die', () => {
  it('a tunnel closed before the SSH handshake still ends its session', async () => {
    const { connect } = await import('node:net');
    const before = proxy.summaries.length;
    const s = connect(proxy.port, '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    // At once: the broker is still in its handshake with the backend sshd when the tunnel goes (it used to hang there).
    s.destroy();
    for (let i = 0; i < 250 && proxy.summaries.length === before; i++) await new Promise((r) => setTimeout(r, 100));
    expect(proxy.summaries.length).toBe(before + 1);
  });
});
