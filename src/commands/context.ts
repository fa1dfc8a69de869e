import Conf from 'conf';
import { UserError, type HoopError } from '../lib/errors.js';
import { fetchAuthConfig } from '../auth/broker-auth-config.js';
import { didYouMean } from '../lib/did-you-mean.js';
import { createTokenStore } from '../auth/token-store.js';
import { resolveAccessToken, type ResolvedAccessToken } from '../auth/access-token.js';
import { BrokerClient } from '../api/broker-client.js';
import { profileFlagGiven } from './profile-flag.js';

/**
 * What every client command needs: which broker, a valid access token for it, and a small JSON API client.
 * The broker URL comes from --broker, then --profile, then HOOPCTL_BROKER, then HOOPCTL_PROFILE, then the one the
 * last plain `hoopctl login` saved. A profile is a name for a broker (`login --broker URL --profile prod`), so
 * several brokers live side by side; tokens are kept per broker whatever the profile.
 */
interface ClientSettings {
  broker?: string;
  profiles?: Record<string, { broker: string }>;
}

export function settings(): Conf<ClientSettings> {
  return new Conf<ClientSettings>({ projectName: 'hoopctl', projectSuffix: '', configName: 'config' });
}

export function normalizeBrokerUrl(input: string): string {
  let u: URL;
  try {
    u = new URL(input);
  } catch {
    throw new UserError(`not a URL: ${input}`, { code: 'BAD_BROKER_URL', hint: 'pass the broker URL, e.g. --broker https://hoop.example.com' });
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') {
    throw new UserError(`broker URL must be http(s): ${input}`, { code: 'BAD_BROKER_URL' });
  }
  return u.origin;
}

/** The profile this command runs under, if one is named (flag, then HOOPCTL_PROFILE). */
export function selectedProfile(): string | undefined {
  return profileFlagGiven() ?? (process.env.HOOPCTL_PROFILE || undefined);
}

export function profiles(): Record<string, { broker: string }> {
  return settings().get('profiles') ?? {};
}

/** A profile's broker; an unknown name is a usage error with the names there are. */
export function profileBroker(name: string): string {
  const all = profiles();
  const found = all[name];
  if (!found) {
    throw new UserError(`no profile "${name}"${didYouMean(name, Object.keys(all))}`, {
      code: 'USAGE',
      hint: Object.keys(all).length > 0 ? `profiles: ${Object.keys(all).join(', ')} (hoopctl profiles)` : 'create one: hoopctl login --broker <url> --profile <name>',
    });
  }
  return found.broker;
}

export function resolveBroker(flag?: string): string {
  if (flag) return normalizeBrokerUrl(flag);
  const profileFlag = profileFlagGiven();
  if (profileFlag) return profileBroker(profileFlag);
  if (process.env.HOOPCTL_BROKER) return normalizeBrokerUrl(process.env.HOOPCTL_BROKER);
  if (process.env.HOOPCTL_PROFILE) return profileBroker(process.env.HOOPCTL_PROFILE);
  const raw = settings().get('broker');
  if (!raw) {
    throw new UserError('no broker configured', { code: 'NO_BROKER', hint: 'run `hoopctl login --broker <url>` or set HOOPCTL_BROKER' });
  }
  return normalizeBrokerUrl(raw);
}

export function tokenStore() {
  return createTokenStore({});
}

/**
 * The token for `broker` and where it came from (whoami shows the source). With no login stored for that URL, the
 * URL itself may be the mistake (a typo, a port nothing answers on): the broker is asked first, so the user hears
 * "cannot reach" or "not a hoopctl broker" rather than a login that would fail the same way.
 */
export async function resolveToken(broker: string, store = tokenStore()): Promise<ResolvedAccessToken> {
  try {
    return await resolveAccessToken({ broker, store, env: process.env });
  } catch (e) {
    if ((e as HoopError).code === 'NOT_LOGGED_IN') await fetchAuthConfig(broker);
    throw e;
  }
}

export async function accessToken(broker: string): Promise<string> {
  return (await resolveToken(broker)).token;
}

/**
 * The token for `broker` as a function a long-running command calls at each use (`connect`, per tunnel connection):
 * the token is resolved each time (a refresh, or a logout, by another process is seen), but the token store and its
 * keychain probe (a D-Bus round trip on a desktop) are made once per process.
 */
export function accessTokenSource(broker: string): () => Promise<string> {
  const store = tokenStore();
  let fromEnv: string | undefined;
  return async () => {
    if (fromEnv !== undefined) return fromEnv;
    const resolved = await resolveToken(broker, store);
    // HOOPCTL_TOKEN is the process's for its whole life: read and checked once (the broker verifies it every time).
    if (resolved.source === 'env') fromEnv = resolved.token;
    return resolved.token;
  };
}

/** The broker's API with this command's token (resolved again before each request). */
export function brokerClient(broker: string, token?: string): BrokerClient {
  return new BrokerClient(broker, token ? () => Promise.resolve(token) : () => accessToken(broker));
}

export function brokerGet<T>(broker: string, path: string, token?: string): Promise<T> {
  return brokerClient(broker, token).get<T>(path);
}

export function brokerPost<T>(broker: string, path: string, body: unknown, token?: string): Promise<T> {
  return brokerClient(broker, token).post<T>(path, body);
}

export type OutputFormat = 'text' | 'json';

export function parseOutput(value: string): OutputFormat {
  if (value !== 'text' && value !== 'json') throw new UserError(`unknown output format "${value}" (use text or json)`, { code: 'USAGE' });
  return value;
}
