import { decodeJwt } from 'jose';
import { HoopError, UserError } from '../lib/errors.js';
import { fetchAuthConfig } from './broker-auth-config.js';
import { clientCredentialsLogin, refreshTokenSet, type TokenSet } from './oidc.js';
import type { StoredCredentials, TokenStore } from './token-store.js';

/**
 * The access token a command sends to the broker. An identity the process names in its environment wins, and is
 * used or the command fails: a CI job must never run as whoever last logged in on the machine.
 * 1. `HOOPCTL_TOKEN` (a JWT the CI platform issued), used as is; set but empty is a missing token;
 * 2. client credentials from `HOOPCTL_CLIENT_ID` + `HOOPCTL_CLIENT_SECRET` against the broker's issuer; a rejected
 *    secret is "not authenticated"; only one of the pair is a usage error (`HOOPCTL_CLIENT_ID` alone may use a stored
 *    `login --client-credentials` of that same client);
 * 3. the stored login for this broker, refreshed when it expires within a minute.
 * Anything else is an error that tells the user to log in: never a fallback to something weaker or to someone else.
 */

export type AccessTokenSource = 'env' | 'stored' | 'refreshed' | 'client-credentials';

export interface ResolvedAccessToken {
  token: string;
  source: AccessTokenSource;
  /** ms since epoch, when known. */
  expiresAt?: number;
  /** The service client, for client credentials (from the environment or a stored `login --client-credentials`). */
  clientId?: string;
}

/** Renew this long before expiry, so a token does not lapse between here and the broker. */
export const REFRESH_MARGIN_MS = 60_000;

export async function resolveAccessToken(o: {
  broker: string;
  store: TokenStore;
  env: NodeJS.ProcessEnv;
  /** ms since epoch; for tests. */
  now?: () => number;
}): Promise<ResolvedAccessToken> {
  const now = o.now ?? Date.now;
  const loginHint = `run \`hoopctl login --broker ${o.broker}\``;
  const named = namedServiceIdentity(o.env);

  // An expired one is still sent: the broker judges it and records the rejection; the CLI's hint names the variable.
  if (named?.kind === 'token') return { token: named.token, source: 'env', expiresAt: jwtExpiry(named.token) };
  if (named?.kind === 'client') {
    const auth = await fetchAuthConfig(o.broker);
    const tokens = await clientCredentialsLogin({ issuer: auth.issuer, clientId: named.clientId, clientSecret: named.clientSecret });
    return { token: tokens.accessToken, source: 'client-credentials', expiresAt: tokens.expiresAt, clientId: named.clientId };
  }

  const stored = await o.store.load(o.broker);
  if (named?.kind === 'stored-client' && !(stored?.kind === 'client-credentials' && stored.clientId === named.clientId)) {
    throw new UserError('HOOPCTL_CLIENT_ID is set but HOOPCTL_CLIENT_SECRET is not', {
      code: 'USAGE',
      hint: `set HOOPCTL_CLIENT_SECRET for client "${named.clientId}", or unset HOOPCTL_CLIENT_ID`,
    });
  }
  if (!stored) throw new UserError(`not logged in to ${o.broker}`, { code: 'NOT_LOGGED_IN', hint: loginHint });
  const clientId = stored.kind === 'client-credentials' ? { clientId: stored.clientId } : {};
  if (stored.tokens.expiresAt - now() > REFRESH_MARGIN_MS) {
    return { token: stored.tokens.accessToken, source: 'stored', expiresAt: stored.tokens.expiresAt, ...clientId };
  }
  if (stored.tokens.refreshToken) return { ...(await refreshStored(o.store, stored, now, loginHint)), ...clientId };
  if (stored.tokens.expiresAt > now()) {
    // Nearly expired and nothing to renew it with: still good for this request.
    return { token: stored.tokens.accessToken, source: 'stored', expiresAt: stored.tokens.expiresAt, ...clientId };
  }
  throw new UserError(`the stored access token for ${o.broker} expired at ${new Date(stored.tokens.expiresAt).toISOString()} and cannot be refreshed`, {
    code: 'TOKEN_EXPIRED',
    hint: loginHint,
  });
}

type NamedServiceIdentity =
  | { kind: 'token'; token: string }
  | { kind: 'client'; clientId: string; clientSecret: string }
  /** `HOOPCTL_CLIENT_ID` without a secret: only a stored client-credentials login of that client will do. */
  | { kind: 'stored-client'; clientId: string };

