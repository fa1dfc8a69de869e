/**
 * What `hoopctl connect` does per connection type on the client side: how the local listener greets a client (TLS
 * for PostgreSQL, then the per-tunnel password), how a client is told its tunnel could not open (a FATAL psql
 * prints), what its Unix socket is called, and what to paste. A type this file does not know is a plain TCP service:
 * any client of its owner, bytes through, a closed socket on refusal.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { ConnectionInfo } from '../api/connection.js';
import { writeKubeconfig } from './kubeconfig.js';
import type { ListenerKind, PreparedClient } from './local-listener.js';
import { makeLoopbackCertificate } from './loopback-certificate.js';
import { requireBearer } from './http-bearer-gate.js';
import { CLIENT_GONE } from './local-listener.js';
import { HoopError } from '../lib/errors.js';
import { isCancelRequest, negotiatePostgresEncryption } from './pg-encryption.js';
import { requirePostgresPassword } from './pg-password-gate.js';
import { writePgPassFiles } from './pg-pass-files.js';
import { refusePostgresClient } from './pg-refusal.js';
import { generateParsableKeyPair } from '../lib/ssh-keys.js';

export interface ListenerHints {
  /** What a client connects to (`postgresql://…`, `ssh://…`, `http://…`, `tcp://…`). */
  url: string;
  /** Lines to paste, printed under the listening line. */
  lines: string[];
  footer: string;
  /** Extras for `-o json`. */
  json: Record<string, unknown>;
  /** Files written for this tunnel (they name its secret), removed when it closes. */
  files?: string[];
}

/** Where a tunnel listens and what its clients present. */
export interface ListenerPlace {
  host: string;
  port: number;
  configDir: string;
  /** The Unix socket, in a 0700 directory (absent with --insecure-shared-port). */
  socketPath?: string;
  /** The per-tunnel secret TCP clients present (absent with --insecure-shared-port). */
  secret?: string;
}

export interface ClientKind {
  /** The Unix socket's file name given the TCP port (psql looks for `.s.PGSQL.<port>` in the directory). */
  socketName(port: number): string;
  /**
   * Made once per `connect`: what runs on each client socket before its bytes ride the tunnel (PostgreSQL's TLS and
   * the per-tunnel password). Rejects with PEER_REFUSED for a client that may not use the tunnel.
   */
  greeter?(secret: string | undefined): ((socket: Socket, via: ListenerKind) => Promise<PreparedClient>) | undefined;
  /** Headers every tunnel of this listener carries to the broker, given the secret (absent: shared port). */
  tunnelHeaders?(secret: string | undefined): Record<string, string>;
  /** Tells a client its tunnel could not open, or that it was refused, in its own protocol where it has one. */
  refuse(socket: Duplex, message: string): void;
  hints(c: ConnectionInfo, where: ListenerPlace): ListenerHints;
}

const INJECTED = 'No password is needed: the broker injects the credential. Press Ctrl-C to close.';
const closeSocket = (socket: Duplex) => socket.destroy();

const INJECTED_TUNNEL =
  "The tunnel's password opens this tunnel only; the broker injects the database credential. Press Ctrl-C to close.";

