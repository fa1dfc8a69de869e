import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK } from 'jose';

/**
 * The built-in development OIDC issuer: a real oidc-provider on loopback, used by `hoopctl demo`, the tests and
 * the benchmarks. Device flow for humans (public CLI client, refresh tokens), client credentials for services,
 * and RFC 9068 JWT access tokens whose `aud` is the broker's audience and which carry `groups`.
 * Never use it outside development: any login name is accepted.
 */

export interface DevIssuerOptions {
  host?: string;
  port?: number;
  audience: string;
  /** Default 900. */
  accessTokenTtlSeconds?: number;
  /** Default 'hoopctl-cli': public, device_code + refresh_token. */
  cliClientId?: string;
  users?: Record<string, { groups: string[]; email?: string }>;
  /** Groups for any login not listed in `users`. */
  defaultGroups?: string[];
  /** Client credentials clients. */
  serviceClients?: Array<{ clientId: string; clientSecret: string; groups: string[] }>;
  /** Private RS256 JWK; generated when absent. */
  signingKey?: JWK;
}

export interface DevIssuer {
  issuer: string;
  cliClientId: string;
  audience: string;
  /** The private signing key, so tests can forge tokens the broker would otherwise accept. */
  signingKey: JWK;
  kid: string;
  stop(): Promise<void>;
}

/** The parts of oidc-provider this file uses (the package ships no type declarations). */
interface OidcProviderModule {
  Provider: new (issuer: string, configuration: object) => { callback(): Parameters<Server['on']>[1] };
  errors: { InvalidTarget: new () => Error };
}

/**
 * Loaded on first use: oidc-provider is large and prints a runtime notice on import, so a CLI that merely
 * contains `hoopctl demo` should not pay for it on every command.
 */
async function loadOidcProvider(): Promise<OidcProviderModule> {
  // @ts-expect-error TS7016: oidc-provider has no type declarations
  return (await import('oidc-provider')) as OidcProviderModule;
}

/** The parts of oidc-provider's context and token models this file reads. */
interface ProviderContext {
  type: string;
  body: string;
}
interface ProviderToken {
  kind: string;
  accountId?: string;
  clientId?: string;
}

const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

export async function startDevIssuer(o: DevIssuerOptions): Promise<DevIssuer> {
  const host = o.host ?? '127.0.0.1';
  const cliClientId = o.cliClientId ?? 'hoopctl-cli';
  const ttl = o.accessTokenTtlSeconds ?? 900;
  const users = o.users ?? {};
  const defaultGroups = o.defaultGroups ?? [];
  const serviceClients = o.serviceClients ?? [];
  const signingKey = o.signingKey ?? (await generateSigningKey());
  const kid = signingKey.kid ?? (await calculateJwkThumbprint(signingKey));
  const key: JWK = { ...signingKey, kid, alg: 'RS256', use: 'sig' };
  const { Provider, errors: providerErrors } = await loadOidcProvider();

  // Listen first so the issuer URL carries the real port (no free-port race).
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const issuer = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  const groupsOfClient = new Map(serviceClients.map((c) => [c.clientId, c.groups]));

  const configuration = {
    clients: [
      {
        client_id: cliClientId,
        client_name: 'hoopctl',
        token_endpoint_auth_method: 'none',
        grant_types: [DEVICE_CODE_GRANT, 'refresh_token'],
        response_types: [],
        redirect_uris: [],
      },
      ...serviceClients.map((c) => ({
        client_id: c.clientId,
        client_secret: c.clientSecret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      })),
    ],
    jwks: { keys: [key] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'offline_access', 'email', 'profile'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username'] },
    ttl: {
      AccessToken: ttl,
      ClientCredentials: ttl,
      DeviceCode: 600,
      Grant: 14 * 24 * 3600,
      IdToken: 3600,
      Interaction: 3600,
      RefreshToken: 14 * 24 * 3600,
      Session: 14 * 24 * 3600,
    },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      deviceFlow: {
        enabled: true,
        userCodeInputSource: (ctx: ProviderContext, form: string, _out: unknown, err: unknown) =>
          renderPage(ctx, 'Sign in to hoopctl', `<p>${err ? 'That code did not work. Try again.' : 'Enter the code shown by hoopctl.'}</p>${form}<button type="submit" form="op.deviceInputForm">Continue</button>`),
        userCodeConfirmSource: (ctx: ProviderContext, form: string, _client: unknown, _info: unknown, userCode: string) =>
          renderPage(ctx, 'Confirm device', `<p>Does hoopctl show the code <code>${escapeHtml(userCode)}</code>?</p>${form}<button type="submit" form="op.deviceConfirmForm">Continue</button> <button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button>`),
        successSource: (ctx: ProviderContext) => renderPage(ctx, 'Signed in', '<p>You are signed in. Return to your terminal.</p>'),
      },
      resourceIndicators: {
        enabled: true,
        // Every token is for the broker, so clients need not send `resource`; the device and refresh grants
        // reuse the resource granted at consent (otherwise an `openid` request yields an opaque userinfo token).
        defaultResource: () => o.audience,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx: unknown, indicator: string) => {
          if (indicator !== o.audience) throw new providerErrors.InvalidTarget();
          return { scope: '', audience: o.audience, accessTokenTTL: ttl, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
        },
      },
    },
    findAccount: (_ctx: unknown, sub: string) => ({
      accountId: sub,
      claims: () => {
        const email = users[sub]?.email;
        return email ? { sub, email, email_verified: true, preferred_username: sub } : { sub, preferred_username: sub };
      },
    }),
    extraTokenClaims: (_ctx: unknown, token: ProviderToken) => {
      if (token.kind === 'ClientCredentials') {
        return { groups: groupsOfClient.get(token.clientId ?? '') ?? [] };
      }
      if (token.accountId) {
        // preferred_username marks the token as a person's (the broker tells humans from services by it).
        const user = users[token.accountId];
        const claims = { groups: user?.groups ?? defaultGroups, preferred_username: token.accountId };
        return user?.email ? { ...claims, email: user.email } : claims;
      }
      return undefined;
    },
    clientBasedCORS: () => false,
    renderError: (ctx: ProviderContext, out: Record<string, string>) =>
      renderPage(ctx, 'Sign-in failed', Object.entries(out).map(([k, v]) => `<p><strong>${escapeHtml(k)}</strong>: ${escapeHtml(String(v))}</p>`).join('')),
  };

  // The provider prints start-up notices (in-memory adapter, devInteractions) with console.warn/info while it
  // is constructed; construction is synchronous, so muting the console for that span hides nothing else.
  const { warn, info } = console;
  let provider: InstanceType<OidcProviderModule['Provider']>;
  try {
    console.warn = () => {};
    console.info = () => {};
    provider = new Provider(issuer, configuration);
  } catch (e) {
    server.close();
    throw e;
  } finally {
    console.warn = warn;
    console.info = info;
  }
  server.on('request', provider.callback());

  return {
    issuer,
    cliClientId,
    audience: o.audience,
    signingKey: key,
    kid,
    stop: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

async function generateSigningKey(): Promise<JWK> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid: await calculateJwkThumbprint(jwk), alg: 'RS256', use: 'sig' };
}

function renderPage(ctx: ProviderContext, title: string, body: string): void {
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head><body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
