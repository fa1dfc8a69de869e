import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_ROUTES, type RouteId } from '../../src/broker/routes/route-table.js';
import { call, openTunnel, ROLES, startGateStack, upgrade, type Answer, type GateStack, type Role } from '../support/gate-stack.js';

/**
 * Every route of the broker's route table × every kind of caller, with the answer each must get, as real HTTP
 * against a broker process with real device-flow tokens. The rows are keyed by route id: a route added to the table
 * without a row here (or a row left for a route that is gone) fails the first test. Resources a call acts on belong
 * to the requester (rita, group dba); mutating calls get a fresh one per cell, so each cell is judged on its own.
 *
 * Expected answers: a status, and for listings whether the requester's item is in it (`sees`) or not (`blind`).
 */
type Caller = 'none' | Role;
const CALLERS: Caller[] = ['none', ...ROLES];
type Expected = '101' | '200' | '200 sees' | '200 blind' | '201' | '401' | '403' | '404' | '409';

interface Fixture {
  /** Substituted for `:id` / `:name` in the route's path. */
  params?: Record<string, string>;
  body?: unknown;
  /** What a listing must contain for `sees` (an id). */
  item?: string;
  cleanup?: () => Promise<void>;
}

interface Row {
  /** Builds what the call acts on; runs once per cell. */
  fixture?: (g: Gate) => Promise<Fixture>;
  expect: Record<Caller, Expected>;
}

/** `stranger` has no group the broker knows; `requester` may open both connections; see test/support/gate-stack.ts. */
const row = (expected: Expected[], fixture?: Row['fixture']): Row => ({
  fixture,
  expect: Object.fromEntries(CALLERS.map((c, i) => [c, expected[i]!])) as Record<Caller, Expected>,
});

//                                      none   stranger  requester   approver   auditor    admin
const MATRIX: Record<RouteId, Row> = {
  health: row(['200', '200', '200', '200', '200', '200']),
  ready: row(['200', '200', '200', '200', '200', '200']),
  authConfig: row(['200', '200', '200', '200', '200', '200']),
  whoami: row(['401', '200', '200', '200', '200', '200']),
  listConnections: row(['401', '200 blind', '200 sees', '200 blind', '200 blind', '200 blind'], async () => ({ item: 'echo' })),
  getConnection: row(['401', '403', '200', '403', '403', '403'], async () => ({ params: { name: 'echo' } })),
  // A tcp connection has no credential to rotate: an admin passes the gate and hears so (409).
  rotateCredentials: row(['401', '403', '403', '403', '403', '409'], async () => ({ params: { name: 'echo' }, body: {} })),
  requestAccess: row(['401', '403', '201', '403', '403', '403'], async (g) => (await g.noOpenAccessRequest(), { params: { name: 'gated' }, body: { duration: '10m' } })),
  listReviews: row(['401', '200 blind', '200 sees', '200 sees', '200 sees', '200 blind'], async (g) => ({ item: await g.pendingAccessRequest() })),
  streamReviews: row(['401', '200', '200', '200', '200', '200']),
  getReview: row(['401', '404', '200', '200', '200', '404'], async (g) => ({ params: { id: await g.pendingAccessRequest() } })),
  approveReview: row(['401', '403', '403', '200', '403', '403'], async (g) => ({ params: { id: await g.pendingAccessRequest() }, body: {} })),
  rejectReview: row(['401', '403', '403', '200', '403', '403'], async (g) => ({ params: { id: await g.pendingAccessRequest() }, body: { reason: 'not now' } })),
  revokeGrant: row(['401', '403', '403', '200', '403', '403'], async (g) => ({ params: { id: await g.activeGrant() }, body: { reason: 'incident over' } })),
  withdrawReview: row(['401', '404', '200', '404', '404', '404'], async (g) => ({ params: { id: await g.pendingAccessRequest() }, body: {} })),
  listSessions: row(['401', '200 blind', '200 sees', '200 blind', '200 sees', '200 blind'], async (g) => ({ item: g.sessionId })),
  getSession: row(['401', '404', '200', '404', '200', '404'], async (g) => ({ params: { id: g.sessionId } })),
  watchSession: row(['401', '404', '200', '404', '200', '404'], async (g) => ({ params: { id: g.sessionId } })),
  endSession: row(['401', '403', '403', '403', '403', '200'], (g) => g.liveSession()),
  auditEvents: row(['401', '403', '403', '403', '200', '403']),
  auditKey: row(['401', '200', '200', '200', '200', '200']),
  listLocks: row(['401', '403', '403', '403', '200', '200']),
  createLock: row(['401', '403', '403', '403', '403', '201'], async (g) => g.lockBody()),
  liftLock: row(['401', '403', '403', '403', '403', '200'], async (g) => ({ params: { id: await g.lock() } })),
};

