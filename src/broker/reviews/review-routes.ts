import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Identity } from '../../api/identity.js';
import type { Connection } from '../config.js';
import { HoopError } from '../../lib/errors.js';
import { parseDuration } from '../../lib/duration.js';
import { optionalString, readJsonBody, sendJson } from '../http-util.js';
import type { ReviewService } from './review-service.js';
import type { Review, ReviewStatus } from '../../api/review.js';

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
  return r.requester.subject === who.subject || ctx.isAuditor(who) || ctx.reviews.isApprover(who, r);
}

/** Review routes under /api/v1; returns false when the path is not one of them. */
export async function routeReviews(ctx: ReviewRouteContext, req: IncomingMessage, res: ServerResponse, who: Identity, url: URL): Promise<boolean> {
  const path = url.pathname;
  if (req.method === 'GET' && path === '/api/v1/reviews') {
    const status = (url.searchParams.get('status') ?? 'pending').split(',').filter(Boolean);
    if (status.some((s) => !STATUSES.includes(s as ReviewStatus) && s !== 'all')) {
      throw new HoopError(`status must be one of ${STATUSES.join(', ')} or all`, { code: 'BAD_REQUEST', status: 400 });
    }
    const list = await ctx.reviews.list({ status: status.includes('all') ? undefined : (status as ReviewStatus[]) });
    sendJson(res, 200, { reviews: list.filter((r) => visible(ctx, who, r)) });
    return true;
  }
  if (req.method === 'GET' && path === '/api/v1/reviews/stream') {
    streamReviews(ctx, req, res, who);
    return true;
  }
  let m = /^\/api\/v1\/reviews\/(rev_[0-9a-f]+)$/.exec(path);
  if (req.method === 'GET' && m) {
    const review = await ctx.reviews.get(m[1]!);
    if (!review || !visible(ctx, who, review)) throw new HoopError(`no review ${m[1]}`, { code: 'NOT_FOUND', status: 404 });
    sendJson(res, 200, { review });
    return true;
  }
  m = /^\/api\/v1\/reviews\/(rev_[0-9a-f]+)\/(approve|reject|revoke|withdraw)$/.exec(path);
  if (req.method === 'POST' && m) {
    const body = await readJsonBody(req);
    const reason = optionalString(body, 'reason');
    const review =
      m[2] === 'revoke' ? await ctx.reviews.revoke(m[1]!, who, reason)
      : m[2] === 'withdraw' ? await ctx.reviews.withdrawByRequester(m[1]!, who, reason)
      : await ctx.reviews.decide(m[1]!, who, m[2] as 'approve' | 'reject', reason);
    sendJson(res, 200, { review });
    return true;
  }
  m = /^\/api\/v1\/connections\/([^/]+)\/access-requests$/.exec(path);
  if (req.method === 'POST' && m) {
    const connection = await ctx.authorizeRequest(who, decodeURIComponent(m[1]!), req);
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
    const grant = await ctx.reviews.activeGrant(who, connection.name);
    if (grant) return sendJson(res, 200, { review: grant }), true;
    const pending = (await ctx.reviews.list({ status: ['pending'], kind: 'access', connection: connection.name, requester: who.subject }))[0];
    const review = pending ?? (await ctx.reviews.requestAccess({ requester: who, connection: connection.name, reason: optionalString(body, 'reason'), durationMs }));
    sendJson(res, pending ? 200 : 201, { review });
    return true;
  }
  return false;
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
