import { UserError } from '../lib/errors.js';

/** What a broker tells clients about how to log in: `GET <broker>/api/v1/auth/config`. */
export interface BrokerAuthConfig {
  issuer: string;
  /** Public client for the device flow; absent when the broker offers no interactive login. */
  clientId?: string;
  scopes: string[];
  audience: string;
  /** The broker's PostgreSQL front door, when it has one: where clients connect and whether it wants TLS. */
  postgres?: { address: { host: string; port: number }; tls: boolean };
}

export const AUTH_CONFIG_PATH = '/api/v1/auth/config';

export async function fetchAuthConfig(broker: string, options: { fetch?: typeof fetch } = {}): Promise<BrokerAuthConfig> {
  const fetchImpl = options.fetch ?? globalThis.fetch;
  const url = new URL(AUTH_CONFIG_PATH, broker);
  let response: Response;
  try {
    response = await fetchImpl(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(15_000) });
  } catch (e) {
    const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).message;
    throw new UserError(`cannot reach the broker at ${broker}: ${cause}`, {
      code: 'BROKER_UNREACHABLE',
      hint: 'check the broker URL and your network connection',
      cause: e,
    });
  }
  const invalid = (why: string, cause?: unknown) =>
    new UserError(`the broker at ${broker} did not return its login settings (${url.pathname}): ${why}`, {
      code: 'BROKER_AUTH_CONFIG_INVALID',
      hint: 'check that the URL points at a hoopctl broker',
      cause,
    });
  if (!response.ok) {
    await response.body?.cancel();
    throw invalid(`HTTP ${response.status}`);
  }
  let body: unknown;
  try {
    body = await response.json();
  } catch (e) {
    throw invalid('the response is not JSON', e);
  }
  const b = body as Partial<Record<keyof BrokerAuthConfig, unknown>> | null;
  if (!b || typeof b !== 'object') throw invalid('the response is not an object');
  if (typeof b.issuer !== 'string' || !URL.canParse(b.issuer)) throw invalid('"issuer" is missing or not a URL');
  if (typeof b.audience !== 'string' || b.audience === '') throw invalid('"audience" is missing');
  if (b.clientId !== undefined && b.clientId !== null && typeof b.clientId !== 'string') throw invalid('"clientId" is not a string');
  if (b.scopes !== undefined && !(Array.isArray(b.scopes) && b.scopes.every((s) => typeof s === 'string'))) {
    throw invalid('"scopes" is not a list of strings');
  }
  return {
    issuer: b.issuer,
    ...(typeof b.clientId === 'string' && b.clientId !== '' ? { clientId: b.clientId } : {}),
    scopes: (b.scopes as string[] | undefined) ?? ['openid', 'offline_access'],
    audience: b.audience,
    ...(frontDoorOf((b as { postgres?: unknown }).postgres) ?? {}),
  };
}

function frontDoorOf(v: unknown): { postgres: NonNullable<BrokerAuthConfig['postgres']> } | undefined {
  const p = v as { address?: { host?: unknown; port?: unknown }; tls?: unknown } | null | undefined;
  if (!p || typeof p !== 'object' || typeof p.address?.host !== 'string' || typeof p.address.port !== 'number') return undefined;
  return { postgres: { address: { host: p.address.host, port: p.address.port }, tls: p.tls === true } };
}
