import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK, type JWTPayload } from 'jose';
import { clientCredentialsLogin } from '../../src/auth/oidc.js';
import { createTokenVerifier, type TokenVerifier } from '../../src/broker/auth/verify-token.js';
import { DEFAULT_IDENTITY_CLAIMS, type IssuerConfig } from '../../src/broker/config.js';
import { startDevIssuer, type DevIssuer } from '../../src/dev/oidc-issuer.js';
import { HoopError } from '../../src/lib/errors.js';
import { deviceLoginAs } from '../support/device-user.js';

const AUDIENCE = 'https://broker.hoopctl.test';
const HOUR = 3600;

describe('access token verification against a real oidc-provider', () => {
  let issuer: DevIssuer;
  let config: IssuerConfig;
  let verifier: TokenVerifier;

  beforeAll(async () => {
    issuer = await startDevIssuer({
      audience: AUDIENCE,
      users: { alice: { groups: ['dba'], email: 'alice@example.test' } },
      defaultGroups: ['everyone'],
      serviceClients: [{ clientId: 'ci-reporting', clientSecret: 'ci-secret-value', groups: ['ci-reporting', 'readers'] }],
    });
    config = issuerConfig(issuer);
    verifier = createTokenVerifier([config]);
  });
  afterAll(async () => {
    await issuer?.stop();
  });

  /** Signs claims with the dev issuer's own key unless told otherwise; defaults make a valid token. */
  async function forge(
    claims: JWTPayload,
    o: { key?: JWK; kid?: string; omit?: Array<'exp' | 'iat'> } = {},
  ): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const payload: JWTPayload = { iss: issuer.issuer, aud: AUDIENCE, sub: 'mallory', iat: now, exp: now + 300, client_id: 'hoopctl-cli', ...claims };
    for (const claim of o.omit ?? []) delete payload[claim];
    const key = await importJWK(o.key ?? issuer.signingKey, 'RS256');
    return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: o.kid ?? issuer.kid }).sign(key);
  }

  async function rejection(token: string, v: TokenVerifier = verifier): Promise<HoopError> {
    const err = await v.verify(token).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HoopError);
    const hoop = err as HoopError;
    expect(hoop.status).toBe(401);
    if (token.length > 20) expect(hoop.message).not.toContain(token);
    return hoop;
  }

  it('keeps a CI job\'s claims with its identity: repository, workflow, run (numbers as text), nothing unlisted', async () => {
    const token = await forge({
      sub: 'repo:acme/deploy:ref:refs/heads/main', client_id: undefined,
      repository: 'acme/deploy', workflow: 'nightly', ref: 'refs/heads/main', run_id: 9876543210, actor: 'octocat', secret_thing: 'not kept',
    });
    const identity = await verifier.verify(token);
    expect(identity).toMatchObject({ kind: 'service', subject: 'repo:acme/deploy:ref:refs/heads/main' });
    expect(identity.claims).toEqual({ repository: 'acme/deploy', workflow: 'nightly', ref: 'refs/heads/main', run_id: '9876543210', actor: 'octocat' });
  });

  it('verifies a genuine device-flow token to a human identity', async () => {
    const tokens = await deviceLoginAs(issuer, 'alice');
    const identity = await verifier.verify(tokens.accessToken);
    expect(identity).toEqual({
      issuer: issuer.issuer,
      subject: 'alice',
      kind: 'human',
      clientId: 'hoopctl-cli',
      name: 'alice@example.test',
      groups: ['dba'],
      expiresAt: expect.any(Number),
    });
    expect(Math.abs(identity.expiresAt - tokens.expiresAt)).toBeLessThan(5_000);
  });

  it('verifies a client-credentials token to a service identity', async () => {
    const tokens = await clientCredentialsLogin({ issuer: issuer.issuer, clientId: 'ci-reporting', clientSecret: 'ci-secret-value' });
    expect(await verifier.verify(tokens.accessToken)).toMatchObject({
      issuer: issuer.issuer,
      subject: 'ci-reporting',
      kind: 'service',
      clientId: 'ci-reporting',
      name: 'ci-reporting',
      groups: ['ci-reporting', 'readers'],
    });
  });

  it('uses a configured jwksUri instead of discovery', async () => {
    const direct = createTokenVerifier([{ ...config, jwksUri: `${issuer.issuer}/jwks` }]);
    expect((await direct.verify(await forge({ email: 'm@example.test' }))).kind).toBe('human');
  });

  it('reads groups given as a space or comma separated string', async () => {
    const identity = await verifier.verify(await forge({ groups: 'dba  readers,ops', preferred_username: 'mallory' }));
    expect(identity.groups).toEqual(['dba', 'readers', 'ops']);
    expect(identity.name).toBe('mallory');
  });

  it('rejects an expired token, naming when it expired', async () => {
    const now = Math.floor(Date.now() / 1000);
    const err = await rejection(await forge({ iat: now - 2 * HOUR, exp: now - HOUR }));
    expect(err.code).toBe('TOKEN_EXPIRED');
    expect(err.message).toBe(`access token expired at ${new Date((now - HOUR) * 1000).toISOString()}`);
  });

  it('accepts a token expired by less than the clock tolerance', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expect(verifier.verify(await forge({ iat: now - 600, exp: now - 10 }))).resolves.toMatchObject({ subject: 'mallory' });
  });

  it('rejects a token that is not yet valid', async () => {
    const now = Math.floor(Date.now() / 1000);
    expect((await rejection(await forge({ nbf: now + HOUR / 2 }))).code).toBe('TOKEN_NOT_YET_VALID');
    expect((await rejection(await forge({ iat: now + 600, exp: now + 900 }))).code).toBe('TOKEN_NOT_YET_VALID');
  });

  it('rejects a token for another audience', async () => {
    const err = await rejection(await forge({ aud: 'https://other.example.test' }));
    expect(err.code).toBe('TOKEN_WRONG_AUDIENCE');
    expect(err.message).toContain('https://other.example.test');
  });

  it('rejects a token from an issuer the broker does not trust', async () => {
    const err = await rejection(await forge({ iss: 'http://127.0.0.1:1/evil' }));
    expect(err.code).toBe('TOKEN_UNKNOWN_ISSUER');
    expect(err.message).toContain('http://127.0.0.1:1/evil');
  });

  it('rejects a token signed by another key under the issuer kid (bad signature)', async () => {
    const other = await otherKey();
    expect((await rejection(await forge({}, { key: other }))).code).toBe('TOKEN_BAD_SIGNATURE');
  });

  it('rejects a token signed by a key the issuer does not publish (unknown kid)', async () => {
    const other = await otherKey();
    expect((await rejection(await forge({}, { key: other, kid: 'not-a-published-kid' }))).code).toBe('TOKEN_UNKNOWN_KEY');
  });

  it('rejects an unsigned token (alg: none)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url');
    const body = Buffer.from(
      JSON.stringify({ iss: issuer.issuer, aud: AUDIENCE, sub: 'mallory', iat: now, exp: now + 300 }),
    ).toString('base64url');
    const err = await rejection(`${header}.${body}.`);
    expect(err.code).toBe('TOKEN_ALG_NOT_ALLOWED');
    expect(err.message).toContain('"none"');
  });

  it('rejects HS256 signed with the issuer public key as the secret', async () => {
    const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...publicJwk } = issuer.signingKey;
    const secret = new TextEncoder().encode(JSON.stringify(publicJwk));
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ iss: issuer.issuer, aud: AUDIENCE, sub: 'mallory', iat: now, exp: now + 300 })
      .setProtectedHeader({ alg: 'HS256', kid: issuer.kid })
      .sign(secret);
    expect((await rejection(token)).code).toBe('TOKEN_ALG_NOT_ALLOWED');
  });

  it('rejects a lifetime over the configured maximum', async () => {
    const now = Math.floor(Date.now() / 1000);
    const err = await rejection(await forge({ iat: now, exp: now + 2 * HOUR }));
    expect(err.code).toBe('TOKEN_LIFETIME_TOO_LONG');
    expect(err.message).toContain('7200 s exceeds the maximum of 3600 s');
  });

  it('rejects a token without exp or iat', async () => {
    expect((await rejection(await forge({}, { omit: ['exp'] }))).code).toBe('TOKEN_INVALID');
    expect((await rejection(await forge({}, { omit: ['iat'] }))).code).toBe('TOKEN_INVALID');
  });

  it('accepts a job token typed JWT only from an issuer that lists JWT in tokenTypes, and any type under *', async () => {
    const now = Math.floor(Date.now() / 1000);
    const key = await importJWK(issuer.signingKey, 'RS256');
    const sign = (header: Record<string, string>) =>
      new SignJWT({ iss: issuer.issuer, aud: AUDIENCE, sub: 'repo:acme/deploy', iat: now, exp: now + 300 }).setProtectedHeader({ alg: 'RS256', kid: issuer.kid, ...header }).sign(key);
    const jobToken = await sign({ typ: 'JWT' });
    const err = await rejection(jobToken);
    expect(err.code).toBe('TOKEN_WRONG_TYPE');
    expect(err.message).toContain('token type "JWT" is not an access token this broker accepts');
    await expect(createTokenVerifier([{ ...config, tokenTypes: ['jwt'] }]).verify(jobToken)).resolves.toMatchObject({ subject: 'repo:acme/deploy' });
    await expect(createTokenVerifier([{ ...config, tokenTypes: ['at+jwt'] }]).verify(await sign({ typ: 'application/AT+JWT' }))).resolves.toMatchObject({ kind: 'service' });
    await expect(createTokenVerifier([{ ...config, tokenTypes: ['*'] }]).verify(await sign({}))).resolves.toMatchObject({ kind: 'service' });
  });

  it('keeps a later issuer\'s groups only where trustedGroups lists them, and names the identity by its configured issuer', async () => {
    const token = await forge({ iss: `${issuer.issuer}/`, groups: ['dba', 'auditors'] });
    const first = createTokenVerifier([config]);
    const second = createTokenVerifier([{ ...config, issuer: 'https://login.other.test' }, config]);
    const listed = createTokenVerifier([{ ...config, issuer: 'https://login.other.test' }, { ...config, trustedGroups: ['dba'] }]);
    expect(await first.verify(token)).toMatchObject({ issuer: issuer.issuer, groups: ['dba', 'auditors'] });
    expect((await second.verify(token)).groups).toEqual([]);
    expect((await listed.verify(token)).groups).toEqual(['dba']);
  });

  it('rejects groups of any shape but a list of strings or one string', async () => {
    for (const groups of [{ dba: true }, 7, ['dba', 7], [null]]) {
      const err = await rejection(await forge({ groups }));
      expect(err.message).toBe('access token claim "groups" must be a list of strings');
    }
  });

  it('rejects a token naming its own key (jku, x5u, jwk, x5c) before fetching anything', async () => {
    for (const header of [{ jku: 'http://127.0.0.1:9/jwks' }, { x5u: 'http://127.0.0.1:9/c.pem' }, { jwk: { kty: 'oct', k: 'AA' } }, { x5c: ['MIIB'] }]) {
      const token = `${Buffer.from(JSON.stringify({ alg: 'RS256', typ: 'at+jwt', kid: issuer.kid, ...header })).toString('base64url')}.${(await forge({})).split('.').slice(1).join('.')}`;
      expect((await rejection(token)).code).toBe('TOKEN_HEADER_NOT_ALLOWED');
    }
  });

  it('rejects a token longer than 16 KiB without decoding it', async () => {
    const err = await rejection(`${await forge({})}${'A'.repeat(16 * 1024)}`);
    expect(err.code).toBe('TOKEN_MALFORMED');
    expect(err.message).toBe('access token is longer than 16384 characters');
  });

  it('rejects garbage as malformed', async () => {
    for (const garbage of ['', 'not a token', 'Bearer abc', 'aaaa.bbbb.cccc', 'eyJhbGciOiJSUzI1NiJ9.%%%.x']) {
      expect((await rejection(garbage)).code).toBe('TOKEN_MALFORMED');
    }
  });

  it('rejects a trusted issuer whose discovery fails, and recovers on the next token', async () => {
    let down = true;
    const flaky = createTokenVerifier([{ ...config, jwksUri: undefined }], {
      fetch: async (input, init) => (down ? new Response('down', { status: 503 }) : fetch(input, init)),
    });
    const err = await rejection(await forge({}), flaky);
    expect(err.code).toBe('TOKEN_INVALID');
    expect(err.message).toContain('HTTP 503');
    down = false;
    await expect(flaky.verify(await forge({}))).resolves.toMatchObject({ subject: 'mallory' });
  });
});

function issuerConfig(issuer: DevIssuer): IssuerConfig {
  return {
    issuer: issuer.issuer,
    audience: issuer.audience,
    clientId: issuer.cliClientId,
    scopes: ['openid', 'offline_access'],
    algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'],
    maxTokenLifetime: 3_600_000,
    clockTolerance: 30_000,
    identityClaims: [...DEFAULT_IDENTITY_CLAIMS],
    groupsClaim: 'groups',
    tokenTypes: ['at+jwt'],
  };
}

async function otherKey(): Promise<JWK> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return exportJWK(privateKey);
}