const postgres: ClientKind = {
  socketName: (port) => `.s.PGSQL.${port}`,
  greeter(secret) {
    // Made once per start: clients whose URL says sslmode=require get TLS on the loopback hop.
    const loopbackTls = makeLoopbackCertificate();
    return async (socket, via) => {
      const settled = await negotiatePostgresEncryption(socket, () => loopbackTls.secureContext);
      // The Unix socket's 0700 directory already keeps others out.
      const stream = secret && via === 'tcp' ? await requirePostgresPassword(settled, secret) : settled;
      // A CancelRequest (psql's Ctrl-C) goes to the broker as a cancel tunnel: part of the session it cancels, not one of its own.
      return (await isCancelRequest(stream)) ? { stream, tunnelQuery: { kind: 'cancel' } } : { stream };
    };
  },
  refuse: (socket, message) => refusePostgresClient(socket, `hoopctl: ${message}`),
  hints(c, { host, port, secret, socketPath, configDir }) {
    const database = c.database ?? c.name;
    const auth = secret ? `hoopctl:${secret}` : 'hoopctl';
    // sslmode=disable: the hop is loopback, so TLS there would only cost; clients whose URL says require still work.
    const url = `postgresql://${auth}@${host}:${port}/${encodeURIComponent(database)}?sslmode=disable`;
    const lines = [`psql "${url}"`, `url: ${url}`];
    const json: Record<string, unknown> = c.databases ? { databases: c.databases } : {};
    const files: string[] = [];
    if (socketPath) {
      const dir = socketPath.slice(0, socketPath.lastIndexOf('/'));
      const socketLine = `psql "host=${dir} port=${port} dbname=${database} user=hoopctl"`;
      lines.push(`over the Unix socket (no password): ${socketLine}`);
      Object.assign(json, { socketDir: dir, socketPath, psqlSocket: socketLine });
    }
    if (secret) {
      const pass = writePgPassFiles({ dir: join(configDir, 'pg'), name: c.name, host, port, database, password: secret });
      lines.push(`or: ${pass.hint}`);
      files.push(pass.passFile, pass.serviceFile);
      Object.assign(json, { passfile: pass.passFile, serviceFile: pass.serviceFile, service: pass.service });
    }
    if (c.databases && c.databases.length > 1) lines.push(`databases: ${c.databases.join(', ')} (put one in the URL's path; none given means ${c.database})`);
    lines.push(
      'sslmode=require works (TLS to this loopback listener with a throwaway certificate); verify-ca/verify-full cannot verify it —',
      "  the broker's TLS to the database is set on the broker (target.sslmode)",
    );
    return { url, lines, footer: secret ? INJECTED_TUNNEL : INJECTED, json, files };
  },
};

/**
 * SSH: the local listener cannot see inside SSH, so the broker checks the key — each tunnel makes an Ed25519 key
 * pair, sends the public half with every tunnel it opens, and writes the private half 0600 for `ssh -i`.
 */
function sshKind(): ClientKind {
  let pair: { private: string; public: string } | undefined;
  const keyPair = () => (pair ??= generateParsableKeyPair('hoopctl tunnel key'));
  return {
    socketName: () => 'ssh.sock',
    tunnelHeaders: (secret): Record<string, string> => (secret ? { 'x-hoopctl-client-key': keyPair().public.trim() } : {}),
    refuse: closeSocket,
    hints(c, { host, port, secret, configDir }) {
      const user = c.user ?? 'hoopctl';
      const files: string[] = [];
      let identity = '';
      if (secret) {
        // Per port: two tunnels to one connection each keep their own key.
        const path = join(configDir, 'ssh', `${c.name}.${port}.key`);
        writePrivateFile(path, keyPair().private);
        files.push(path);
        identity = `-i ${shellQuote(path)} -o IdentitiesOnly=yes `;
      }
      const sshLine = `ssh ${identity}-p ${port} ${user}@${host}`;
      return {
        url: `ssh://${user}@${host}:${port}`,
        lines: [sshLine, `scp ${identity}-P ${port} FILE ${user}@${host}:PATH`, `host key fingerprint to expect: ${c.hostKeyFingerprint} (the broker's; ssh shows it on first connect)`],
        footer: secret
          ? "The key is this tunnel's own (it opens this tunnel only); the broker logs in with its own. Press Ctrl-C to close."
          : 'No key is needed: the broker logs in with its own. Press Ctrl-C to close.',
        json: { ssh: sshLine, hostKeyFingerprint: c.hostKeyFingerprint, hostKey: c.hostKey, ...(files[0] ? { identityFile: files[0] } : {}) },
        files,
      };
    },
  };
}