/** The tunnel upgrade is no request route, but it is a door too. */
const TUNNEL = row(['401', '403', '101', '403', '403', '403']);

/** Fixtures on the real broker, made through its API by the identities that may make them. */
class Gate {
  sessionId = '';
  #locks = 0;
  constructor(readonly stack: GateStack) {}

  send(as: Role, method: string, path: string, body?: unknown): Promise<Answer> {
    return call(this.stack.brokerUrl, method, path, { token: this.stack.tokens[as], body });
  }

  async json<T>(as: Role, method: string, path: string, body?: unknown, status = [200, 201]): Promise<T> {
    const a = await this.send(as, method, path, body);
    if (!status.includes(a.status)) throw new Error(`fixture ${method} ${path} as ${as}: HTTP ${a.status} ${a.body}`);
    return JSON.parse(a.body) as T;
  }

  /** The requester's access request on `gated`: the pending one, or a new one (an active grant is revoked first). */
  async pendingAccessRequest(): Promise<string> {
    type R = { review: { id: string; status: string } };
    let { review } = await this.json<R>('requester', 'POST', '/api/v1/connections/gated/access-requests', { duration: '10m' });
    if (review.status === 'approved') {
      await this.json('approver', 'POST', `/api/v1/reviews/${review.id}/revoke`, { reason: 'matrix: a fresh request' });
      ({ review } = await this.json<R>('requester', 'POST', '/api/v1/connections/gated/access-requests', { duration: '10m' }));
    }
    expect(review.status).toBe('pending');
    return review.id;
  }

  /** An approved, running grant of the requester on `gated`. */
  async activeGrant(): Promise<string> {
    const id = await this.pendingAccessRequest();
    await this.json('approver', 'POST', `/api/v1/reviews/${id}/approve`, {});
    return id;
  }

  /** Neither a pending request nor a grant of the requester on `gated`, so asking for access files a new one. */
  async noOpenAccessRequest(): Promise<void> {
    const id = await this.pendingAccessRequest();
    await this.json('approver', 'POST', `/api/v1/reviews/${id}/reject`, { reason: 'matrix: start over' });
  }

  /** A running session of the requester, ended (by the client) after the cell. */
  async liveSession(): Promise<Fixture> {
    type L = { sessions: Array<{ id: string }> };
    const open = async () => (await this.json<L>('requester', 'GET', '/api/v1/sessions?status=open')).sessions.map((s) => s.id);
    const before = new Set(await open());
    const tunnel = await openTunnel(this.stack.brokerUrl, 'echo', this.stack.tokens.requester);
    const fresh = (await open()).filter((id) => !before.has(id));
    expect(fresh).toHaveLength(1);
    return { params: { id: fresh[0]! }, body: { reason: 'matrix' }, cleanup: () => tunnel.close() };
  }

