import {
  createRemoteJWKSet,
  customFetch,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import type { IssuerConfig } from '../config.js';
import type { Identity } from '../../api/identity.js';
import { HoopError } from '../../lib/errors.js';

/**
 * Verifies bearer access tokens (JWTs) against the broker's trusted issuers and maps them to an `Identity`.
 * Each rejection is a `HoopError` with status 401 and a stable code; messages never include the token.
 */

export type TokenRejectionCode =
  | 'TOKEN_MALFORMED'
  | 'TOKEN_UNKNOWN_ISSUER'
  | 'TOKEN_ALG_NOT_ALLOWED'
  | 'TOKEN_BAD_SIGNATURE'
  | 'TOKEN_UNKNOWN_KEY'
  | 'TOKEN_EXPIRED'
  | 'TOKEN_NOT_YET_VALID'
  | 'TOKEN_WRONG_AUDIENCE'
  | 'TOKEN_LIFETIME_TOO_LONG'
  | 'TOKEN_WRONG_TYPE'
  | 'TOKEN_HEADER_NOT_ALLOWED'
  | 'TOKEN_INVALID';

export interface TokenVerifier {
  verify(token: string): Promise<Identity>;
}

export interface TokenVerifierOptions {
  fetch?: typeof fetch;
  /** ms since epoch; for tests. */
  now?: () => number;
}

/** Longer than any access token an issuer hands out; longer input is refused before it is decoded. */
export const MAX_TOKEN_LENGTH = 16 * 1024;

/**
 * Headers that point at a verification key of the sender's choosing. The broker only ever uses the keys its issuers
 * publish, so a token naming one is a forgery attempt (or a misconfigured issuer) and is refused outright.
 */
const KEY_REFERENCE_HEADERS = ['jku', 'x5u', 'jwk', 'x5c'];

/** Claims that only tokens issued to a person carry (OIDC standard claims, session and login-method claims). */
const HUMAN_CLAIMS = ['email', 'preferred_username', 'name', 'given_name', 'upn', 'auth_time', 'amr', 'sid'];

export function createTokenVerifier(issuers: IssuerConfig[], options: TokenVerifierOptions = {}): TokenVerifier {
  const fetchImpl = options.fetch ?? globalThis.fetch;
  const now = options.now ?? Date.now;
  const trusted = new Map<string, IssuerConfig>();
  const groupTrust = new Map<IssuerConfig, ReadonlySet<string>>();
  issuers.forEach((config, index) => {
    for (const form of issuerForms(config.issuer)) if (!trusted.has(form)) trusted.set(form, config);
    groupTrust.set(config, new Set(config.trustedGroups ?? (index === 0 ? ['*'] : [])));
  });
  const keySets = new Map<IssuerConfig, Promise<JWTVerifyGetKey>>();

  function keySetOf(config: IssuerConfig): Promise<JWTVerifyGetKey> {
    let keySet = keySets.get(config);
    if (!keySet) {
      keySet = resolveJwksUri(config, fetchImpl).then((uri) => createRemoteJWKSet(uri, { [customFetch]: fetchImpl }));
      // A failed discovery is retried on the next token rather than cached.
      keySet.catch(() => keySets.delete(config));
      keySets.set(config, keySet);
    }
    return keySet;
  }

  return {
    async verify(token: string): Promise<Identity> {
      if (typeof token === 'string' && token.length > MAX_TOKEN_LENGTH) {
        throw reject('TOKEN_MALFORMED', `access token is longer than ${MAX_TOKEN_LENGTH} characters`);
      }
      if (typeof token !== 'string' || !/^[\w-]+\.[\w-]+\.[\w-]*$/.test(token)) {
        throw reject('TOKEN_MALFORMED', 'access token is not a JWT');
      }
      let header: ReturnType<typeof decodeProtectedHeader>;
      let unverified: JWTPayload;
      try {
        header = decodeProtectedHeader(token);
        unverified = decodeJwt(token);
      } catch (e) {
        throw reject('TOKEN_MALFORMED', 'access token is not a well-formed JWT', e);
      }
      const alg: unknown = header.alg;
      const keyReference = KEY_REFERENCE_HEADERS.find((h) => h in header);
      if (keyReference) {
        throw reject('TOKEN_HEADER_NOT_ALLOWED', `access token header "${keyReference}" names a key of its own; only the issuer's published keys verify tokens`);
      }
      if (typeof unverified.iss !== 'string') throw reject('TOKEN_MALFORMED', 'access token has no "iss" claim');
      const config = trusted.get(unverified.iss);
      if (!config) throw reject('TOKEN_UNKNOWN_ISSUER', `access token issuer ${quote(unverified.iss)} is not trusted by this broker`);
      // Checked before any key lookup so `none` and HMAC-with-the-public-key forgeries get their own code.
      if (typeof alg !== 'string' || !(config.algorithms as string[]).includes(alg)) {
        throw reject('TOKEN_ALG_NOT_ALLOWED', `access token algorithm ${quote(String(alg))} is not allowed (allowed: ${config.algorithms.join(', ')})`);
      }

      let keySet: JWTVerifyGetKey;
      try {
        keySet = await keySetOf(config);
      } catch (e) {
        throw reject('TOKEN_INVALID', `cannot load the signing keys of issuer ${config.issuer}: ${(e as Error).message}`, e);
      }

      const currentMs = now();
      const toleranceSeconds = Math.floor(config.clockTolerance / 1000);
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, keySet, {
          issuer: unverified.iss,
          audience: config.audience,
          algorithms: config.algorithms,
          clockTolerance: toleranceSeconds,
          requiredClaims: ['exp', 'iat'],
          currentDate: new Date(currentMs),
        }));
      } catch (e) {
        throw mapJoseError(e, unverified, config);
      }

      if (!typeAccepted(header.typ, config.tokenTypes)) {
        throw reject(
          'TOKEN_WRONG_TYPE',
          `token type ${quote(String(header.typ ?? 'none'))} is not an access token this broker accepts from issuer ${config.issuer} (accepted: ${config.tokenTypes.join(', ')})`,
        );
      }
      const exp = payload.exp!;
      const iat = payload.iat!;
      if (iat * 1000 > currentMs + config.clockTolerance) {
        throw reject('TOKEN_NOT_YET_VALID', `access token is issued in the future (${iso(iat)})`);
      }
      if ((exp - iat) * 1000 > config.maxTokenLifetime) {
        throw reject(
          'TOKEN_LIFETIME_TOO_LONG',
          `access token lifetime of ${exp - iat} s exceeds the maximum of ${Math.floor(config.maxTokenLifetime / 1000)} s for issuer ${config.issuer}`,
        );
      }
      if (typeof payload.sub !== 'string' || payload.sub === '') {
        throw reject('TOKEN_INVALID', 'access token has no "sub" claim');
      }
      return toIdentity(payload, config, exp, groupTrust.get(config)!);
    },
  };
}

