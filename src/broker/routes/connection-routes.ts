import type { Identity } from '../../api/identity.js';
import { decideAccess } from '../../policy/access.js';
import type { Admission } from '../admission.js';
import type { Connection } from '../config.js';
import { sendJson } from '../http-util.js';
import type { ProtocolRuntimes } from '../protocols/registry.js';
import type { RouteHandlers } from './route-table.js';

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
    name: c.name, type: c.type, description: c.description, ...protocols.of(c).describe(c), ...(c.mcp ? { mcp: c.mcp } : {}),
    approval: c.access.approval ? { maxDuration: c.access.approval.maxDuration, reason: c.access.approval.reason } : undefined,
    reviews: c.reviews ? true : undefined,
  };
}

/** `whoami`, the connections an identity may open, and one of them. */
export function connectionHandlers(ctx: ConnectionRouteContext): Pick<RouteHandlers, 'whoami' | 'listConnections' | 'getConnection'> {
  return {
    whoami({ res, identity }) {
      sendJson(res, 200, { identity, auditor: ctx.isAuditor(identity), admin: ctx.isAdmin(identity) });
    },
    listConnections({ res, identity }) {
      const list = [...ctx.connections().values()].filter((c) => decideAccess(identity, c.access, c.name).allowed).map((c) => describeConnection(c, ctx.protocols));
      sendJson(res, 200, { connections: list });
    },
    async getConnection({ req, res, identity, params }) {
      const connection = await ctx.admission.authorize(identity, params.name!, req);
      sendJson(res, 200, { connection: describeConnection(connection, ctx.protocols) });
    },
  };
}
