/** `tcp` connections: bytes relayed to a raw TCP service, recorded by size and time (and captured when asked). */
import type { ProtocolModule } from '../protocol.js';
import { resolveTcpConnection, tcpConnectionSchema, type TcpConnection } from './config.js';
import { relayTcpSession } from './relay.js';

export const tcpProtocol: ProtocolModule<TcpConnection> = {
  type: 'tcp',
  schema: tcpConnectionSchema,
  resolve: (raw, ctx) => resolveTcpConnection(raw as TcpConnection, ctx),
  target: (c) => ({ host: c.target.host, port: c.target.port }),
  start: () => ({
    describe: (c) => ({ capture: c.recording.capture }),
    serve: relayTcpSession,
  }),
};
