import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { createProxyServer, type ProxyServer } from 'http-proxy-3';
import type { ResolvedWebConnection } from './config.js';

export interface Upstream {
  /** `https://api.internal:8443`: what the broker's requests go to. */
  origin: string;
  /** Kept-alive connections to the target, with its TLS settings (CA, client certificate, verification). */
  agent: HttpAgent;
  /** http-proxy-3 aimed at the target through `agent`; responses are handled by the session (masking, recording). */
  proxy: ProxyServer;
}

/**
 * The way to a connection's target: TLS verified against the configured CA unless `insecureSkipVerify`, the broker's
 * client certificate presented where configured (Kubernetes client-certificate credentials, `target.tls.clientCert`).
 */
export function createUpstream(conn: ResolvedWebConnection): Upstream {
  const url = new URL(conn.target.url);
  const https = url.protocol === 'https:';
  const insecure = conn.type === 'kubernetes' ? conn.target.insecureSkipVerify : (conn.target.tls?.insecureSkipVerify ?? false);
  const ca = conn.target.caPem;
  const clientCert = conn.type === 'kubernetes' ? ('clientCert' in conn.credentials ? conn.credentials.clientCert : undefined) : conn.target.tls?.clientCert;
  const identity = clientCert ? { cert: clientCert.cert.reveal(), key: clientCert.key.reveal() } : {};
  const agent = https
    ? new HttpsAgent({ keepAlive: true, maxSockets: 16, rejectUnauthorized: !insecure, ...(ca ? { ca } : {}), ...identity })
    : new HttpAgent({ keepAlive: true, maxSockets: 16 });
  const proxy = createProxyServer({
    target: {
      protocol: url.protocol,
      host: url.hostname,
      hostname: url.hostname,
      port: Number(url.port || (https ? 443 : 80)),
      pathname: url.pathname === '/' ? '' : url.pathname.replace(/\/$/, ''),
      ...(ca ? { ca } : {}),
      ...identity,
    } as never,
    agent,
    changeOrigin: true,
    secure: !insecure,
    xfwd: false,
    selfHandleResponse: true,
    ws: true,
  });
  return { origin: url.origin, agent, proxy };
}
