import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loginAs, runCli, startStack, type Stack } from '../support/stack.js';
import { startSshd, type TestSshd } from '../../src/dev/sshd.js';
import { startFakeKubeApiServer, type FakeKubeApiServer } from '../support/fake-kube-apiserver.js';

/**
 * `hoopctl ssh` and `hoopctl kubectl` as a user runs them: the CLI as a process opens its own tunnel, runs OpenSSH's
 * ssh against a real sshd (through the broker process) or kubectl 1.32 against the fake API server, and closes the
 * tunnel when the client exits, with the client's exit status.
 */
const KUBE_TOKEN = 'kube-sa-token-never-on-the-client';
let sshd: TestSshd;
let kube: FakeKubeApiServer;
let stack: Stack;
let alice: NodeJS.ProcessEnv;

beforeAll(async () => {
  [sshd, kube] = await Promise.all([startSshd(), startFakeKubeApiServer({ token: KUBE_TOKEN, namespaces: ['default', 'payments'] })]);
  stack = await startStack({
    extraConnections: [
      {
        name: 'ssh-host', type: 'ssh',
        target: { host: sshd.host, port: sshd.port, user: sshd.user, hostKey: sshd.hostPublicKey },
        credentials: { privateKey: { file: sshd.clientKeyPath } },
        rules: [{ name: 'no-sudo', match: { command: 'sudo *' }, action: 'deny' }],
      },
      {
        name: 'k8s', type: 'kubernetes', target: { url: kube.url }, credentials: { bearer: { value: KUBE_TOKEN } },
        defaultAction: 'deny',
        rules: [
          { name: 'read-only', match: { verb: ['get', 'list', 'watch'] }, action: 'allow' },
          { name: 'keep-namespaces', match: { verb: 'delete', resource: 'namespaces' }, action: 'deny' },
        ],
      },
    ],
  });
  // A temp dir of its own, so the check that each tunnel's directory is gone sees only this file's launches.
  alice = { ...(await loginAs(stack, 'alice')), TMPDIR: join(stack.dir, 'tmp') };
  mkdirSync(alice.TMPDIR!);
}, 120_000);

afterAll(async () => {
  await stack?.stop();
  await sshd?.stop();
  await kube?.close();
});

/** The launcher's private tunnel directories (`hoopctl-…` in its temp dir): none may outlive the client. */
const tunnelDirs = () => readdirSync(alice.TMPDIR!).filter((n) => n.startsWith('hoopctl-'));

describe('hoopctl ssh', () => {
  it("runs the real ssh through a tunnel it opens (its own key, the broker's host key pinned), passing the exit status through", async () => {
    const ok = await runCli(['ssh', 'ssh-host', '--', 'echo hello; id -un'], alice);
    expect(ok.stderr).toBe('');
    expect(ok).toMatchObject({ code: 0, stdout: `hello\n${sshd.user}\n` });
    const three = await runCli(['ssh', 'ssh-host', '--', 'exit 3'], alice);
    expect(three.code, three.stderr).toBe(3);
    // ssh options before the remote command: -T (no terminal) and -o with its value.
    const opts = await runCli(['ssh', 'ssh-host', '--', '-T', '-o', 'LogLevel=ERROR', 'echo opts'], alice);
    expect(opts).toMatchObject({ code: 0, stdout: 'opts\n' });
    // A refusal by rule: ssh's own status (not 0), the broker's reason on stderr.
    const denied = await runCli(['ssh', 'ssh-host', '--', 'sudo id'], alice);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toContain('no-sudo');
    // ssh -G shows what ssh was given: the tunnel's key and known_hosts, both in the tunnel's private directory.
    const given = await runCli(['ssh', 'ssh-host', '--', '-G'], alice);
    expect(given.code, given.stderr).toBe(0);
    expect(given.stdout).toMatch(new RegExp(`^identityfile ${alice.TMPDIR}/hoopctl-\\w+/ssh/ssh-host\\.\\d+\\.key$`, 'm'));
    expect(given.stdout).toMatch(new RegExp(`^userknownhostsfile ${alice.TMPDIR}/hoopctl-\\w+/known_hosts$`, 'm'));
    expect(given.stdout).toMatch(/^stricthostkeychecking (true|yes)$/m);
    // Each tunnel's directory (its key, its known_hosts) is gone once ssh exits.
    expect(tunnelDirs()).toEqual([]);
    const sessions = JSON.parse((await runCli(['sessions', '--connection', 'ssh-host', '-o', 'json'], alice)).stdout) as unknown[];
    expect(sessions.length).toBe(4);
  });

  it('names the right launcher for a connection of another type', async () => {
    const r = await runCli(['ssh', 'k8s', '--', 'true'], alice);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('k8s is a kubernetes connection, not SSH');
    expect(r.stderr).toContain('hoopctl kubectl k8s');
  });
});

describe('hoopctl kubectl', () => {
  it('runs the real kubectl with a kubeconfig of its own (the tunnel bearer and CA), passing the exit status through', async () => {
    const get = await runCli(['kubectl', 'k8s', '--', 'get', 'namespaces', '-o', 'name'], alice);
    expect(get.stderr).toBe('');
    expect(get).toMatchObject({ code: 0, stdout: 'namespace/default\nnamespace/payments\n' });
    const denied = await runCli(['kubectl', 'k8s', '--', 'delete', 'namespace', 'payments'], alice);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain('denied by rule "keep-namespaces"');
    expect(kube.deleted).toEqual([]);
    // Only the broker's credential reached the API server; the user's own kubeconfig was never written.
    expect(kube.seen.every((r) => r.headers.authorization === `Bearer ${KUBE_TOKEN}`)).toBe(true);
    expect(existsSync(`${stack.dir}/.kube/config`)).toBe(false);
    expect(tunnelDirs()).toEqual([]);
  });
});
