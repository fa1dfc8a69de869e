/**
 * `http` and `kubernetes` connections: one reverse proxy (./proxy.ts) behind two types. A Kubernetes connection is an
 * HTTP one whose requests are judged by what their API path means, and whose exec and port-forward are recorded.
 */
import { createSecureContext } from 'node:tls';
import { UserError } from '../../../lib/errors.js';
import { judgeWebRequest, type WebConnectionPolicy } from '../../../policy/http-rules.js';
import type { ProtocolModule } from '../protocol.js';
import {
  httpConnectionSchema,
  kubernetesConnectionSchema,
  resolveWebConnection,
  type ResolvedHttpConnection,
  type ResolvedKubernetesConnection,
  type ResolvedWebConnection,
} from './config.js';
import { proxyHttpTunnel } from './proxy.js';

export type HttpConnection = ResolvedHttpConnection;
export type KubernetesConnection = ResolvedKubernetesConnection;

function webProtocol<C extends ResolvedWebConnection>(type: C['type'], schema: ProtocolModule['schema']): ProtocolModule<C> {
  return {
    type,
    schema,
    resolve: (raw, ctx) =>
      ctx.skipSecrets
        ? ({ ...(raw as object), credentials: undefined } as unknown as C)
        : (resolveWebConnection(raw as { type: C['type'] }, ctx.secret, { field: ctx.field, readFile: ctx.readFile }) as unknown as C),
    holds: 'request',
    async judge(c, identity, { text }) {
      const m = /^\s*([A-Za-z]+)\s+(\S+)\s*$/.exec(text ?? '');
      if (!m) throw new UserError('expected a request: -e "METHOD /path"', { code: 'USAGE' });
      // The target as the client would send it, resolved the way the proxy's HTTP server resolves it.
      const { verdict } = judgeWebRequest(c as unknown as WebConnectionPolicy, identity, m[1]!, new URL(m[2]!, 'http://hoopctl'));
      return { verdict, statements: [] };
    },
    check(c, at) {
      // The certificate and key the broker presents to the backend must form a pair.
      const pair = c.type === 'kubernetes' ? ('clientCert' in c.credentials ? { field: `${at}.credentials.clientCert`, cc: c.credentials.clientCert } : undefined)
        : c.target.tls?.clientCert ? { field: `${at}.target.tls.clientCert`, cc: c.target.tls.clientCert } : undefined;
      if (!pair) return [];
      try {
        createSecureContext({ cert: pair.cc.cert.reveal(), key: pair.cc.key.reveal() });
        return [];
      } catch (e) {
        return [`${pair.field}: ${(e as Error).message}`];
      }
    },
    target: (c) => ({ url: c.target.url }),
    start: () => ({
      describe: () => ({}),
      async serve(stream, s) {
        const summary = await proxyHttpTunnel(stream, {
          connection: s.connection, recorder: s.recorder, identity: s.identity, logger: s.logger, maskKey: s.maskKey, signal: s.signal, reviews: s.reviews,
        });
        return { outcome: summary.outcome, statementCount: summary.requestCount, errorCount: summary.errorCount, ...(summary.error ? { error: summary.error } : {}) };
      },
    }),
  };
}

export const httpProtocol = webProtocol<HttpConnection>('http', httpConnectionSchema);
export const kubernetesProtocol = webProtocol<KubernetesConnection>('kubernetes', kubernetesConnectionSchema);
