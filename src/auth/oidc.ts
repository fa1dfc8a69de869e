import * as client from 'openid-client';
import { decodeJwt } from 'jose';
import { UserError } from '../lib/errors.js';
import { isLoopbackHost } from '../lib/net.js';

/**
 * hoopctl's side of OIDC: the device flow for people (RFC 8628), client credentials for services, refresh.
 * Every failure becomes a `UserError` with a stable code; raw library errors stay in `cause`.
 */

export interface TokenSet {
  accessToken: string;
  refreshToken?: string;
  idToken?: string;
  /** ms since epoch. */
  expiresAt: number;
  scope?: string;
}

export interface DevicePrompt {
  userCode: string;
  verificationUri: string;
  verificationUriComplete?: string;
  /** Seconds until the user code expires. */
  expiresIn: number;
}

const LOGIN_HINT = 'run `hoopctl login` again';

export async function deviceLogin(o: {
  issuer: string;
  clientId: string;
  scopes: string[];
  onPrompt(p: DevicePrompt): void;
  pollIntervalSeconds?: number;
  signal?: AbortSignal;
}): Promise<TokenSet> {
  const config = await discover(o.issuer, o.clientId);
  let authorization: client.DeviceAuthorizationResponse;
  try {
    authorization = await client.initiateDeviceAuthorization(config, { scope: o.scopes.join(' ') });
  } catch (e) {
    throw toUserError(e, o.issuer, `could not start the device login at ${o.issuer}`);
  }
  o.onPrompt({
    userCode: authorization.user_code,
    verificationUri: authorization.verification_uri,
    verificationUriComplete: authorization.verification_uri_complete,
    expiresIn: authorization.expires_in,
  });
  const polled =
    o.pollIntervalSeconds === undefined ? authorization : { ...authorization, interval: o.pollIntervalSeconds };
  try {
    const response = await client.pollDeviceAuthorizationGrant(config, polled, undefined, o.signal ? { signal: o.signal } : undefined);
    return toTokenSet(response);
  } catch (e) {
    if (o.signal?.aborted) {
      throw new UserError('login cancelled', { code: 'LOGIN_CANCELLED', cause: e });
    }
    throw toUserError(e, o.issuer, 'the device login failed');
  }
}

export async function clientCredentialsLogin(o: {
  issuer: string;
  clientId: string;
  clientSecret: string;
  scopes?: string[];
}): Promise<TokenSet> {
  const config = await discover(o.issuer, o.clientId, o.clientSecret);
  try {
    const response = await client.clientCredentialsGrant(config, o.scopes?.length ? { scope: o.scopes.join(' ') } : {});
    return toTokenSet(response);
  } catch (e) {
    throw toUserError(e, o.issuer, `client credentials login for client "${o.clientId}" failed`);
  }
}

export async function refreshTokenSet(o: { issuer: string; clientId: string; refreshToken: string }): Promise<TokenSet> {
  const config = await discover(o.issuer, o.clientId);
  try {
    const response = await client.refreshTokenGrant(config, o.refreshToken);
    // Issuers that do not rotate refresh tokens return none; the old one stays valid.
    return { ...toTokenSet(response), refreshToken: response.refresh_token ?? o.refreshToken };
  } catch (e) {
    const err = toUserError(e, o.issuer, 'refreshing the access token failed');
    if (err.code === 'LOGIN_DENIED' || err.code === 'OIDC_ERROR') {
      throw new UserError(`the login session ended: ${err.message}`, { code: 'REFRESH_FAILED', hint: LOGIN_HINT, cause: e });
    }
    throw err;
  }
}

async function discover(issuer: string, clientId: string, clientSecret?: string): Promise<client.Configuration> {
  let url: URL;
  try {
    url = new URL(issuer);
  } catch (e) {
    throw new UserError(`issuer "${issuer}" is not a URL`, { code: 'ISSUER_INVALID', cause: e });
  }
  // Plain HTTP is only for a development issuer on this machine; elsewhere it would expose tokens.
  const insecure = url.protocol === 'http:';
  if (insecure && !isLoopbackHost(url.hostname.replace(/^\[|\]$/g, ''))) {
    throw new UserError(`issuer ${issuer} uses plain http; only loopback issuers may`, { code: 'ISSUER_INSECURE' });
  }
  try {
    return await client.discovery(
      url,
      clientId,
      clientSecret === undefined ? { token_endpoint_auth_method: 'none' } : undefined,
      clientSecret === undefined ? client.None() : client.ClientSecretBasic(clientSecret),
      insecure ? { execute: [client.allowInsecureRequests], timeout: 15 } : { timeout: 15 },
    );
  } catch (e) {
    const timedOut = e instanceof client.ClientError && e.code === 'OAUTH_TIMEOUT';
    if (!timedOut && (e instanceof client.ClientError || e instanceof client.ResponseBodyError)) {
      throw new UserError(`the OIDC discovery document of ${issuer} could not be read: ${e.message}`, {
        code: 'ISSUER_DISCOVERY_FAILED',
        hint: 'check the issuer URL in the broker configuration',
        cause: e,
      });
    }
    throw new UserError(`cannot reach the OIDC issuer ${issuer}: ${describeNetworkError(e)}`, {
      code: 'ISSUER_UNREACHABLE',
      hint: 'check your network connection and that the issuer is up',
      cause: e,
    });
  }
}

