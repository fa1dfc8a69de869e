/**
 * Rotation of a postgres connection's password (`hoopctl broker rotate`, `credentials.rotateEvery`): a new random
 * password is set with ALTER ROLE over a connection made with the current one, and written atomically to the secret
 * file. The ALTER runs in a transaction that commits only once the new file is in place, so the server and the file
 * never disagree for long: a file that cannot be written rolls the ALTER back; a COMMIT that fails puts the old
 * file back. Sessions already open are unaffected (they authenticated before); new ones use the new password.
 */
import { randomBytes } from 'node:crypto';
import { HoopError } from '../../../lib/errors.js';
import { stageFile, writeFileAtomic } from '../../../lib/atomic-file.js';
import { FileSecret } from '../../../lib/secret.js';
import { quoteIdent, quoteLiteral } from './admin-sql.js';
import type { PostgresConnection } from './config.js';
import { scramVerifier } from './scram.js';
import { withAdmin } from './session-roles.js';

export async function rotatePostgresPassword(conn: PostgresConnection): Promise<Record<string, unknown>> {
  const secret = conn.credentials.password;
  if (!(secret instanceof FileSecret)) {
    throw new HoopError(`connection ${conn.name}: rotation writes the new password to its secret file; give credentials.password as { file: … }`, {
      code: 'ROTATION_UNSUPPORTED',
      status: 409,
    });
  }
  const old = secret.reveal();
  const next = randomBytes(24).toString('base64url');
  await withAdmin(conn, async (sql) => {
    await sql.query('BEGIN');
    // Only the SCRAM verifier travels: the password never shows in the server's statement log.
    await sql.query(`ALTER ROLE ${quoteIdent(conn.credentials.user)} PASSWORD ${quoteLiteral(scramVerifier(next))}`);
    const staged = stageFile(secret.path, `${next}\n`);
    try {
      staged.commit();
    } catch (e) {
      staged.abandon();
      await sql.query('ROLLBACK');
      throw e;
    }
    try {
      await sql.query('COMMIT');
    } catch (e) {
      writeFileAtomic(secret.path, `${old}\n`);
      throw e;
    }
  });
  secret.replace(next);
  return { user: conn.credentials.user, file: secret.path };
}
