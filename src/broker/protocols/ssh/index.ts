/** `ssh` connections: the broker is an SSH server to the client and an SSH client, with its own key, to the backend. */
import ssh2 from 'ssh2';
import { UserError } from '../../../lib/errors.js';
import { evaluateCommand, evaluateShell } from '../../../policy/shell-rules.js';
import type { ProtocolModule } from '../protocol.js';
import { sshConnectionSchema, resolveSshConnection, type SshConnection } from './config.js';
import { loadBrokerHostKey, type BrokerHostKey } from './host-keys.js';
import { proxySshSession } from './proxy.js';
import { rotateSshKey } from './rotate.js';
import { FileSecret } from '../../../lib/secret.js';

export const sshProtocol: ProtocolModule<SshConnection> = {
  type: 'ssh',
  schema: sshConnectionSchema,
  resolve: (raw, ctx) => resolveSshConnection(raw as Parameters<typeof resolveSshConnection>[0], ctx),
  holds: 'command',
  rotation: {
    schedule: (c) => (c.credentials.rotateEvery !== undefined && c.credentials.privateKey instanceof FileSecret ? { every: c.credentials.rotateEvery, file: c.credentials.privateKey.path } : undefined),
    rotate: rotateSshKey,
  },
  async judge(c, identity, { text, shell }) {
    if (shell) return { verdict: evaluateShell(c, identity), statements: [] };
    if (text === undefined) throw new UserError('no command given', { code: 'USAGE', hint: 'pass -e "COMMAND", or --shell' });
    return { verdict: evaluateCommand(c, identity, text), statements: [] };
  },
  check(c, at) {
    // A helper's key is only known once a session fetches it; the session's connect checks it then.
    if (!c.credentials.privateKey?.known || (c.credentials.passphrase && !c.credentials.passphrase.known)) return [];
    const parsed = ssh2.utils.parseKey(c.credentials.privateKey.reveal(), c.credentials.passphrase?.reveal());
    return parsed instanceof Error ? [`${at}.credentials.privateKey: not a private key ssh can use (${parsed.message})`] : [];
  },
  target: (c) => ({ host: c.target.host, port: c.target.port, user: c.target.user }),
  start(host) {
    // The broker's own host key (what ssh clients see): configured, or kept in the data dir.
    let hostKey: BrokerHostKey | undefined;
    const loadHostKey = (): BrokerHostKey => {
      if (hostKey) return hostKey;
      const loaded = loadBrokerHostKey(host.keys.ssh?.reveal(), `${host.dataDir}/hoopctl-ssh-host-key`);
      host.logger.info({ fingerprint: loaded.fingerprint, created: loaded.created }, 'ssh host key');
      return (hostKey = loaded);
    };
    if (host.keys.ssh) loadHostKey();
    return {
      describe(c) {
        const key = loadHostKey();
        return {
          user: c.target.user, hostKeyFingerprint: key.fingerprint, hostKey: key.publicKey,
          allow: { sftp: c.allow.sftp, portForwarding: c.allow.portForwarding, remoteForwarding: c.allow.remoteForwarding },
        };
      },
      prepare(connections) {
        if (connections.length > 0) loadHostKey();
        for (const c of connections) {
          // Commands typed into a shell are not judged one by one: say so where that leaves a rule easy to walk around.
          if (c.defaultAction === 'allow' && c.rules.some((r) => r.action !== 'allow' && !r.match?.shell) && !c.rules.some((r) => r.match?.shell)) {
            host.logger.warn({ connection: c.name }, 'ssh connection has command rules but allows interactive shells, where commands are recorded, not judged; add a rule with match: { shell: true }');
          }
        }
      },
      async serve(stream, s) {
        const summary = await proxySshSession(stream, {
          connection: s.connection, recorder: s.recorder, logger: s.logger, identity: s.identity, maskKey: s.maskKey, signal: s.signal,
          hostKey: loadHostKey(), reviews: s.reviews, detachedReviews: s.detachedReviews, ...(s.clientKey ? { clientKey: s.clientKey } : {}),
        });
        return { outcome: summary.outcome, statementCount: summary.requestCount, errorCount: summary.errorCount, ...(summary.error ? { error: summary.error } : {}) };
      },
    };
  },
};
