import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Identity } from '../../api/identity.js';
import type { CredentialRotation } from '../credential-rotation.js';
import { errors, sendJson } from '../http-util.js';

export interface CredentialRouteContext {
  rotation: CredentialRotation;
  isAdmin(identity: Identity): boolean;
}

/**
 * `POST /api/v1/connections/<name>/rotate` (admin groups): rotates the connection's backend credential now and
 * answers with what the audit event recorded. Returns false when the request is not this route.
 */
export async function routeCredentials(ctx: CredentialRouteContext, req: IncomingMessage, res: ServerResponse, identity: Identity, url: URL): Promise<boolean> {
  const m = /^\/api\/v1\/connections\/([a-z0-9][a-z0-9._-]{0,62})\/rotate$/.exec(url.pathname);
  if (!m || req.method !== 'POST') return false;
  if (!ctx.isAdmin(identity)) {
    await ctx.rotation.refused(m[1]!, identity.subject);
    throw errors.denied('only members of the admin groups may rotate credentials');
  }
  sendJson(res, 200, { rotation: await ctx.rotation.rotate(m[1]!, identity.subject) });
  return true;
}
