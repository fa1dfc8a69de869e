/**
 * Which module serves which connection type. Adding a connection type is a folder under src/broker/protocols and
 * its line here (the module in PROTOCOLS, its connection in the `Connection` union, for the compiler).
 */
import type { ProtocolHost, ProtocolModule, ProtocolRuntime } from './protocol.js';
import { postgresProtocol } from './postgres/index.js';
import { sshProtocol } from './ssh/index.js';
import { httpProtocol, kubernetesProtocol, type HttpConnection, type KubernetesConnection } from './http/index.js';
import { tcpProtocol } from './tcp/index.js';
import type { PostgresConnection } from './postgres/config.js';
import type { SshConnection } from './ssh/config.js';
import type { TcpConnection } from './tcp/config.js';

export type Connection = PostgresConnection | SshConnection | HttpConnection | KubernetesConnection | TcpConnection;

export const PROTOCOLS = [postgresProtocol, sshProtocol, httpProtocol, kubernetesProtocol, tcpProtocol] as unknown as readonly ProtocolModule<Connection>[];

export function protocolOf(type: string): ProtocolModule<Connection> {
  const m = PROTOCOLS.find((p) => p.type === type);
  // The config schema admits no other type: a miss is a bug, not a user's mistake.
  if (!m) throw new Error(`no protocol module for connection type ${type}`);
  return m;
}

/** The modules started for one running broker. */
export class ProtocolRuntimes {
  readonly #runtimes: Map<string, ProtocolRuntime<Connection>>;

  constructor(host: ProtocolHost) {
    this.#runtimes = new Map(PROTOCOLS.map((p) => [p.type, p.start(host)]));
  }

  of(connection: Connection): ProtocolRuntime<Connection> {
    return this.#runtimes.get(connection.type)!;
  }

  /** The running module of a type, where no connection is known yet (a front door's cancel names none). */
  ofType(type: Connection['type']): ProtocolRuntime<Connection> {
    return this.#runtimes.get(type)!;
  }

  /** Gives each module its connections (at start and on every reload). */
  prepare(connections: readonly Connection[]): void {
    for (const [type, r] of this.#runtimes) r.prepare?.(connections.filter((c) => c.type === type));
  }

  /** Lets go of what modules keep for later sessions (drain, shutdown). */
  close(): void {
    for (const r of this.#runtimes.values()) r.close?.();
  }
}
