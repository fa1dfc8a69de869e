import type { Command } from 'commander';
import { decodeJwt } from 'jose';
import { brokerGet, normalizeBrokerUrl, resolveBroker, resolveToken, profiles, selectedProfile, settings, tokenStore, parseOutput } from './context.js';
import { resolveAccessToken } from '../auth/access-token.js';
import { describeTokenSource } from '../auth/access-token.js';
import { fetchAuthConfig } from '../auth/broker-auth-config.js';
import { clientCredentialsLogin, deviceLogin } from '../auth/oidc.js';
import { UserError } from '../lib/errors.js';
import { printJson } from './render.js';
import type { Identity } from '../api/identity.js';

export function register(program: Command): void {
  program
    .command('login')
    .description('Get a short-lived access token from the broker\'s OIDC issuer (device flow, or client credentials for CI)')
    .option('--broker <url>', 'broker URL; remembered for later commands')
    .option('--client-credentials', 'log in as a service account with HOOPCTL_CLIENT_ID and HOOPCTL_CLIENT_SECRET')
    .option('--poll-interval <seconds>', 'device flow polling interval (default: what the issuer says, else 5)')
    .option('--force', 'sign in again even when a valid token for this broker is stored')
    .addHelpText('after', '\nWith --profile NAME (before or after `login`), the broker is saved under that name and the default stays as it is.\n\nExamples:\n  hoopctl login --broker https://hoop.example.com\n  hoopctl login --broker https://hoop.prod.example.com --profile prod\n  HOOPCTL_CLIENT_ID=ci HOOPCTL_CLIENT_SECRET=… hoopctl login --client-credentials')
    .action(async (opts: { broker?: string; clientCredentials?: boolean; pollInterval?: string; force?: boolean }) => {
      const profile = selectedProfile();
      const broker = opts.broker ? normalizeBrokerUrl(opts.broker) : resolveBroker();
      const auth = await fetchAuthConfig(broker);
      const store = tokenStore();
      const remember = () => (profile ? settings().set('profiles', { ...profiles(), [profile]: { broker } }) : settings().set('broker', broker));
      if (!opts.clientCredentials && !opts.force) {
        const reused = await validStoredLogin(broker);
        if (reused) {
          // A second `login` (another terminal, a script) must not send the user through the browser again.
          remember();
          process.stdout.write(`Already logged in to ${broker} as ${reused.name} (token valid until ${new Date(reused.expiresAt).toISOString()}); \`hoopctl login --force\` signs in again\n`);
          return;
        }
      }
      if (opts.clientCredentials) {
        const clientId = process.env.HOOPCTL_CLIENT_ID;
        const clientSecret = process.env.HOOPCTL_CLIENT_SECRET;
        if (!clientId || !clientSecret) {
          throw new UserError('client credentials login needs HOOPCTL_CLIENT_ID and HOOPCTL_CLIENT_SECRET in the environment', { code: 'USAGE' });
        }
        const tokens = await clientCredentialsLogin({ issuer: auth.issuer, clientId, clientSecret, scopes: [] });
        await store.save({ broker, issuer: auth.issuer, clientId, kind: 'client-credentials', tokens, subject: subjectOf(tokens.accessToken) });
      } else {
        if (!auth.clientId) throw new UserError('the broker names no OIDC client for interactive login', { code: 'LOGIN_UNAVAILABLE', hint: 'use --client-credentials or HOOPCTL_TOKEN' });
        const tokens = await deviceLogin({
          issuer: auth.issuer,
          clientId: auth.clientId,
          scopes: auth.scopes,
          pollIntervalSeconds: opts.pollInterval ? Number(opts.pollInterval) : undefined,
          onPrompt: (p) => {
            process.stdout.write(
              `To sign in, open ${p.verificationUri} and enter the code ${p.userCode}\n` +
                (p.verificationUriComplete ? `or open ${p.verificationUriComplete}\n` : '') +
                `Waiting for you to approve (the code expires in ${Math.round(p.expiresIn / 60)} min)…\n`,
            );
          },
        });
        await store.save({ broker, issuer: auth.issuer, clientId: auth.clientId, kind: 'device', tokens, subject: subjectOf(tokens.accessToken) });
      }
      remember();
      const { identity } = await brokerGet<{ identity: Identity }>(broker, '/api/v1/whoami');
      process.stdout.write(`Logged in to ${broker} as ${identity.name} (groups: ${identity.groups.join(', ') || 'none'}); token stored in the ${store.describe()}\n`);
    });

  program
    .command('logout')
    .description('Forget the stored tokens for a broker')
    .option('--broker <url>', 'broker URL')
    .action(async (opts: { broker?: string }) => {
      const broker = resolveBroker(opts.broker);
      await tokenStore().remove(broker);
      process.stdout.write(`Logged out of ${broker}\n`);
    });

  program
    .command('whoami')
    .description('Show the identity the broker sees for your token, and where the token came from')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--broker <url>', 'broker URL')
    .action(async (opts: { output: string; broker?: string }) => {
      const format = parseOutput(opts.output);
      const broker = resolveBroker(opts.broker);
      const resolved = await resolveToken(broker);
      const { identity, auditor } = await brokerGet<{ identity: Identity; auditor: boolean }>(broker, '/api/v1/whoami', resolved.token);
      const source = { kind: resolved.source, ...(resolved.clientId ? { clientId: resolved.clientId } : {}), text: describeTokenSource(resolved) };
      if (format === 'json') return printJson({ broker, ...identity, auditor, source });
      process.stdout.write(
        `broker   ${broker}\nsubject  ${identity.subject}\nname     ${identity.name}\nkind     ${identity.kind}${identity.clientId ? ` (client ${identity.clientId})` : ''}\n` +
          `groups   ${identity.groups.join(', ') || 'none'}\nissuer   ${identity.issuer}\nexpires  ${new Date(identity.expiresAt).toISOString()}\nsource   ${source.text}\n`,
      );
    });
}

function subjectOf(token: string): string | undefined {
  try {
    return decodeJwt(token).sub;
  } catch {
    return undefined;
  }
}

/**
 * The identity of the interactive login stored for `broker`, when it still works (valid, or refreshed now) and the
 * broker accepts it; undefined otherwise. The environment's identities are left out: this is about the stored one.
 */
async function validStoredLogin(broker: string): Promise<Identity | undefined> {
  const store = tokenStore();
  const stored = await store.load(broker);
  if (!stored || stored.kind !== 'device') return undefined;
  try {
    const { token } = await resolveAccessToken({ broker, store, env: {} });
    return (await brokerGet<{ identity: Identity }>(broker, '/api/v1/whoami', token)).identity;
  } catch {
    return undefined;
  }
}
