import type { IncomingMessage, ServerResponse } from 'node:http';
import { sameIdentity, type Identity } from '../../api/identity.js';
import type { Connection } from '../config.js';
import { HoopError } from '../../lib/errors.js';
import { parseDuration } from '../../lib/duration.js';
import { optionalString, readJsonBody, sendJson } from '../http-util.js';
import type { ReviewService } from './review-service.js';
import type { Review, ReviewStatus } from '../../api/review.js';
import type { AuthenticatedCall, RouteHandlers } from '../routes/route-table.js';

const STATUSES: ReviewStatus[] = ['pending', 'approved', 'rejected', 'expired', 'withdrawn', 'revoked', 'orphaned'];

export interface ReviewRouteContext {
  reviews: ReviewService;
  connections: Map<string, Connection>;
  isAuditor(identity: Identity): boolean;
  /** Checks that `identity` may open `name` at all (groups etc.), recording a refusal; returns the connection. */
  authorizeRequest(identity: Identity, name: string, req: IncomingMessage): Promise<Connection>;
}

/** Approvers see the reviews of connections they approve; auditors see all; everyone sees their own. */
function visible(ctx: ReviewRouteContext, who: Identity, r: Review): boolean {
  return sameIdentity(r.requester, who) || ctx.isAuditor(who) || ctx.reviews.isApprover(who, r);
}

/** Reviews: list, watch and read what the caller may see, decide, revoke a grant, withdraw one's own, ask for access. */
export function reviewHandlers(
  ctx: ReviewRouteContext,
): Pick<RouteHandlers, 'listReviews' | 'streamReviews' | 'getReview' | 'approveReview' | 'rejectReview' | 'revokeGrant' | 'withdrawReview' | 'requestAccess'> {
  const decide = (action: 'approve' | 'reject') => async ({ req, res, identity, params }: AuthenticatedCall) => {
    const reason = optionalString(await readJsonBody(req), 'reason');
    sendJson(res, 200, { review: await ctx.reviews.decide(params.id!, identity, action, reason) });
  };
  return {
    async listReviews({ res, url, identity }) {
      const status = (url.searchParams.get('status') ?? 'pending').split(',').filter(Boolean);
      if (status.some((s) => !STATUSES.includes(s as ReviewStatus) && s !== 'all')) {
        throw new HoopError(`status must be one of ${STATUSES.join(', ')} or all`, { code: 'BAD_REQUEST', status: 400 });
      }
      const list = await ctx.reviews.list({ status: status.includes('all') ? undefined : (status as ReviewStatus[]) });
      sendJson(res, 200, { reviews: list.filter((r) => visible(ctx, identity, r)) });
    },
    streamReviews({ req, res, identity }) {
      streamReviews(ctx, req, res, identity);
    },
    async getReview({ res, identity, params }) {
      const review = await ctx.reviews.get(params.id!);
      if (!review || !visible(ctx, identity, review)) throw new HoopError(`no review ${params.id}`, { code: 'NOT_FOUND', status: 404 });
      sendJson(res, 200, { review });
    },
    approveReview: decide('approve'),
    rejectReview: decide('reject'),
    async revokeGrant({ req, res, identity, params }) {
      const reason = optionalString(await readJsonBody(req), 'reason');
      sendJson(res, 200, { review: await ctx.reviews.revoke(params.id!, identity, reason) });
    },
    // A requester takes back their own pending review (anyone else: not found, as for a review they cannot see).
    async withdrawReview({ req, res, identity, params }) {
      const reason = optionalString(await readJsonBody(req), 'reason');
      sendJson(res, 200, { review: await ctx.reviews.withdrawByRequester(params.id!, identity, reason) });
    },
    async requestAccess({ req, res, identity, params }) {
      const connection = await ctx.authorizeRequest(identity, params.name!, req);
      const body = await readJsonBody(req);
      const durationText = optionalString(body, 'duration');
      let durationMs: number | undefined;
      if (durationText !== undefined) {
        try {
          durationMs = parseDuration(durationText);
        } catch (e) {
          throw new HoopError((e as Error).message, { code: 'BAD_REQUEST', status: 400 });
        }
      }
      const grant = await ctx.reviews.activeGrant(identity, connection.name);
      if (grant) return sendJson(res, 200, { review: grant });
      const pending = (await ctx.reviews.list({ status: ['pending'], kind: 'access', connection: connection.name, requester: identity.subject }))
        .find((r) => sameIdentity(r.requester, identity));
      const review = pending ?? (await ctx.reviews.requestAccess({ requester: identity, connection: connection.name, reason: optionalString(body, 'reason'), durationMs }));
      sendJson(res, pending ? 200 : 201, { review });
    },
  };
}

/**
 * Server-sent events: a `review` event with the whole review on every change the caller may see, and a
 * comment line every 15 s so proxies keep the stream open. The Ink console and waiting CLIs read it.
 */
function streamReviews(ctx: ReviewRouteContext, req: IncomingMessage, res: ServerResponse, who: Identity): void {
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive' });
  res.write(': live\n\n');
  const onChange = (r: Review) => {
    if (visible(ctx, who, r)) res.write(`event: review\ndata: ${JSON.stringify(r)}\n\n`);
  };
  const keepalive = setInterval(() => res.write(': keepalive\n\n'), 15_000);
  ctx.reviews.on('change', onChange);
  const stop = () => {
    clearInterval(keepalive);
    ctx.reviews.off('change', onChange);
  };
  req.on('close', stop);
  res.on('error', stop);
}
