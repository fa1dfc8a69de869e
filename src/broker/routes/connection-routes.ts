import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Identity } from '../../api/identity.js';
import { decideAccess } from '../../policy/access.js';
import type { Admission } from '../admission.js';
import type { Connection } from '../config.js';
import { sendJson } from '../http-util.js';
import type { ProtocolRuntimes } from '../protocols/registry.js';

export interface ConnectionRouteContext {
  connections: () => ReadonlyMap<string, Connection>;
  protocols: ProtocolRuntimes;
  admission: Admission;
  isAuditor(identity: Identity): boolean;
  isAdmin(identity: Identity): boolean;
}

/** What a connection tells a client: its name and type, what its module says, and whether it needs a grant. */
export function describeConnection(c: Connection, protocols: ProtocolRuntimes): Record<string, unknown> {
  return {
    name: c.name, type: c.type, description: c.description, ...protocols.of(c).describe(c),
    approval: c.access.approval ? { maxDuration: c.access.approval.maxDuration, reason: c.access.approval.reason } : undefined,
    reviews: c.reviews ? true : undefined,
  };
}

/** `whoami` and the connections an identity may open. Returns false when the request is not one of these. */
export async function routeConnections(ctx: ConnectionRouteContext, req: IncomingMessage, res: ServerResponse, identity: Identity, url: URL): Promise<boolean> {
  const path = url.pathname;
  if (req.method !== 'GET') return false;
  if (path === '/api/v1/whoami') {
    sendJson(res, 200, { identity, auditor: ctx.isAuditor(identity), admin: ctx.isAdmin(identity) });
    return true;
  }
  if (path === '/api/v1/connections') {
    const list = [...ctx.connections().values()].filter((c) => decideAccess(identity, c.access, c.name).allowed).map((c) => describeConnection(c, ctx.protocols));
    sendJson(res, 200, { connections: list });
    return true;
  }
  const m = /^\/api\/v1\/connections\/([^/]+)$/.exec(path);
  if (m) {
    const connection = await ctx.admission.authorize(identity, decodeURIComponent(m[1]!), req);
    sendJson(res, 200, { connection: describeConnection(connection, ctx.protocols) });
    return true;
  }
  return false;
}
