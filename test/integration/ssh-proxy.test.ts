import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSshd, type TestSshd } from '../support/sshd.js';
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