function shellQuote(p: string): string {
  return /^[\w./:@-]+$/.test(p) ? p : `'${p.replace(/'/g, `'\\''`)}'`;
}

/** 0600 from the start, in a 0700 directory, renamed into place. */
function writePrivateFile(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, path);
}

/** HTTP and Kubernetes over TCP: the tunnel's bearer on every request (the Unix socket's directory keeps others out). */
function bearerGreeter(secret: string | undefined): ((socket: Socket, via: ListenerKind) => Promise<PreparedClient>) | undefined {
  return secret ? async (socket, via) => ({ stream: via === 'tcp' ? await requireBearer(socket, secret) : socket }) : undefined;
}

const http: ClientKind = {
  socketName: () => 'http.sock',
  greeter: bearerGreeter,
  refuse: closeSocket,
  hints: (_c, { host, port, socketPath, secret }) => ({
    url: `http://${host}:${port}`,
    lines: [
      secret ? `curl -H "Authorization: Bearer ${secret}" http://${host}:${port}/` : `curl http://${host}:${port}/`,
      ...(secret ? ["(the tunnel's bearer: hoopctl takes it out of each request; the broker adds the backend's credential)"] : []),
      ...(socketPath ? [`over the Unix socket (no bearer): curl --unix-socket ${socketPath} http://localhost/`] : []),
    ],
    footer: secret ? 'Press Ctrl-C to close.' : INJECTED,
    json: { ...(socketPath ? { socketPath } : {}), ...(secret ? { bearer: secret } : {}) },
  }),
};

/** The server side of TLS on a client socket, with the loopback certificate. */
function acceptTls(socket: Socket, secureContext: SecureContext): Promise<Socket> {
  const secure = new TLSSocket(socket, { isServer: true, secureContext });
  return new Promise((resolve, reject) => {
    const fail = (why: string) => () => {
      secure.destroy();
      reject(new HoopError(why, { code: CLIENT_GONE }));
    };
    secure.once('error', fail('TLS handshake with the client failed'));
    secure.once('close', fail('the client closed the connection during TLS'));
    secure.once('secure', () => {
      secure.removeAllListeners('error');
      secure.removeAllListeners('close');
      resolve(secure);
    });
  });
}

/**
 * kubectl sends a kubeconfig's token only over TLS, so the Kubernetes listener speaks HTTPS with a throwaway
 * certificate the kubeconfig names as its CA, and checks the tunnel's bearer inside.
 */
function kubernetesGreeter(loopbackTls: ReturnType<typeof makeLoopbackCertificate>) {
  return (secret: string | undefined): ((socket: Socket, via: ListenerKind) => Promise<PreparedClient>) | undefined =>
    secret ? async (socket, via) => ({ stream: via === 'tcp' ? await requireBearer(await acceptTls(socket, loopbackTls.secureContext), secret) : socket }) : undefined;
}

function kubernetesKind(): ClientKind {
  const loopbackTls = makeLoopbackCertificate();
  return {
    socketName: () => 'http.sock',
    greeter: kubernetesGreeter(loopbackTls),
    refuse: closeSocket,
    hints(c, { host, port, configDir, secret }) {
      // hoopctl's own kubeconfig, never the user's: it points kubectl at the tunnel and holds only the tunnel's bearer.
      const server = `${secret ? 'https' : 'http'}://${host}:${port}`;
      const kube = writeKubeconfig({
        path: join(configDir, 'kube', `${c.name}.yaml`), server, contextName: `hoopctl-${c.name}`,
        ...(secret ? { token: secret, certificateAuthority: loopbackTls.cert } : {}),
      });
      return {
        url: server, lines: [kube.hint, `kubeconfig: ${kube.path}`], footer: INJECTED,
        json: { kubeconfig: kube.path, kubectl: kube.hint, ...(secret ? { bearer: secret } : {}) },
      };
    },
  };
}

/** Any other type: a TCP service the broker relays byte for byte. */
const plainTcp: ClientKind = {
  socketName: () => 'tcp.sock',
  refuse: closeSocket,
  hints: (c, { host, port, socketPath }) => ({
    url: `tcp://${host}:${port}`,
    lines: [
      `point your ${c.type} client at host ${host}, port ${port}`,
      ...(socketPath ? [`or at the Unix socket ${socketPath} (e.g. redis-cli -s ${socketPath})`] : []),
    ],
    footer: 'The broker relays and records the bytes each way. Press Ctrl-C to close.',
    json: socketPath ? { socketPath } : {},
  }),
};

const KINDS: Record<string, ClientKind> = { postgres, http };

export function clientKindOf(type: string): ClientKind {
  // Made per call: the Kubernetes kind holds this tunnel's loopback certificate, the SSH kind its key.
  if (type === 'kubernetes') return kubernetesKind();
  if (type === 'ssh') return sshKind();
  return KINDS[type] ?? plainTcp;
}
