import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { WebSocket } from 'ws';
import { startHttpBackend, startTunnelHarness, type HttpBackend, type TunnelHarness } from '../support/http-backend.js';
import { httpConnectionSchema, resolveWebConnection } from '../../src/broker/protocols/http/config.js';
import type { HoldRequest, HoldOutcome, StatementReviews } from '../../src/broker/protocols/protocol.js';

const run = promisify(execFile);
const SECRET = 'backend-secret-7f3a';

interface Curl {
  status: number;
  headers: string;
  body: string;
  raw: string;
}

/** Real curl through the tunnel; `-i` so headers are part of what the client saw. */
async function curl(url: string, args: string[] = []): Promise<Curl> {
  const { stdout } = await run('curl', ['-s', '-i', '--max-time', '20', ...args, url], { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  // A `100 Continue` preamble comes first when curl sent a body.
  const raw = stdout.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, '');
  const split = raw.indexOf('\r\n\r\n');
  const headers = raw.slice(0, split);
  return { status: Number(/^HTTP\/[\d.]+ (\d+)/.exec(headers)?.[1]), headers, body: raw.slice(split + 4), raw };
}

/** The review machinery's interface, played by the test: decisions are released by the test itself. */
class ScriptedReviews implements StatementReviews {
  held: HoldRequest[] = [];
  #waiting: Array<(o: HoldOutcome) => void> = [];
  /** Requests withdrawn because their client went away (the service withdraws on `io.signal`, as the real one does). */
  withdrawn: HoldRequest[] = [];
  hold(request: HoldRequest, io: { signal: AbortSignal }): Promise<HoldOutcome> {
    this.held.push(request);
    return new Promise((resolve) => {
      let settled = false;
      const settle = (o: HoldOutcome) => {
        settled = true;
        resolve(o);
      };
      this.#waiting.push(settle);
      io.signal.addEventListener('abort', () => {
        if (settled) return;
        this.#waiting = this.#waiting.filter((r) => r !== settle);
        this.withdrawn.push(request);
        settle({ approved: false, message: 'withdrawn' });
      });
    });
  }
  async waitForHold(n: number): Promise<void> {
    for (let i = 0; i < 1200 && this.held.length < n; i++) await new Promise((r) => setTimeout(r, 25));
    expect(this.held.length).toBe(n);
  }
  decide(o: HoldOutcome): void {
    const next = this.#waiting.shift();
    if (!next) throw new Error('nothing held');
    next(o);
  }
}

let backend: HttpBackend;
let gate: TunnelHarness;
const reviews = new ScriptedReviews();

function connection(overrides: Record<string, unknown> = {}) {
  const raw = httpConnectionSchema.parse({
    name: 'api',
    type: 'http',
    target: { url: backend.url },
    credentials: { bearer: { value: SECRET } },
    access: { groups: ['dev'] },
    rules: [
      { name: 'no-admin', match: { path: '/admin/*' }, action: 'deny' },
      { name: 'refunds', match: { method: 'POST', path: '/refunds/*' }, action: 'review' },
    ],
    mask: { jsonPaths: ['$.users[*].email'], detectors: ['credit_card', 'email', 'phone'], maxBytes: 65536 },
    recordBodies: { maxBytes: 2048 },
    ...overrides,
  });
  return resolveWebConnection(raw, (source) => ({ reveal: () => ('value' in source ? source.value : 'unused') }));
}

beforeAll(async () => {
  backend = await startHttpBackend();
  gate = await startTunnelHarness({ connection: connection(), reviews });
});

afterAll(async () => {
  await gate?.close();
  await backend?.close();
});

const requests = () => gate.events.filter((e) => e.type === 'request');

describe('credentials', () => {
  it('injects the broker credential; the client never sees it and its own Authorization is dropped', async () => {
    const before = backend.seen.length;
    const r = await curl(`${gate.url}/echo?x=1`, ['-H', 'Authorization: Bearer client-own-token', '-H', 'X-Trace: t1']);
    expect(r.status).toBe(200);
    const seen = backend.seen.slice(before);
    expect(seen).toHaveLength(1);
    expect(seen[0].headers.authorization).toBe(`Bearer ${SECRET}`);
    expect(seen[0].headers['x-trace']).toBe('t1');
    expect(seen[0].url).toBe('/echo?x=1');
    expect(JSON.stringify(seen[0].headers)).not.toContain('client-own-token');
    expect(r.raw).not.toContain(SECRET);
    expect(JSON.parse(r.body)).toMatchObject({ method: 'GET', path: '/echo', query: '?x=1' });
  });

  it('injects a named header (and drops a client-sent one of the same name)', async () => {
    const other = await startTunnelHarness({ connection: connection({ credentials: { header: { name: 'X-Api-Key', value: { value: 'key-123' } } } }) });
    try {
      const before = backend.seen.length;
      const r = await curl(`${other.url}/echo`, ['-H', 'X-Api-Key: mine']);
      expect(r.status).toBe(200);
      expect(backend.seen.slice(before)[0].headers['x-api-key']).toBe('key-123');
      expect(r.raw).not.toContain('key-123');
    } finally {
      await other.close();
    }
  });
});

describe('rules', () => {
  it('denies /admin/* with 403 naming the rule; the backend never sees it', async () => {
    const before = backend.seen.length;
    const r = await curl(`${gate.url}/admin/users`);
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toEqual({ error: 'hoopctl: denied by rule "no-admin"', rule: 'no-admin' });
    expect(backend.seen.length).toBe(before);
    // A dot-segment does not step around the rule.
    const sneaky = await curl(`${gate.url}/public/%2e%2e/admin/users`, ['--path-as-is']);
    expect(sneaky.status).toBe(403);
    expect(backend.seen.length).toBe(before);
    const ev = requests().filter((e) => e.data.path === '/admin/users');
    expect(ev.length).toBeGreaterThanOrEqual(2);
    expect(ev[0].data).toMatchObject({ method: 'GET', status: 403, verdict: 'deny', rule: 'no-admin' });
  });

  it('holds a review request until it is approved, then forwards it with its body', async () => {
    const before = backend.seen.length;
    const pending = curl(`${gate.url}/refunds/42`, ['-X', 'POST', '-H', 'content-type: application/json', '-d', '{"amount":5}']);
    await reviews.waitForHold(1);
    expect(reviews.held[0]).toMatchObject({ statement: 'POST /refunds/42', rule: 'refunds' });
    // Held: nothing reached the backend yet.
    await new Promise((r) => setTimeout(r, 150));
    expect(backend.seen.length).toBe(before);
    reviews.decide({ approved: true, reviewId: 'rev_1', message: 'approved' });
    const r = await pending;
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ method: 'POST', path: '/refunds/42', body: '{"amount":5}' });
    expect(backend.seen.slice(before)).toHaveLength(1);
    const ev = requests().find((e) => e.data.path === '/refunds/42');
    expect(ev?.data).toMatchObject({ verdict: 'review', rule: 'refunds', review: 'rev_1', status: 200, requestBytes: 12 });
    expect(ev?.data.requestBody).toEqual({ text: '{"amount":5}' });
  });

  it('answers a rejected review with 403 and the reviewer\u2019s reason', async () => {
    const before = backend.seen.length;
    const pending = curl(`${gate.url}/refunds/43`, ['-X', 'POST', '-d', 'x=1']);
    await reviews.waitForHold(2);
    reviews.decide({ approved: false, reviewId: 'rev_2', message: 'hoopctl: review rev_2 rejected by carol: not today' });
    const r = await pending;
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'hoopctl: review rev_2 rejected by carol: not today', rule: 'refunds', review: 'rev_2' });
    expect(backend.seen.length).toBe(before);
  });

  it('withdraws a held request whose client gives up, records it as 499, and never forwards it', async () => {
    const before = backend.seen.length;
    const { execFile } = await import('node:child_process');
    const gaveUp = new Promise<void>((resolve) => execFile('curl', ['-s', '--max-time', '1', '-X', 'POST', '-d', 'x=1', `${gate.url}/refunds/45`], () => resolve()));
    await reviews.waitForHold(3);
    await gaveUp;
    for (let i = 0; i < 1500 && reviews.withdrawn.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(reviews.withdrawn.map((h) => h.statement)).toEqual(['POST /refunds/45']);
    for (let i = 0; i < 1500 && !requests().some((e) => e.data.path === '/refunds/45'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(requests().find((e) => e.data.path === '/refunds/45')?.data).toMatchObject({ status: 499, error: 'client went away while held' });
    expect(backend.seen.length).toBe(before);
  });

  it('refuses a review request when no reviewers are configured (fail closed)', async () => {
    const other = await startTunnelHarness({ connection: connection() });
    try {
      const before = backend.seen.length;
      const r = await curl(`${other.url}/refunds/44`, ['-X', 'POST', '-d', 'x=1']);
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body).error).toMatch(/needs approval \(rule "refunds"\)/);
      expect(backend.seen.length).toBe(before);
    } finally {
      await other.close();
    }
  });
});

