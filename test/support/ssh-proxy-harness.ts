import { createServer, type Server, type Socket } from 'node:net';
import { runProcess, type CliResult } from './stack.js';
import { Writable } from 'node:stream';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import ssh2 from 'ssh2';
import { brokerConfigSchema, Secret, type SshConnection } from '../../src/broker/config.js';
import { proxySshSession, type SshSessionSummary } from '../../src/broker/protocols/ssh/proxy.js';
import type { StatementReviews } from '../../src/broker/protocols/protocol.js';
import { fingerprintOf, type BrokerHostKey } from '../../src/broker/protocols/ssh/host-keys.js';
import { generateParsableKeyPair } from '../../src/lib/ssh-keys.js';
import type { Identity } from '../../src/api/identity.js';
import { MemoryRecorder, type RecordedEvent } from './memory-recorder.js';
import type { TestSshd } from '../../src/dev/sshd.js';

/** The SSH proxy behind a plain loopback listener standing in for the tunnel: one session per TCP connection. */
export interface SshProxyHarness {
  port: number;
  hostKey: BrokerHostKey;
  knownHosts: string;
  events: RecordedEvent[];
  summaries: SshSessionSummary[];
  log(): string;
  /** Runs OpenSSH's `ssh` against the proxy (BatchMode, the proxy's key pinned). */
  ssh(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }>;
  close(): Promise<void>;
}

export const TEST_IDENTITY: Identity = {
  subject: 'alice', name: 'alice', kind: 'human', groups: ['dba'], issuer: 'https://issuer.test', clientId: 'hoopctl-cli',
} as Identity;

export function sshConnection(sshd: TestSshd, extra: Record<string, unknown> = {}): SshConnection {
  const parsed = brokerConfigSchema.parse({
    auth: { issuers: [{ issuer: 'https://issuer.test', audience: 'x' }] },
    connections: [{
      name: 'ssh-test', type: 'ssh',
      target: { host: sshd.host, port: sshd.port, user: sshd.user, hostKey: sshd.hostPublicKey },
      credentials: { privateKey: { value: 'x' } },
      access: { groups: ['dba'] },
      ...extra,
    }],
  });
  const raw = parsed.connections[0]! as unknown as SshConnection;
  return { ...raw, credentials: { privateKey: new Secret(sshd.clientPrivateKey) } };
}

export async function startSshProxy(o: {
  connection: SshConnection;
  dir: string;
  identity?: Identity;
  reviews?: StatementReviews;
  /** Event types the recorder fails to write (a store that cannot). */
  failTypes?: string[];
}): Promise<SshProxyHarness> {
  const pair = generateParsableKeyPair('test-broker');
  const parsed = ssh2.utils.parseKey(pair.private);
  const key = Array.isArray(parsed) ? parsed[0]! : parsed;
  if (key instanceof Error) throw key;
  const hostKey: BrokerHostKey = { privateKey: pair.private, publicKey: pair.public, fingerprint: fingerprintOf(key.getPublicSSH()) };
  const events: RecordedEvent[] = [];
  const summaries: SshSessionSummary[] = [];
  let logText = '';
  const logger = pino({ level: 'debug' }, new Writable({ write(c, _e, cb) { logText += c; cb(); } }));
  const sockets = new Set<Socket>();
  const running = new Set<Promise<unknown>>();
  let n = 0;
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const recorder = new MemoryRecorder(`ses_${++n}`, events);
    recorder.failTypes = new Set(o.failTypes ?? []);
    const p = proxySshSession(socket, {
      connection: o.connection, recorder, logger, identity: o.identity ?? TEST_IDENTITY,
      hostKey, maskKey: 'test-key', reviews: o.reviews,
    }).then((s) => summaries.push(s));
    running.add(p);
    void p.finally(() => running.delete(p));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  const knownHosts = join(o.dir, `known_hosts_${port}`);
  writeFileSync(knownHosts, `[127.0.0.1]:${port} ${pair.public.split(' ').slice(0, 2).join(' ')}\n`);
  return {
    port, hostKey, knownHosts, events, summaries,
    log: () => logText,
    ssh: (args, input) => runSsh(['-p', String(port), ...sshOptions(knownHosts), ...args], input),
    async close() {
      for (const s of sockets) s.destroy();
      await Promise.race([Promise.allSettled([...running]), new Promise((r) => setTimeout(r, 3000))]);
      await new Promise((r) => server.close(() => r(undefined)));
    },
  };
}

/** Options for OpenSSH clients in tests: no user config, batch mode, only this known_hosts file. */
export function sshOptions(knownHosts: string): string[] {
  return ['-F', '/dev/null', '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'ConnectTimeout=10'];
}

/** Runs an OpenSSH client (ssh, scp, sftp) to completion. */
export function runSsh(args: string[], input?: string, cmd = 'ssh', timeoutMs = 30_000): Promise<CliResult> {
  return runProcess(cmd, args, process.env, input, timeoutMs);
}
