import { createPublicKey } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK, type JWTHeaderParameters, type JWTPayload } from 'jose';
import { deviceLoginAs } from '../support/device-user.js';
import { AUDIENCE, call, openTunnel, startGateStack, upgrade, type Answer, type GateStack } from '../support/gate-stack.js';

/**
 * Token attacks against every door that takes a bearer token, on a real broker process trusting a real
 * oidc-provider: the REST API, both server-sent event streams, the MCP endpoint and the tunnel's WebSocket upgrade. Every forged,
 * stale, misplaced or oversized token is refused with its own code, every refusal is in the audit stream, the broker
 * stays up and still serves a genuine token afterwards. SECURITY.md lists the cases and the figures of a run.
 */

interface Attack {
  name: string;
  /** The error code the broker answers with (and records). */
  code: string;
  /** The bearer token sent in the Authorization header; absent for the query-string case. */
  token?: string;
  /** Sent as `?access_token=` instead of a header. */
  queryToken?: string;
  /** The answer's HTTP status; 401 unless said. */
  status?: number;
}

type Door = (a: { token?: string; query?: string }) => Promise<Answer>;

const HOUR = 3600;

describe('token attacks on the REST API, the event streams and the tunnel', () => {
  let stack: GateStack;
  let sessionId: string;
  let doors: Record<string, Door>;

  beforeAll(async () => {
    stack = await startGateStack();
    // A recorded session of the requester, whose live stream is one of the doors.
    const tunnel = await openTunnel(stack.brokerUrl, 'echo', stack.tokens.requester);
    const mine = JSON.parse((await call(stack.brokerUrl, 'GET', '/api/v1/sessions?status=open', { token: stack.tokens.requester })).body) as { sessions: Array<{ id: string }> };
    sessionId = mine.sessions[0]!.id;
    await tunnel.close();
    const url = stack.brokerUrl;
    const q = (path: string, query?: string) => (query ? `${path}?access_token=${encodeURIComponent(query)}` : path);
    doors = {
      'REST GET /api/v1/whoami': (a) => call(url, 'GET', q('/api/v1/whoami', a.query), { token: a.token }),
      'SSE GET /api/v1/reviews/stream': (a) => call(url, 'GET', q('/api/v1/reviews/stream', a.query), { token: a.token }),
      'SSE GET /api/v1/sessions/<id>/stream': (a) => call(url, 'GET', q(`/api/v1/sessions/${sessionId}/stream`, a.query), { token: a.token }),
      // An MCP client's first message (initialize) on the remote MCP endpoint; its 401 also names the metadata URL.
      'MCP POST /mcp': (a) => call(url, 'POST', q('/mcp', a.query), {
        token: a.token,
        headers: { accept: 'application/json, text/event-stream' },
        body: { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'token-attacks', version: '1' } } },
      }),
      'WebSocket GET /api/v1/tunnel/echo': (a) => upgrade(url, q('/api/v1/tunnel/echo', a.query), a.token === undefined ? {} : { authorization: `Bearer ${a.token}` }),
    };
  });
  afterAll(async () => {
    await stack?.stop();
  });

  /** A token signed like the issuer's own unless told otherwise; the defaults make one the broker accepts. */
  async function forge(claims: JWTPayload = {}, o: { key?: JWK; header?: Partial<JWTHeaderParameters>; omit?: string[] } = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const payload: JWTPayload = { iss: stack.issuer.issuer, aud: AUDIENCE, sub: 'rita', iat: now, exp: now + 300, client_id: 'hoopctl-cli', groups: ['dba'], ...claims };
    for (const c of o.omit ?? []) delete payload[c];
    const key = await importJWK(o.key ?? stack.issuer.signingKey, 'RS256');
    return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: stack.issuer.kid, ...o.header }).sign(key);
  }

  async function attacks(): Promise<Attack[]> {
    const now = Math.floor(Date.now() / 1000);
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const claims = { iss: stack.issuer.issuer, aud: AUDIENCE, sub: 'rita', groups: ['auditors', 'sre-leads'], iat: now, exp: now + 300 };
    const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...publicJwk } = stack.issuer.signingKey;
    const publicPem = createPublicKey({ key: publicJwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string;
    const hmac = (secret: string) => new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: stack.issuer.kid }).sign(new TextEncoder().encode(secret));
    const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
    const attacker = await exportJWK(privateKey);
    const attackerPublic = { ...(await exportJWK(publicKey)), kid: stack.issuer.kid };
    const realIdToken = stack.requesterTokens.idToken;
    const realRefreshToken = stack.requesterTokens.refreshToken;
    if (!realIdToken || !realRefreshToken) throw new Error('the device login gave no ID token or refresh token');
    return [
      { name: 'alg none', code: 'TOKEN_ALG_NOT_ALLOWED', token: `${b64({ alg: 'none', typ: 'at+jwt' })}.${b64(claims)}.` },
      { name: 'HS256 keyed with the issuer RSA public key (JWK)', code: 'TOKEN_ALG_NOT_ALLOWED', token: await hmac(JSON.stringify(publicJwk)) },
      { name: 'HS256 keyed with the issuer RSA public key (PEM)', code: 'TOKEN_ALG_NOT_ALLOWED', token: await hmac(publicPem) },
      { name: "an attacker's key under the issuer's kid", code: 'TOKEN_BAD_SIGNATURE', token: await forge({ groups: ['auditors'] }, { key: attacker }) },
      { name: 'unknown kid', code: 'TOKEN_UNKNOWN_KEY', token: await forge({}, { key: attacker, header: { kid: 'attacker-key-1' } }) },
      { name: 'kid carrying a path and SQL', code: 'TOKEN_UNKNOWN_KEY', token: await forge({}, { key: attacker, header: { kid: "../../../../dev/null' OR '1'='1" } }) },
      { name: 'jku header to an attacker JWKS', code: 'TOKEN_HEADER_NOT_ALLOWED', token: await forge({}, { key: attacker, header: { jku: 'http://127.0.0.1:9/jwks.json' } }) },
      { name: 'x5u header to an attacker certificate', code: 'TOKEN_HEADER_NOT_ALLOWED', token: await forge({}, { key: attacker, header: { x5u: 'http://127.0.0.1:9/cert.pem' } }) },
      { name: 'embedded jwk header (the attacker public key)', code: 'TOKEN_HEADER_NOT_ALLOWED', token: await forge({}, { key: attacker, header: { jwk: attackerPublic } }) },
      { name: 'wrong iss', code: 'TOKEN_UNKNOWN_ISSUER', token: await forge({ iss: 'https://login.attacker.test' }) },
      { name: 'wrong aud', code: 'TOKEN_WRONG_AUDIENCE', token: await forge({ aud: 'urn:some-other-api' }) },
      { name: 'expired an hour ago', code: 'TOKEN_EXPIRED', token: await forge({ iat: now - 2 * HOUR, exp: now - HOUR }) },
      { name: 'nbf 5 minutes ahead (skew 30 s)', code: 'TOKEN_NOT_YET_VALID', token: await forge({ nbf: now + 300, exp: now + 600 }) },
      { name: 'iat 5 minutes ahead (skew 30 s)', code: 'TOKEN_NOT_YET_VALID', token: await forge({ iat: now + 300, exp: now + 600 }) },
      { name: 'no exp', code: 'TOKEN_INVALID', token: await forge({}, { omit: ['exp'] }) },
      { name: 'lifetime 2 h over the 1 h cap', code: 'TOKEN_LIFETIME_TOO_LONG', token: await forge({ iat: now, exp: now + 2 * HOUR }) },
      { name: "the issuer's real ID token", code: 'TOKEN_WRONG_AUDIENCE', token: realIdToken },
      { name: 'an ID token (typ JWT) minted for the broker audience', code: 'TOKEN_WRONG_TYPE', token: await forge({ nonce: 'n-1', at_hash: 'x' }, { header: { typ: 'JWT' } }) },
      { name: "the issuer's real refresh token", code: 'TOKEN_MALFORMED', token: realRefreshToken },
      { name: 'groups as an object', code: 'TOKEN_INVALID', token: await forge({ groups: { auditors: true } }) },
      { name: 'groups as a list of numbers', code: 'TOKEN_INVALID', token: await forge({ groups: ['dba', 7] }) },
      { name: 'a 1 MB token', code: 'HEADERS_TOO_LARGE', status: 431, token: `${(await forge()).split('.').slice(0, 2).join('.')}.${'A'.repeat(1024 * 1024)}` },
      { name: 'a valid token in the query string, none in the header', code: 'TOKEN_MISSING', queryToken: await forge() },
      { name: 'a 1 MB URL', code: 'HEADERS_TOO_LARGE', status: 431, queryToken: 'A'.repeat(1024 * 1024) },
    ];
  }

  it('refuses every attack on every door with its code, records each refusal, and still serves a genuine token', async () => {
    const before = await auditEvents(stack, 0);
    const after = before.at(-1)?.seq ?? 0;
    const cases = await attacks();
    const answers: Array<{ attack: Attack; door: string; answer: Answer }> = [];
    for (const attack of cases) {
      for (const [door, knock] of Object.entries(doors)) {
        answers.push({ attack, door, answer: await knock({ token: attack.token, query: attack.queryToken }) });
      }
    }
    for (const { attack, door, answer } of answers) {
      const what = `${attack.name} at ${door}: HTTP ${answer.status} ${answer.body.slice(0, 200)}`;
      expect(answer.status, what).toBe(attack.status ?? 401);
      expect(JSON.parse(answer.body).error.code, what).toBe(attack.code);
      // The refusal names the problem without echoing the token.
      if (attack.token) expect(answer.body, what).not.toContain(attack.token.slice(-40));
    }
    expect(answers).toHaveLength(cases.length * Object.keys(doors).length);

    // One audit event per refusal, with the same code: token-rejected, or request-rejected for what the HTTP parser refused.
    const recorded = (await auditEvents(stack, after)).filter((e) => e.type === 'token-rejected' || e.type === 'request-rejected');
    const codes = (list: string[]) => [...list].sort();
    expect(codes(recorded.map((e) => String(e.data.code)))).toEqual(codes(answers.map((a) => a.attack.code)));

    // Still up, and the genuine token still opens every door.
    expect(stack.broker.exitCode).toBeNull();
    for (const [door, knock] of Object.entries(doors)) {
      const answer = await knock({ token: stack.tokens.requester });
      expect(answer.status, door).toBe(door.startsWith('WebSocket') ? 101 : 200);
    }
  });

  it('gives a second trusted issuer that asserts the first issuer\'s subject and groups neither', async () => {
    const url = stack.brokerUrl;
    const impostor = (await deviceLoginAs(stack.otherIssuer, 'rita')).accessToken;
    const rita = stack.tokens.requester;
    // rita@issuer-1 holds an approved grant on `gated`; rita@issuer-2 claims auditors, sre-leads and dba-leads too.
    const requested = JSON.parse((await call(url, 'POST', '/api/v1/connections/gated/access-requests', { token: rita, body: { duration: '10m' } })).body) as { review: { id: string } };
    expect((await call(url, 'POST', `/api/v1/reviews/${requested.review.id}/approve`, { token: stack.tokens.approver, body: {} })).status).toBe(200);

    const whoami = JSON.parse((await call(url, 'GET', '/api/v1/whoami', { token: impostor })).body) as { identity: { issuer: string; subject: string; groups: string[] }; auditor: boolean; admin: boolean };
    expect(whoami).toMatchObject({ identity: { issuer: stack.otherIssuer.issuer, subject: 'rita', groups: ['dba'] }, auditor: false, admin: false });

    const attempts: Array<[string, Promise<Answer>, number]> = [
      ['read rita@issuer-1\'s session', call(url, 'GET', `/api/v1/sessions/${sessionId}`, { token: impostor }), 404],
      ['watch rita@issuer-1\'s session', call(url, 'GET', `/api/v1/sessions/${sessionId}/stream`, { token: impostor }), 404],
      ['read rita@issuer-1\'s access request', call(url, 'GET', `/api/v1/reviews/${requested.review.id}`, { token: impostor }), 404],
      ['revoke rita@issuer-1\'s grant', call(url, 'POST', `/api/v1/reviews/${requested.review.id}/revoke`, { token: impostor, body: { reason: 'mine now' } }), 403],
      ['read the audit stream as "auditors"', call(url, 'GET', '/api/v1/audit', { token: impostor }), 403],
      ['lock someone as "sre-leads"', call(url, 'POST', '/api/v1/locks', { token: impostor, body: { subject: 'abe', reason: 'x' } }), 403],
      ['ride rita@issuer-1\'s grant on gated', upgrade(url, '/api/v1/tunnel/gated', { authorization: `Bearer ${impostor}` }), 403],
    ];
    for (const [what, answer, status] of attempts) expect((await answer).status, what).toBe(status);
    const listed = JSON.parse((await call(url, 'GET', '/api/v1/sessions', { token: impostor })).body) as { sessions: Array<{ id: string }> };
    expect(listed.sessions.map((s) => s.id)).not.toContain(sessionId);

    // The genuine rita rides her grant, and the impostor's own identity works where group dba is enough.
    const hers = await openTunnel(url, 'gated', rita);
    await hers.close();
    const own = await openTunnel(url, 'echo', impostor);
    await own.close();
  });
});

interface AuditEvent {
  seq: number;
  type: string;
  data: Record<string, unknown>;
}

/** The broker-wide audit stream after `afterSeq`, read as an auditor through the API. */
async function auditEvents(stack: GateStack, afterSeq: number): Promise<AuditEvent[]> {
  const events: AuditEvent[] = [];
  for (let after = afterSeq; ; ) {
    const answer = await call(stack.brokerUrl, 'GET', `/api/v1/audit?after=${after}`, { token: stack.tokens.auditor });
    expect(answer.status).toBe(200);
    const page = (JSON.parse(answer.body) as { events: AuditEvent[] }).events;
    if (page.length === 0) return events;
    events.push(...page);
    after = page.at(-1)!.seq;
  }
}