describe('masking', () => {
  const raw = ['ada@example.com', 'bob@example.org', '4111 1111 1111 1111', '5555555555554444', 'bob.backup@example.net', '+1 415 555 0100'];

  it('masks JSON by path and by detectors, in the client body and the recording', async () => {
    const before = backend.seen.length;
    const r = await curl(`${gate.url}/users`, ['-H', 'Accept-Encoding: gzip']);
    expect(r.status).toBe(200);
    // The broker asked for an uncompressed body so it can read it.
    expect(backend.seen[before].headers['accept-encoding']).toBe('identity');
    const body = JSON.parse(r.body) as { users: Array<Record<string, unknown>>; total: number };
    expect(body.total).toBe(2);
    expect(body.users[0]).toMatchObject({ id: 1, name: 'Ada', email: '[REDACTED]', card: '[REDACTED:credit_card]' });
    expect(body.users[1]).toMatchObject({ email: '[REDACTED]', card: '[REDACTED:credit_card]', note: 'mail [REDACTED:email]' });
    for (const v of raw) expect(r.raw).not.toContain(v);
    const ev = requests().find((e) => e.data.path === '/users');
    expect(ev?.data).toMatchObject({ status: 200, responseBytes: Buffer.byteLength(r.body) });
    expect(String((ev?.data.body as { text: string }).text)).toContain('[REDACTED]');
    const all = JSON.stringify(gate.events);
    for (const v of raw) expect(all).not.toContain(v);
  });

  it('decodes a gzip body the backend sends anyway, and masks it', async () => {
    const r = await curl(`${gate.url}/users?gzip=always`, ['--compressed']);
    expect(r.status).toBe(200);
    expect(r.headers.toLowerCase()).not.toContain('content-encoding: gzip');
    for (const v of raw) expect(r.raw).not.toContain(v);
    expect(JSON.parse(r.body).users[0].email).toBe('[REDACTED]');
  });

  it('masks text line by line and withholds a JSON body too large to mask', async () => {
    const t = await curl(`${gate.url}/text`);
    expect(t.body).toBe('line one [REDACTED:email]\nline two\n');
    const big = await curl(`${gate.url}/big?n=100000`);
    expect(big.status).toBe(502);
    expect(JSON.parse(big.body).error).toMatch(/larger than the masking limit/);
    expect(big.body).not.toContain('xxxxxxxx');
  });

  it('passes binary bodies through untouched', async () => {
    const { stdout } = await run('curl', ['-s', `${gate.url}/binary`], { encoding: 'buffer' });
    expect([...stdout]).toEqual([0, 1, 2, 3, 255]);
  });
});

