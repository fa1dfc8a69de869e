import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { freePort } from '../lib/net.js';

/**
 * A real OpenSSH sshd on a free loopback port, for tests and the benchmark: its own host key and a key pair the broker uses to log
 * in (authorized in a file of the temp dir). Runs as the current user (root in CI: `UsePAM no`, `StrictModes no`).
 */
export interface TestSshd {
  host: string;
  port: number;
  dir: string;
  user: string;
  /** `ssh-ed25519 AAAA…` of the sshd's host key, to pin in config. */
  hostPublicKey: string;
  /** Its `SHA256:…` fingerprint. */
  hostFingerprint: string;
  /** The private key the broker logs in with (and its path). */
  clientPrivateKey: string;
  clientKeyPath: string;
  /** Debug log of sshd (-E). */
  log(): string;
  stop(): Promise<void>;
}

export const SSHD = '/usr/sbin/sshd';

export function keygen(path: string, comment: string): void {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path], { stdio: 'ignore' });
}

export function fingerprint(pubPath: string): string {
  return execFileSync('ssh-keygen', ['-lf', pubPath], { encoding: 'utf8' }).split(/\s+/)[1]!;
}

export async function startSshd(): Promise<TestSshd> {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-sshd-'));
  chmodSync(dir, 0o755);
  // sshd run as root wants its privilege-separation directory; as another user it needs none.
  if (process.getuid?.() === 0) mkdirSync('/run/sshd', { recursive: true });
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  const clientKey = join(dir, 'broker_key');
  keygen(hostKey, 'test-sshd');
  keygen(clientKey, 'hoopctl-broker-test');
  const authorized = join(dir, 'authorized_keys');
  writeFileSync(authorized, readFileSync(`${clientKey}.pub`), { mode: 0o600 });
  const port = await freePort();
  const logPath = join(dir, 'sshd.log');
  const config = join(dir, 'sshd_config');
  writeFileSync(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      'UsePAM no',
      'StrictModes no',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      `AuthorizedKeysFile ${authorized}`,
      'PermitRootLogin prohibit-password',
      'AllowTcpForwarding yes',
      'Subsystem sftp internal-sftp',
      'AcceptEnv LANG LC_* TZ HOOP_*',
      'PrintMotd no',
      'LogLevel DEBUG1',
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', config, '-E', logPath], { stdio: 'ignore' });
  const exited = new Promise<number>((resolve) => child.once('exit', (c) => resolve(c ?? -1)));
  await waitForPort(port, exited, () => readText(logPath));
  const pub = readFileSync(`${hostKey}.pub`, 'utf8').trim().split(/\s+/);
  return {
    host: '127.0.0.1',
    port,
    dir,
    user: userInfo().username,
    hostPublicKey: `${pub[0]} ${pub[1]}`,
    hostFingerprint: fingerprint(`${hostKey}.pub`),
    clientPrivateKey: readFileSync(clientKey, 'utf8'),
    clientKeyPath: clientKey,
    log: () => readText(logPath),
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

async function waitForPort(port: number, exited: Promise<number>, log: () => string): Promise<void> {
  let dead: number | undefined;
  void exited.then((c) => (dead = c));
  for (let i = 0; i < 100; i++) {
    if (dead !== undefined) throw new Error(`sshd exited ${dead}: ${log()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`sshd did not listen on ${port}: ${log()}`);
}
