import type { CredentialRotation } from '../credential-rotation.js';
import { sendJson } from '../http-util.js';
import type { RouteHandlers } from './route-table.js';

export interface CredentialRouteContext {
  rotation: CredentialRotation;
}

/**
 * `POST /api/v1/connections/<name>/rotate` (admin groups, gated by the route table; a refusal is an
 * `access-denied` audit event like every 403): rotates the connection's backend credential now and answers with what
 * the audit event recorded.
 */
export function credentialHandlers(ctx: CredentialRouteContext): Pick<RouteHandlers, 'rotateCredentials'> {
  return {
    async rotateCredentials({ res, params, identity }) {
      sendJson(res, 200, { rotation: await ctx.rotation.rotate(params.name!, identity.subject) });
    },
  };
}
