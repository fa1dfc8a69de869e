/**
 * What `hoopctl connect` does per connection type on the client side: how the local listener greets a client (TLS
 * for PostgreSQL), how a client is told its tunnel could not open (a FATAL psql prints), and what to paste. A type
 * this file does not know is a plain TCP service: any client, bytes through, a closed socket on refusal.
 */
import { join } from 'node:path';
import type { Socket } from 'node:net';
import type { ConnectionInfo } from '../api/connection.js';
import { writeKubeconfig } from './kubeconfig.js';
import { makeLoopbackCertificate } from './loopback-certificate.js';
import { negotiatePostgresEncryption } from './pg-encryption.js';
import { refusePostgresClient } from './pg-refusal.js';

export interface ListenerHints {
  /** What a client connects to (`postgresql://…`, `ssh://…`, `http://…`, `tcp://…`). */
  url: string;
  /** Lines to paste, printed under the listening line. */
  lines: string[];
  footer: string;
  /** Extras for `-o json`. */
  json: Record<string, unknown>;
}

export interface ClientKind {
  /** Made once per `connect`: what runs on each client socket before its bytes ride the tunnel (PostgreSQL's TLS). */
  greeter?(): (socket: Socket) => Promise<Socket>;
  /** Tells a client its tunnel could not open, in its own protocol where it has one. */
  refuse(socket: Socket, message: string): void;
  hints(c: ConnectionInfo, where: { host: string; port: number; configDir: string }): ListenerHints;
}

const INJECTED = 'No password is needed: the broker injects the credential. Press Ctrl-C to close.';
const closeSocket = (socket: Socket) => socket.destroy();

const postgres: ClientKind = {
  greeter() {
    // Made once per start: clients whose URL says sslmode=require get TLS on the loopback hop.
    const loopbackTls = makeLoopbackCertificate();
    return (socket) => negotiatePostgresEncryption(socket, () => loopbackTls.secureContext);
  },
  refuse: (socket, message) => refusePostgresClient(socket, `hoopctl: ${message}`),
  hints(c, { host, port }) {
    // sslmode=disable: the hop is loopback, so TLS there would only cost; clients whose URL says require still work.
    const url = `postgresql://hoopctl@${host}:${port}/${encodeURIComponent(c.database ?? c.name)}?sslmode=disable`;
    const lines = [`psql "${url}"`, `url: ${url}`];
    if (c.databases && c.databases.length > 1) lines.push(`databases: ${c.databases.join(', ')} (put one in the URL's path; none given means ${c.database})`);
    lines.push(
      'sslmode=require works (TLS to this loopback listener with a throwaway certificate); verify-ca/verify-full cannot verify it —',
      "  the broker's TLS to the database is set on the broker (target.sslmode)",
    );
    return { url, lines, footer: INJECTED, json: c.databases ? { databases: c.databases } : {} };
  },
};

const ssh: ClientKind = {
  refuse: closeSocket,
  hints(c, { host, port }) {
    const user = c.user ?? 'hoopctl';
    const sshLine = `ssh -p ${port} ${user}@${host}`;
    return {
      url: `ssh://${user}@${host}:${port}`,
      lines: [sshLine, `scp -P ${port} FILE ${user}@${host}:PATH`, `host key fingerprint to expect: ${c.hostKeyFingerprint} (the broker's; ssh shows it on first connect)`],
      footer: 'No key is needed: the broker logs in with its own. Press Ctrl-C to close.',
      json: { ssh: sshLine, hostKeyFingerprint: c.hostKeyFingerprint, hostKey: c.hostKey },
    };
  },
};

const http: ClientKind = {
  refuse: closeSocket,
  hints: (_c, { host, port }) => ({ url: `http://${host}:${port}`, lines: [`curl http://${host}:${port}/`], footer: INJECTED, json: {} }),
};

const kubernetes: ClientKind = {
  refuse: closeSocket,
  hints(c, { host, port, configDir }) {
    // hoopctl's own kubeconfig, never the user's: it points kubectl at the tunnel and holds no credential.
    const kube = writeKubeconfig({ path: join(configDir, 'kube', `${c.name}.yaml`), server: `http://${host}:${port}`, contextName: `hoopctl-${c.name}` });
    return { url: `http://${host}:${port}`, lines: [kube.hint, `kubeconfig: ${kube.path}`], footer: INJECTED, json: { kubeconfig: kube.path, kubectl: kube.hint } };
  },
};

/** Any other type: a TCP service the broker relays byte for byte. */
const plainTcp: ClientKind = {
  refuse: closeSocket,
  hints: (c, { host, port }) => ({
    url: `tcp://${host}:${port}`,
    lines: [`point your ${c.type} client at host ${host}, port ${port}`],
    footer: 'The broker relays and records the bytes each way. Press Ctrl-C to close.',
    json: {},
  }),
};

const KINDS: Record<string, ClientKind> = { postgres, ssh, http, kubernetes };

export function clientKindOf(type: string): ClientKind {
  return KINDS[type] ?? plainTcp;
}