describe('websocket', () => {
  it('proxies an upgrade with the injected credential and echoes messages both ways', async () => {
    const before = backend.seen.length;
    const ws = new WebSocket(`ws://127.0.0.1:${gate.port}/ws/chat`, { headers: { authorization: 'Bearer client-own-token' } });
    const messages: string[] = [];
    const got = (n: number) =>
      new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`only ${messages.length} messages`)), 5000);
        const check = () => messages.length >= n && (clearTimeout(t), resolve());
        ws.on('message', (d) => {
          messages.push(String(d));
          check();
        });
      });
    const first = got(2);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.send('ping 1');
    await first;
    expect(JSON.parse(messages[0])).toEqual({ hello: 'from backend' });
    expect(messages[1]).toBe('echo: ping 1');
    const seen = backend.seen.slice(before);
    expect(seen[0].url).toBe('/ws/chat');
    expect(seen[0].headers.authorization).toBe(`Bearer ${SECRET}`);
    ws.close();
    await new Promise((r) => ws.once('close', r));
    for (let i = 0; i < 1500 && !requests().some((e) => e.data.path === '/ws/chat'); i++) await new Promise((r) => setTimeout(r, 20));
    const ev = requests().find((e) => e.data.path === '/ws/chat');
    expect(ev?.data).toMatchObject({ method: 'GET', upgrade: 'websocket', status: 101, verdict: 'allow' });
    expect(Number(ev?.data.requestBytes)).toBeGreaterThan(0);
    expect(Number(ev?.data.responseBytes)).toBeGreaterThan(0);
  });
});

describe('recording', () => {
  it('records every request before forwarding and once answered, with sizes and duration', async () => {
    const n = requests().length;
    const r = await curl(`${gate.url}/echo/recorded`, ['-X', 'PUT', '-d', 'hello']);
    expect(r.status).toBe(200);
    const start = gate.events.filter((e) => e.type === 'request-start' && e.data.path === '/echo/recorded');
    expect(start).toHaveLength(1);
    const done = requests().slice(n).filter((e) => e.data.path === '/echo/recorded');
    expect(done).toHaveLength(1);
    expect(done[0].data).toMatchObject({ method: 'PUT', status: 200, verdict: 'allow', requestBytes: 5, responseBytes: Buffer.byteLength(r.body) });
    expect(typeof done[0].data.durationMs).toBe('number');
    expect(gate.events.indexOf(start[0])).toBeLessThan(gate.events.indexOf(done[0]));
  });

  it('serves several requests on one kept-alive connection as one session', async () => {
    const sessionsBefore = new Set(gate.events.map((e) => e.sessionId));
    await curl(`${gate.url}/echo/a`, ['--next', `${gate.url}/echo/b`]);
    const a = requests().find((e) => e.data.path === '/echo/a');
    const b = requests().find((e) => e.data.path === '/echo/b');
    expect(a && b).toBeTruthy();
    expect(a!.sessionId).toBe(b!.sessionId);
    expect(sessionsBefore.has(a!.sessionId)).toBe(false);
  });
});
