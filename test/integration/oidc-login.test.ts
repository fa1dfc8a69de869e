import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { resolveAccessToken } from '../../src/auth/access-token.js';
import { fetchAuthConfig } from '../../src/auth/broker-auth-config.js';
import { createTokenStore, type TokenStore } from '../../src/auth/token-store.js';
import { clientCredentialsLogin, deviceLogin, refreshTokenSet, type DevicePrompt } from '../../src/auth/oidc.js';
import { startDevIssuer, type DevIssuer } from '../../src/dev/oidc-issuer.js';
import { HoopError } from '../../src/lib/errors.js';
import { freePort } from '../../src/lib/net.js';
import { completeDeviceLogin, deviceLoginAs } from '../support/device-user.js';

const AUDIENCE = 'https://broker.hoopctl.test';

describe('OIDC login against a real oidc-provider', () => {
  let issuer: DevIssuer;

  beforeAll(async () => {
    issuer = await startDevIssuer({
      audience: AUDIENCE,
      users: { alice: { groups: ['dba', 'dev'], email: 'alice@example.test' } },
      defaultGroups: ['everyone'],
      serviceClients: [{ clientId: 'ci-reporting', clientSecret: 'ci-secret-value', groups: ['ci-reporting'] }],
    });
  });
  afterAll(async () => {
    await issuer?.stop();
  });

  it('completes the device flow, then refreshes the access token', async () => {
    let prompt: DevicePrompt | undefined;
    let userDone: Promise<void> | undefined;
    const tokens = await deviceLogin({
      issuer: issuer.issuer,
      clientId: issuer.cliClientId,
      scopes: ['openid', 'offline_access', 'email'],
      pollIntervalSeconds: 1,
      onPrompt: (p) => {
        prompt = p;
        userDone = completeDeviceLogin(p.verificationUriComplete!, 'alice');
      },
    });
    await userDone;

    expect(prompt?.userCode).toMatch(/^[A-Z]{4}-[A-Z]{4}$/);
    expect(prompt?.verificationUri).toBe(`${issuer.issuer}/device`);
    expect(decodeProtectedHeader(tokens.accessToken)).toMatchObject({ typ: 'at+jwt', alg: 'RS256', kid: issuer.kid });
    const claims = decodeJwt(tokens.accessToken);
    expect(claims).toMatchObject({
      iss: issuer.issuer,
      aud: AUDIENCE,
      sub: 'alice',
      client_id: 'hoopctl-cli',
      groups: ['dba', 'dev'],
      email: 'alice@example.test',
    });
    expect(tokens.refreshToken).toBeTruthy();
    expect(tokens.idToken).toBeTruthy();
    expect(tokens.expiresAt).toBeGreaterThan(Date.now() + 800_000);

    const refreshed = await refreshTokenSet({ issuer: issuer.issuer, clientId: issuer.cliClientId, refreshToken: tokens.refreshToken! });
    expect(refreshed.accessToken).not.toBe(tokens.accessToken);
    expect(refreshed.refreshToken).toBeTruthy();
    expect(decodeJwt(refreshed.accessToken)).toMatchObject({ aud: AUDIENCE, sub: 'alice', groups: ['dba', 'dev'] });
  });

  it('gives an unknown login the default groups', async () => {
    const tokens = await deviceLoginAs(issuer, 'bob');
    const claims = decodeJwt(tokens.accessToken);
    expect(claims).toMatchObject({ sub: 'bob', aud: AUDIENCE, groups: ['everyone'] });
    expect(claims.email).toBeUndefined();
  });

  it('reports a sign-in the user aborted as LOGIN_DENIED', async () => {
    const login = deviceLogin({
      issuer: issuer.issuer,
      clientId: issuer.cliClientId,
      scopes: ['openid'],
      pollIntervalSeconds: 1,
      onPrompt: (p) => {
        void abortDeviceLogin(p.verificationUriComplete!);
      },
    });
    await expect(login).rejects.toMatchObject({ code: 'LOGIN_DENIED', message: expect.stringMatching(/denied/) });
  });

  it('stops polling when the caller aborts', async () => {
    const controller = new AbortController();
    const login = deviceLogin({
      issuer: issuer.issuer,
      clientId: issuer.cliClientId,
      scopes: ['openid'],
      pollIntervalSeconds: 1,
      signal: controller.signal,
      onPrompt: () => setTimeout(() => controller.abort(), 300),
    });
    await expect(login).rejects.toMatchObject({ code: 'LOGIN_CANCELLED' });
  });

  it('logs a service client in with client credentials', async () => {
    const tokens = await clientCredentialsLogin({ issuer: issuer.issuer, clientId: 'ci-reporting', clientSecret: 'ci-secret-value' });
    expect(tokens.refreshToken).toBeUndefined();
    expect(decodeProtectedHeader(tokens.accessToken).typ).toBe('at+jwt');
    expect(decodeJwt(tokens.accessToken)).toMatchObject({
      iss: issuer.issuer,
      aud: AUDIENCE,
      sub: 'ci-reporting',
      client_id: 'ci-reporting',
      groups: ['ci-reporting'],
    });
  });

  it('rejects a wrong client secret with CLIENT_AUTH_FAILED', async () => {
    const err = await clientCredentialsLogin({ issuer: issuer.issuer, clientId: 'ci-reporting', clientSecret: 'wrong' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HoopError);
    expect(err).toMatchObject({ code: 'CLIENT_AUTH_FAILED', message: expect.stringContaining('ci-reporting') });
    expect((err as Error).message).not.toContain('wrong');
  });

  it('reports an issuer that is not listening as ISSUER_UNREACHABLE', async () => {
    const port = await freePort();
    await expect(
      clientCredentialsLogin({ issuer: `http://127.0.0.1:${port}`, clientId: 'x', clientSecret: 'y' }),
    ).rejects.toMatchObject({ code: 'ISSUER_UNREACHABLE', message: expect.stringContaining(`127.0.0.1:${port}`) });
  });

  it('refuses a plain-http issuer that is not on loopback', async () => {
    await expect(
      refreshTokenSet({ issuer: 'http://idp.example.test', clientId: 'x', refreshToken: 'r' }),
    ).rejects.toMatchObject({ code: 'ISSUER_INSECURE' });
  });

  it('reports an unknown refresh token as REFRESH_FAILED', async () => {
    await expect(
      refreshTokenSet({ issuer: issuer.issuer, clientId: issuer.cliClientId, refreshToken: 'not-a-refresh-token' }),
    ).rejects.toMatchObject({ code: 'REFRESH_FAILED', hint: expect.stringContaining('hoopctl login') });
  });
});

describe('resolveAccessToken against a real oidc-provider', () => {
  let issuer: DevIssuer;
  let broker: Server;
  let brokerUrl: string;
  let dir: string;
  let store: TokenStore;

  beforeAll(async () => {
    issuer = await startDevIssuer({
      audience: AUDIENCE,
      defaultGroups: ['everyone'],
      serviceClients: [{ clientId: 'ci-reporting', clientSecret: 'ci-secret-value', groups: ['ci-reporting'] }],
    });
    // Stands in for the broker's GET /api/v1/auth/config (the real route lives in src/broker/server).
    broker = createServer((req, res) => {
      if (req.url !== '/api/v1/auth/config') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ issuer: issuer.issuer, clientId: issuer.cliClientId, scopes: ['openid', 'offline_access'], audience: AUDIENCE }));
    });
    await new Promise<void>((resolve) => broker.listen(0, '127.0.0.1', resolve));
    brokerUrl = `http://127.0.0.1:${(broker.address() as AddressInfo).port}`;
    dir = mkdtempSync(join(tmpdir(), 'hoopctl-access-token-'));
    store = createTokenStore({ configDir: dir, backend: 'file', env: {} });
  });
  afterAll(async () => {
    await issuer?.stop();
    await new Promise((resolve) => broker?.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  const loginAs = (login: string) => deviceLoginAs(issuer, login);

  it('reads the broker auth config', async () => {
    expect(await fetchAuthConfig(brokerUrl)).toEqual({
      issuer: issuer.issuer,
      clientId: issuer.cliClientId,
      scopes: ['openid', 'offline_access'],
      audience: AUDIENCE,
    });
    await expect(fetchAuthConfig(issuer.issuer)).rejects.toMatchObject({ code: 'BROKER_AUTH_CONFIG_INVALID' });
  });

  it('prefers HOOPCTL_TOKEN, then a fresh stored token, and refreshes one about to expire', async () => {
    const tokens = await loginAs('carol');
    await store.save({ broker: brokerUrl, issuer: issuer.issuer, clientId: issuer.cliClientId, kind: 'device', tokens, subject: 'carol' });

    expect(await resolveAccessToken({ broker: brokerUrl, store, env: { HOOPCTL_TOKEN: 'from-ci' } })).toEqual({ token: 'from-ci', source: 'env' });

    const stored = await resolveAccessToken({ broker: brokerUrl, store, env: {} });
    expect(stored).toEqual({ token: tokens.accessToken, source: 'stored', expiresAt: tokens.expiresAt });

    // 30 s before expiry: inside the refresh margin
    const refreshed = await resolveAccessToken({ broker: brokerUrl, store, env: {}, now: () => tokens.expiresAt - 30_000 });
    expect(refreshed.source).toBe('refreshed');
    expect(refreshed.token).not.toBe(tokens.accessToken);
    expect(decodeJwt(refreshed.token)).toMatchObject({ sub: 'carol', aud: AUDIENCE });
    const saved = await store.load(brokerUrl);
    expect(saved?.tokens.accessToken).toBe(refreshed.token);
    expect(saved?.tokens.refreshToken).toBeTruthy();
  });

  it('says TOKEN_EXPIRED when the stored token expired and cannot be refreshed', async () => {
    const past = Date.now() - 60_000;
    await store.save({ broker: brokerUrl, issuer: issuer.issuer, clientId: 'ci-reporting', kind: 'client-credentials', tokens: { accessToken: 'old', expiresAt: past } });
    await expect(resolveAccessToken({ broker: brokerUrl, store, env: {} })).rejects.toMatchObject({
      code: 'TOKEN_EXPIRED',
      hint: `run \`hoopctl login --broker ${brokerUrl}\``,
    });
    await store.save({ broker: brokerUrl, issuer: issuer.issuer, clientId: issuer.cliClientId, kind: 'device', tokens: { accessToken: 'old', refreshToken: 'revoked', expiresAt: past } });
    await expect(resolveAccessToken({ broker: brokerUrl, store, env: {} })).rejects.toMatchObject({ code: 'TOKEN_EXPIRED' });
  });

  it('uses client credentials from the environment against the broker issuer', async () => {
    await store.remove(brokerUrl);
    const resolved = await resolveAccessToken({
      broker: brokerUrl,
      store,
      env: { HOOPCTL_CLIENT_ID: 'ci-reporting', HOOPCTL_CLIENT_SECRET: 'ci-secret-value' },
    });
    expect(resolved.source).toBe('client-credentials');
    expect(decodeJwt(resolved.token)).toMatchObject({ sub: 'ci-reporting', aud: AUDIENCE, groups: ['ci-reporting'] });
  });

  it('says NOT_LOGGED_IN with the login command when there is nothing to use', async () => {
    await store.remove(brokerUrl);
    await expect(resolveAccessToken({ broker: brokerUrl, store, env: {} })).rejects.toMatchObject({
      code: 'NOT_LOGGED_IN',
      hint: `run \`hoopctl login --broker ${brokerUrl}\``,
    });
  });
});

/** Opens the user code page and presses "Abort" on the confirmation form. */
async function abortDeviceLogin(verificationUriComplete: string): Promise<void> {
  const first = await fetch(verificationUriComplete);
  const cookie = first.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  const html = await first.text();
  const fields = Object.fromEntries([...html.matchAll(/name="([^"]+)" value="([^"]*)"/g)].map((m) => [m[1], m[2]]));
  const action = /action="([^"]+)"/.exec(html)![1];
  await fetch(action, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
    body: new URLSearchParams({ xsrf: fields.xsrf, user_code: fields.user_code, abort: 'yes' }).toString(),
  });
}