function toTokenSet(response: client.TokenEndpointResponse): TokenSet {
  return {
    accessToken: response.access_token,
    refreshToken: response.refresh_token,
    idToken: response.id_token,
    expiresAt: expiryOf(response),
    scope: response.scope,
  };
}

function expiryOf(response: client.TokenEndpointResponse): number {
  if (typeof response.expires_in === 'number') return Date.now() + response.expires_in * 1000;
  try {
    const { exp } = decodeJwt(response.access_token);
    if (typeof exp === 'number') return exp * 1000;
  } catch {
    // opaque token without expires_in: assume a short life so it is renewed early
  }
  return Date.now() + 5 * 60_000;
}

/** Maps openid-client / oauth4webapi errors to coded user errors. */
function toUserError(e: unknown, issuer: string, what: string): UserError {
  if (e instanceof UserError) return e;
  if (e instanceof client.ResponseBodyError || e instanceof client.AuthorizationResponseError) {
    const detail = e.error_description ? `${e.error}: ${e.error_description}` : e.error;
    switch (e.error) {
      case 'access_denied':
        return new UserError(`${what}: the sign-in was denied (${detail})`, { code: 'LOGIN_DENIED', hint: LOGIN_HINT, cause: e });
      case 'expired_token':
        return new UserError(`${what}: the user code expired before the sign-in was completed`, { code: 'LOGIN_EXPIRED', hint: LOGIN_HINT, cause: e });
      case 'invalid_client':
      case 'unauthorized_client':
        return new UserError(`${what}: the issuer rejected the client (${detail})`, {
          code: 'CLIENT_AUTH_FAILED',
          hint: 'check the client id and secret (HOOPCTL_CLIENT_ID, HOOPCTL_CLIENT_SECRET)',
          cause: e,
        });
      case 'invalid_grant':
        return new UserError(`${what}: the issuer rejected the grant (${detail})`, { code: 'LOGIN_DENIED', hint: LOGIN_HINT, cause: e });
      default:
        return new UserError(`${what}: ${detail}`, { code: 'OIDC_ERROR', cause: e });
    }
  }
  if (e instanceof client.WWWAuthenticateChallengeError) {
    const challenge = e.cause[0];
    const error = challenge?.parameters.error ?? `HTTP ${e.status}`;
    const code = error === 'invalid_client' || e.status === 401 ? 'CLIENT_AUTH_FAILED' : 'OIDC_ERROR';
    return new UserError(`${what}: the issuer answered ${error}${challenge?.parameters.error_description ? ` (${challenge.parameters.error_description})` : ''}`, {
      code,
      hint: code === 'CLIENT_AUTH_FAILED' ? 'check the client id and secret (HOOPCTL_CLIENT_ID, HOOPCTL_CLIENT_SECRET)' : undefined,
      cause: e,
    });
  }
  if (e instanceof client.ClientError && e.code === 'OAUTH_TIMEOUT') {
    return new UserError(`${what}: the user code expired before the sign-in was completed`, { code: 'LOGIN_EXPIRED', hint: LOGIN_HINT, cause: e });
  }
  if (e instanceof client.ClientError && e.code === 'OAUTH_ABORT') {
    return new UserError('login cancelled', { code: 'LOGIN_CANCELLED', cause: e });
  }
  if (e instanceof TypeError) {
    return new UserError(`${what}: cannot reach the OIDC issuer ${issuer}: ${describeNetworkError(e)}`, { code: 'ISSUER_UNREACHABLE', cause: e });
  }
  return new UserError(`${what}: ${e instanceof Error ? e.message : String(e)}`, { code: 'OIDC_ERROR', cause: e });
}

function describeNetworkError(e: unknown): string {
  const cause = (e as { cause?: { code?: string; message?: string } } | undefined)?.cause;
  return cause?.code ?? cause?.message ?? (e instanceof Error ? e.message : String(e));
}