/**
 * The service identity the environment names, if any. A variable that is present but empty still names one (a CI
 * secret that did not resolve): it fails rather than letting a stored login stand in. Pure, for tests.
 */
export function namedServiceIdentity(env: NodeJS.ProcessEnv): NamedServiceIdentity | undefined {
  const token = env.HOOPCTL_TOKEN;
  const clientId = env.HOOPCTL_CLIENT_ID?.trim();
  const clientSecret = env.HOOPCTL_CLIENT_SECRET;
  if (token !== undefined) {
    if (clientId || clientSecret) {
      throw new UserError('both HOOPCTL_TOKEN and HOOPCTL_CLIENT_ID/HOOPCTL_CLIENT_SECRET are set', {
        code: 'USAGE',
        hint: 'set one identity for this process: HOOPCTL_TOKEN, or the client id and secret',
      });
    }
    if (!token.trim()) {
      throw new UserError('HOOPCTL_TOKEN is set but empty', { code: 'TOKEN_MISSING', hint: 'pass the platform token (HOOPCTL_TOKEN=$CI_OIDC_TOKEN), or unset HOOPCTL_TOKEN' });
    }
    return { kind: 'token', token: token.trim() };
  }
  if (clientSecret !== undefined && !clientId) {
    throw new UserError('HOOPCTL_CLIENT_SECRET is set but HOOPCTL_CLIENT_ID is not', { code: 'USAGE', hint: 'set HOOPCTL_CLIENT_ID to the client the secret belongs to' });
  }
  if (clientId === undefined) {
    return undefined;
  }
  if (!clientId) throw new UserError('HOOPCTL_CLIENT_ID is set but empty', { code: 'USAGE', hint: 'set it to the service client id, or unset it' });
  if (!clientSecret) return { kind: 'stored-client', clientId };
  return { kind: 'client', clientId, clientSecret };
}

/** How `whoami` names where the token came from; never shows a token or secret. */
export function describeTokenSource(r: Pick<ResolvedAccessToken, 'source' | 'clientId'>): string {
  switch (r.source) {
    case 'env':
      return 'HOOPCTL_TOKEN';
    case 'client-credentials':
      return `client credentials (HOOPCTL_CLIENT_ID=${r.clientId})`;
    case 'stored':
    case 'refreshed': {
      const what = r.clientId ? `stored login of client ${r.clientId}` : 'stored login';
      return r.source === 'refreshed' ? `${what} (refreshed)` : what;
    }
  }
}

async function refreshStored(
  store: TokenStore,
  stored: StoredCredentials,
  now: () => number,
  loginHint: string,
): Promise<ResolvedAccessToken> {
  let tokens: TokenSet;
  try {
    tokens = await refreshTokenSet({ issuer: stored.issuer, clientId: stored.clientId, refreshToken: stored.tokens.refreshToken! });
  } catch (e) {
    // Another hoopctl process may have refreshed (and rotated the refresh token) a moment ago.
    const latest = await store.load(stored.broker);
    if (latest && latest.tokens.refreshToken !== stored.tokens.refreshToken && latest.tokens.expiresAt - now() > REFRESH_MARGIN_MS) {
      return { token: latest.tokens.accessToken, source: 'stored', expiresAt: latest.tokens.expiresAt };
    }
    if (stored.tokens.expiresAt > now() && (e as HoopError).code !== 'REFRESH_FAILED') {
      // The issuer is unreachable but the token still works for a moment; the next command retries.
      return { token: stored.tokens.accessToken, source: 'stored', expiresAt: stored.tokens.expiresAt };
    }
    throw new UserError(
      `the stored access token for ${stored.broker} expired at ${new Date(stored.tokens.expiresAt).toISOString()} and could not be refreshed: ${(e as Error).message}`,
      { code: 'TOKEN_EXPIRED', hint: loginHint, cause: e },
    );
  }
  const renewed: StoredCredentials = {
    ...stored,
    tokens: { ...tokens, idToken: tokens.idToken ?? stored.tokens.idToken },
  };
  await store.save(renewed);
  return { token: tokens.accessToken, source: 'refreshed', expiresAt: tokens.expiresAt };
}

function jwtExpiry(token: string): number | undefined {
  try {
    const { exp } = decodeJwt(token);
    return typeof exp === 'number' ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