function toIdentity(payload: JWTPayload, config: IssuerConfig, exp: number, trustedGroups: ReadonlySet<string>): Identity {
  const sub = payload.sub!;
  const clientId = stringClaim(payload.client_id) ?? stringClaim(payload.azp);
  const service =
    sub === clientId ||
    payload.gty === 'client-credentials' ||
    payload.idtyp === 'app' ||
    !HUMAN_CLAIMS.some((claim) => payload[claim] !== undefined);
  const groups = groupsOf(payload[config.groupsClaim], config.groupsClaim);
  return {
    // The issuer as configured, so one identity has one spelling whether or not its token ends `iss` with a slash.
    issuer: config.issuer,
    subject: sub,
    kind: service ? 'service' : 'human',
    clientId,
    name: stringClaim(payload.email) ?? stringClaim(payload.preferred_username) ?? sub,
    groups: trustedGroups.has('*') ? groups : groups.filter((g) => trustedGroups.has(g)),
    ...claimsOf(payload, config.identityClaims),
    expiresAt: exp * 1000,
  };
}

/** The configured claims that are present, as strings (CI tokens carry run ids as strings or numbers). */
function claimsOf(payload: JWTPayload, names: readonly string[]): { claims?: Record<string, string> } {
  const claims: Record<string, string> = {};
  for (const name of names) {
    const v = payload[name];
    if (typeof v === 'string' && v !== '') claims[name] = v.slice(0, 512);
    else if (typeof v === 'number' || typeof v === 'boolean') claims[name] = String(v);
  }
  return Object.keys(claims).length > 0 ? { claims } : {};
}

/**
 * Groups as a list of strings, or one space or comma separated string. Any other shape (an object, a number, a list
 * holding non-strings) is refused rather than read as "no groups": an issuer sending it is misconfigured or forged.
 */
