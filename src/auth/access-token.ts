import { decodeJwt } from 'jose';
import { HoopError, UserError } from '../lib/errors.js';
import { fetchAuthConfig } from './broker-auth-config.js';
import { clientCredentialsLogin, refreshTokenSet, type TokenSet } from './oidc.js';
import type { StoredCredentials, TokenStore } from './token-store.js';

/**
 * The access token a command sends to the broker, in order of precedence:
 * 1. `HOOPCTL_TOKEN` (a JWT the CI platform issued), used as is;
 * 2. the stored login for this broker, refreshed when it expires within a minute;
 * 3. client credentials from `HOOPCTL_CLIENT_ID` + `HOOPCTL_CLIENT_SECRET` against the broker's issuer.
 * Anything else is an error that tells the user to log in: never a fallback to something weaker.
 */

export type AccessTokenSource = 'env' | 'stored' | 'refreshed' | 'client-credentials';

export interface ResolvedAccessToken {
  token: string;
  source: AccessTokenSource;
  /** ms since epoch, when known. */
  expiresAt?: number;
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

  const envToken = o.env.HOOPCTL_TOKEN?.trim();
  if (envToken) return { token: envToken, source: 'env', expiresAt: jwtExpiry(envToken) };

  const clientId = o.env.HOOPCTL_CLIENT_ID;
  const clientSecret = o.env.HOOPCTL_CLIENT_SECRET;
  const envClient = clientId && clientSecret ? { clientId, clientSecret } : undefined;

  const stored = await o.store.load(o.broker);
  if (stored) {
    if (stored.tokens.expiresAt - now() > REFRESH_MARGIN_MS) {
      return { token: stored.tokens.accessToken, source: 'stored', expiresAt: stored.tokens.expiresAt };
    }
    if (stored.tokens.refreshToken) {
      return refreshStored(o.store, stored, now, loginHint);
    }
    if (!envClient && stored.tokens.expiresAt > now()) {
      // Nearly expired and nothing to renew it with: still good for this request.
      return { token: stored.tokens.accessToken, source: 'stored', expiresAt: stored.tokens.expiresAt };
    }
    if (!envClient) {
      throw new UserError(`the stored access token for ${o.broker} expired at ${new Date(stored.tokens.expiresAt).toISOString()} and cannot be refreshed`, {
        code: 'TOKEN_EXPIRED',
        hint: loginHint,
      });
    }
  }

  if (envClient) {
    const auth = await fetchAuthConfig(o.broker);
    const tokens = await clientCredentialsLogin({ issuer: auth.issuer, ...envClient });
    return { token: tokens.accessToken, source: 'client-credentials', expiresAt: tokens.expiresAt };
  }

  throw new UserError(`not logged in to ${o.broker}`, { code: 'NOT_LOGGED_IN', hint: loginHint });
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
