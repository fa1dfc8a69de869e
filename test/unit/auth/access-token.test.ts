import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { describeTokenSource, namedServiceIdentity, resolveAccessToken } from '../../../src/auth/access-token.js';
import { createTokenStore, type StoredCredentials, type TokenStore } from '../../../src/auth/token-store.js';

const BROKER = 'https://hoop.example.test';
const NOW = 1_800_000_000_000;

function login(overrides: Partial<StoredCredentials> = {}): StoredCredentials {
  return {
    broker: BROKER,
    issuer: 'https://idp.example.test',
    clientId: 'hoopctl-cli',
    kind: 'device',
    tokens: { accessToken: 'ada-token', refreshToken: 'rt', expiresAt: NOW + 600_000 },
    subject: 'ada',
    ...overrides,
  };
}

describe('which identity the environment names', () => {
  it('names none when no variable is set', () => {
    expect(namedServiceIdentity({ PATH: '/bin' })).toBeUndefined();
  });

  it('takes HOOPCTL_TOKEN as is, or the client pair', () => {
    expect(namedServiceIdentity({ HOOPCTL_TOKEN: ' jwt ' })).toEqual({ kind: 'token', token: 'jwt' });
    expect(namedServiceIdentity({ HOOPCTL_CLIENT_ID: 'demo-ci', HOOPCTL_CLIENT_SECRET: 's' })).toEqual({ kind: 'client', clientId: 'demo-ci', clientSecret: 's' });
  });

  it('refuses half a client pair, naming the missing variable, without echoing the secret', () => {
    expect(() => namedServiceIdentity({ HOOPCTL_CLIENT_SECRET: 'top-secret' })).toThrow(expect.objectContaining({ code: 'USAGE', message: expect.stringContaining('HOOPCTL_CLIENT_ID is not') }));
    try {
      namedServiceIdentity({ HOOPCTL_CLIENT_SECRET: 'top-secret' });
    } catch (e) {
      expect(JSON.stringify({ m: (e as Error).message, h: (e as { hint?: string }).hint })).not.toContain('top-secret');
    }
    expect(() => namedServiceIdentity({ HOOPCTL_CLIENT_ID: '', HOOPCTL_CLIENT_SECRET: undefined })).toThrow(expect.objectContaining({ code: 'USAGE' }));
  });

  it('refuses an empty HOOPCTL_TOKEN as a missing token, and two identities at once', () => {
    expect(() => namedServiceIdentity({ HOOPCTL_TOKEN: '' })).toThrow(expect.objectContaining({ code: 'TOKEN_MISSING' }));
    expect(() => namedServiceIdentity({ HOOPCTL_TOKEN: 'jwt', HOOPCTL_CLIENT_ID: 'demo-ci', HOOPCTL_CLIENT_SECRET: 's' })).toThrow(expect.objectContaining({ code: 'USAGE' }));
  });
});

describe('resolveAccessToken with a person logged in on the machine', () => {
  let dir: string;
  let store: TokenStore;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hoopctl-access-token-'));
    store = createTokenStore({ configDir: join(dir, 'hoopctl'), backend: 'file', env: {} });
    await store.save(login());
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const resolve = (env: NodeJS.ProcessEnv) => resolveAccessToken({ broker: BROKER, store, env, now: () => NOW });

  it('uses the stored login only when the environment names no identity', async () => {
    expect(await resolve({})).toMatchObject({ token: 'ada-token', source: 'stored' });
    expect(await resolve({ HOOPCTL_TOKEN: 'ci-jwt' })).toMatchObject({ token: 'ci-jwt', source: 'env' });
  });

  it('never lets the stored person stand in for a client named without its secret, or for an empty token', async () => {
    await expect(resolve({ HOOPCTL_CLIENT_ID: 'demo-ci' })).rejects.toMatchObject({ code: 'USAGE', message: expect.stringContaining('HOOPCTL_CLIENT_SECRET') });
    await expect(resolve({ HOOPCTL_CLIENT_ID: 'demo-ci', HOOPCTL_CLIENT_SECRET: '' })).rejects.toMatchObject({ code: 'USAGE' });
    await expect(resolve({ HOOPCTL_TOKEN: '' })).rejects.toMatchObject({ code: 'TOKEN_MISSING' });
  });

  it('lets HOOPCTL_CLIENT_ID alone use a stored client-credentials login of that same client only', async () => {
    await store.save(login({ kind: 'client-credentials', clientId: 'demo-ci', subject: 'demo-ci', tokens: { accessToken: 'ci-token', expiresAt: NOW + 600_000 } }));
    expect(await resolve({ HOOPCTL_CLIENT_ID: 'demo-ci' })).toMatchObject({ token: 'ci-token', source: 'stored', clientId: 'demo-ci' });
    await expect(resolve({ HOOPCTL_CLIENT_ID: 'other-ci' })).rejects.toMatchObject({ code: 'USAGE' });
  });
});

describe('describeTokenSource', () => {
  it('names each source without any secret', () => {
    expect(describeTokenSource({ source: 'env' })).toBe('HOOPCTL_TOKEN');
    expect(describeTokenSource({ source: 'client-credentials', clientId: 'demo-ci' })).toBe('client credentials (HOOPCTL_CLIENT_ID=demo-ci)');
    expect(describeTokenSource({ source: 'stored' })).toBe('stored login');
    expect(describeTokenSource({ source: 'refreshed' })).toBe('stored login (refreshed)');
    expect(describeTokenSource({ source: 'stored', clientId: 'demo-ci' })).toBe('stored login of client demo-ci');
  });
});