function groupsOf(value: unknown, claim: string): string[] {
  if (value === undefined || value === null) return [];
  if (typeof value === 'string') return value.split(/[\s,]+/).filter(Boolean);
  if (Array.isArray(value) && value.every((g) => typeof g === 'string')) return value.filter((g) => g !== '');
  throw reject('TOKEN_INVALID', `access token claim "${claim}" must be a list of strings`);
}

/** RFC 8725 §3.11: `typ` compared without case, with or without the `application/` prefix. */
function typeAccepted(typ: unknown, accepted: readonly string[]): boolean {
  if (accepted.includes('*')) return true;
  if (typeof typ !== 'string') return false;
  const normal = (t: string) => t.toLowerCase().replace(/^application\//, '');
  return accepted.some((a) => normal(a) === normal(typ));
}

function mapJoseError(e: unknown, unverified: JWTPayload, config: IssuerConfig): HoopError {
  if (e instanceof errors.JWTExpired) {
    return reject('TOKEN_EXPIRED', `access token expired at ${typeof unverified.exp === 'number' ? iso(unverified.exp) : 'an unknown time'}`, e);
  }
  if (e instanceof errors.JWTClaimValidationFailed) {
    switch (e.claim) {
      case 'aud':
        return reject('TOKEN_WRONG_AUDIENCE', `access token audience ${quote(JSON.stringify(unverified.aud ?? null))} does not include ${config.audience}`, e);
      case 'nbf':
        return reject('TOKEN_NOT_YET_VALID', `access token is not valid before ${typeof unverified.nbf === 'number' ? iso(unverified.nbf) : 'an unknown time'}`, e);
      case 'iss':
        return reject('TOKEN_UNKNOWN_ISSUER', `access token issuer ${quote(String(unverified.iss))} is not trusted by this broker`, e);
      default:
        return reject('TOKEN_INVALID', `access token claim "${e.claim}" is ${e.reason === 'missing' ? 'missing' : 'invalid'}`, e);
    }
  }
  if (e instanceof errors.JOSEAlgNotAllowed) return reject('TOKEN_ALG_NOT_ALLOWED', 'access token algorithm is not allowed', e);
  if (e instanceof errors.JWSSignatureVerificationFailed) {
    return reject('TOKEN_BAD_SIGNATURE', `access token signature does not verify with the keys of issuer ${config.issuer}`, e);
  }
  if (e instanceof errors.JWKSNoMatchingKey) {
    return reject('TOKEN_UNKNOWN_KEY', `access token is signed with a key issuer ${config.issuer} does not publish`, e);
  }
  if (e instanceof errors.JWSInvalid || e instanceof errors.JWTInvalid) {
    return reject('TOKEN_MALFORMED', `access token is not a well-formed JWT: ${e.message}`, e);
  }
  if (e instanceof errors.JWKSTimeout || e instanceof errors.JWKSInvalid) {
    return reject('TOKEN_INVALID', `cannot load the signing keys of issuer ${config.issuer}: ${e.message}`, e);
  }
  return reject('TOKEN_INVALID', `access token rejected: ${e instanceof Error ? e.message : String(e)}`, e);
}

async function resolveJwksUri(config: IssuerConfig, fetchImpl: typeof fetch): Promise<URL> {
  if (config.jwksUri) return new URL(config.jwksUri);
  const url = `${config.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  const response = await fetchImpl(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(10_000) });
  if (!response.ok) throw new Error(`discovery document ${url} answered HTTP ${response.status}`);
  const document = (await response.json()) as { issuer?: unknown; jwks_uri?: unknown };
  if (typeof document.issuer !== 'string' || !issuerForms(config.issuer).includes(document.issuer)) {
    throw new Error(`discovery document ${url} names issuer ${quote(String(document.issuer))}`);
  }
  if (typeof document.jwks_uri !== 'string') throw new Error(`discovery document ${url} has no jwks_uri`);
  return new URL(document.jwks_uri);
}

/** The issuer as configured and with / without its trailing slash, which issuers are inconsistent about. */
function issuerForms(issuer: string): string[] {
  return issuer.endsWith('/') ? [issuer, issuer.slice(0, -1)] : [issuer, `${issuer}/`];
}

function reject(code: TokenRejectionCode, message: string, cause?: unknown): HoopError {
  return new HoopError(message, { code, status: 401, cause });
}

function stringClaim(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function iso(seconds: number): string {
  return new Date(seconds * 1000).toISOString();
}

/** Claim values are attacker-controlled: bound their length before they reach a log line. */
function quote(value: string): string {
  return JSON.stringify(value.length > 120 ? `${value.slice(0, 120)}…` : value);
}