  lockBody(): Fixture {
    const subject = `zed-${++this.#locks}`;
    return {
      body: { subject, reason: 'matrix', duration: '1h' },
      cleanup: async () => {
        const { locks } = await this.json<{ locks: Array<{ id: string; target: { subject?: string } }> }>('admin', 'GET', '/api/v1/locks');
        for (const l of locks.filter((l) => l.target.subject === subject)) await this.json('admin', 'POST', `/api/v1/locks/${l.id}/lift`, {});
      },
    };
  }

  async lock(): Promise<string> {
    const { lock } = await this.json<{ lock: { id: string } }>('admin', 'POST', '/api/v1/locks', this.lockBody().body);
    return lock.id;
  }
}

describe('authorization matrix: every route × every kind of caller', () => {
  let stack: GateStack;
  let gate: Gate;

  beforeAll(async () => {
    stack = await startGateStack();
    gate = new Gate(stack);
    // One recorded session of the requester for the read rows (closed: what is read is its record).
    const tunnel = await openTunnel(stack.brokerUrl, 'echo', stack.tokens.requester);
    gate.sessionId = (await gate.json<{ sessions: Array<{ id: string }> }>('requester', 'GET', '/api/v1/sessions?status=open')).sessions[0]!.id;
    await tunnel.close();
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('has exactly one row per route of the table', () => {
    expect(Object.keys(MATRIX).sort()).toEqual(Object.keys(API_ROUTES).sort());
  });

  it('answers every route as its row says, and records every 403 as an access-denied event', async () => {
    const auditAfter = await lastAuditSeq(gate);
    const outcomes: string[] = [];
    let denied = 0;
    for (const [id, r] of Object.entries(MATRIX) as Array<[RouteId, Row]>) {
      const spec = API_ROUTES[id];
      for (const caller of CALLERS) {
        const f = (await r.fixture?.(gate)) ?? {};
        const path = spec.path.replace(/:(\w+)/g, (_, name: string) => encodeURIComponent(f.params?.[name] ?? ''));
        const answer = await call(stack.brokerUrl, spec.method, path, { token: caller === 'none' ? undefined : stack.tokens[caller], body: f.body ?? (spec.method === 'POST' ? {} : undefined) });
        await f.cleanup?.();
        const [, view] = r.expect[caller].split(' ');
        const got = `${answer.status}${view ? (answer.body.includes(`"${f.item}"`) ? ' sees' : ' blind') : ''}`;
        outcomes.push(`${spec.method} ${spec.path} as ${caller}: ${got}${got === r.expect[caller] ? '' : ` (expected ${r.expect[caller]}; ${answer.body.slice(0, 160)})`}`);
        if (answer.status === 403) denied++;
      }
    }
    // All cells at once, so one run shows every hole.
    expect(outcomes.filter((o) => o.includes('expected'))).toEqual([]);
    expect(outcomes).toHaveLength(Object.keys(API_ROUTES).length * CALLERS.length);
    const events = await auditSince(gate, auditAfter);
    expect(events.filter((e) => e.type === 'access-denied')).toHaveLength(denied);
  });

  it('lets only the requester through the tunnel door', async () => {
    for (const caller of CALLERS) {
      const answer = await upgrade(stack.brokerUrl, '/api/v1/tunnel/echo', caller === 'none' ? {} : { authorization: `Bearer ${stack.tokens[caller]}` });
      expect(`${answer.status}`, caller).toBe(TUNNEL.expect[caller]);
    }
  });
});

interface AuditEvent {
  seq: number;
  type: string;
}

async function lastAuditSeq(g: Gate): Promise<number> {
  return (await auditSince(g, 0)).at(-1)?.seq ?? 0;
}

async function auditSince(g: Gate, afterSeq: number): Promise<AuditEvent[]> {
  const events: AuditEvent[] = [];
  for (let after = afterSeq; ; ) {
    const page = (await g.json<{ events: AuditEvent[] }>('auditor', 'GET', `/api/v1/audit?after=${after}`)).events;
    if (page.length === 0) return events;
    events.push(...page);
    after = page.at(-1)!.seq;
  }
}
