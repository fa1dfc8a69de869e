/**
 * Credentials fetched for a session before it opens: every helper-provided secret of its connection
 * (`{ command: [...] }`) is refreshed — run, or taken from its cache — so the protocol module finds a value when it
 * connects. A helper that fails refuses the session with a reason clients may see; its stderr goes to the broker
 * log only (trimmed, the secret cut out).
 */
import type { Logger } from 'pino';
import { CredentialHelperError } from '../lib/credential-helper.js';
import { HoopError } from '../lib/errors.js';
import { FetchedSecret } from '../lib/secret.js';
import type { Connection } from './config.js';

/** The helper secrets of each connection object, found once (a reload makes new objects). */
const helpersOf = new WeakMap<Connection, Array<{ field: string; secret: FetchedSecret }>>();

/** Every FetchedSecret in a connection entry, with where it sits (`credentials.password`). */
function findHelperSecrets(connection: Connection): Array<{ field: string; secret: FetchedSecret }> {
  let found = helpersOf.get(connection);
  if (found) return found;
  found = [];
  const walk = (value: unknown, path: string) => {
    if (value instanceof FetchedSecret) found!.push({ field: path, secret: value });
    else if (Array.isArray(value)) value.forEach((v, i) => walk(v, `${path}[${i}]`));
    else if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
      for (const [k, v] of Object.entries(value)) walk(v, path ? `${path}.${k}` : k);
    }
  };
  walk(connection, '');
  helpersOf.set(connection, found);
  return found;
}

/**
 * Refreshes the connection's helper secrets. Throws a HoopError (CREDENTIAL_UNAVAILABLE, 502) naming the connection
 * and what went wrong with the helper, never its output.
 */
export async function fetchSessionCredentials(connection: Connection, logger: Logger): Promise<void> {
  for (const { field, secret } of findHelperSecrets(connection)) {
    try {
      await secret.refresh();
    } catch (e) {
      const reason = e instanceof CredentialHelperError ? e.message : 'the credential helper failed';
      logger.warn({ connection: connection.name, field, reason, ...(e instanceof CredentialHelperError && e.detail ? { stderr: e.detail } : {}) }, 'credential helper failed');
      throw new HoopError(`the broker could not get the credential of "${connection.name}" (${field}): ${reason}`, {
        code: 'CREDENTIAL_UNAVAILABLE',
        status: 502,
        hint: 'the broker log has the helper\'s error output; ask the broker\'s operators',
      });
    }
  }
}
