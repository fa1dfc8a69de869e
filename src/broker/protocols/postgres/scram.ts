import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * SCRAM-SHA-256 client side (RFC 5802, RFC 7677) as PostgreSQL uses it, plus the older md5 and
 * cleartext password answers. No channel binding: the gs2 header is always `n,,`.
 */

export const SCRAM_MECHANISM = 'SCRAM-SHA-256';

export class ScramError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

export interface ScramClientFirst {
  /** The client-first-message to send (gs2 header included). */
  message: string;
  /** client-first-message-bare, kept for the AuthMessage. */
  bare: string;
  clientNonce: string;
}

/**
 * Starts an exchange. PostgreSQL ignores the SCRAM user name (the startup message names the user),
 * so it is empty unless a caller passes one.
 */
export function scramClientFirst(options: { username?: string; clientNonce?: string } = {}): ScramClientFirst {
  const clientNonce = options.clientNonce ?? randomBytes(18).toString('base64');
  const bare = `n=${saslName(options.username ?? '')},r=${clientNonce}`;
  return { message: `n,,${bare}`, bare, clientNonce };
}

export interface ScramClientFinal {
  /** The client-final-message to send. */
  message: string;
  /** ServerSignature the server must prove in its final message. */
  expectedServerSignature: Buffer;
}

/** Answers the server-first-message with the proof of the password. */
export function scramClientFinal(first: ScramClientFirst, serverFirst: string, password: string): ScramClientFinal {
  const attrs = parseAttributes(serverFirst);
  const nonce = attrs.get('r');
  const saltB64 = attrs.get('s');
  const iterText = attrs.get('i');
  if (!nonce || !saltB64 || !iterText) throw new ScramError('SCRAM server-first-message is missing r, s or i');
  if (!nonce.startsWith(first.clientNonce) || nonce.length === first.clientNonce.length) {
    throw new ScramError('SCRAM server nonce does not extend the client nonce');
  }
  const iterations = Number(iterText);
  if (!Number.isInteger(iterations) || iterations < 1) throw new ScramError('SCRAM iteration count is invalid');
  const salt = Buffer.from(saltB64, 'base64');
  if (salt.length === 0) throw new ScramError('SCRAM salt is empty');

  const saltedPassword = saltPassword(saslPrep(password), salt, iterations);
  const clientKey = hmac(saltedPassword, 'Client Key');
  const storedKey = createHash('sha256').update(clientKey).digest();
  const withoutProof = `c=${Buffer.from('n,,').toString('base64')},r=${nonce}`;
  const authMessage = `${first.bare},${serverFirst},${withoutProof}`;
  const clientSignature = hmac(storedKey, authMessage);
  const proof = Buffer.alloc(clientKey.length);
  for (let i = 0; i < proof.length; i++) proof[i] = clientKey[i] ^ clientSignature[i];
  const serverKey = hmac(saltedPassword, 'Server Key');
  return {
    message: `${withoutProof},p=${proof.toString('base64')}`,
    expectedServerSignature: hmac(serverKey, authMessage),
  };
}

/**
 * SaltedPassword of the injected credential, remembered per (password, salt, iterations). PostgreSQL keeps one
 * salt per role, so every session's login to a backend derives the same key: 4096 PBKDF2 rounds (milliseconds of
 * the broker's only thread) per new session, which set the broker's session rate. The key is only as secret as the
 * password the broker already holds in memory; the cache is keyed by a hash of the password too, so a rotated
 * password never logs in with the old key, and bounded, so a backend sending fresh salts cannot grow it.
 */
const SALTED_PASSWORDS_KEPT = 64;
const saltedPasswords = new Map<string, Buffer>();

function saltPassword(password: string, salt: Buffer, iterations: number): Buffer {
  const key = createHash('sha256').update(password, 'utf8').update('\0').update(salt).update(`\0${iterations}`).digest('base64');
  const known = saltedPasswords.get(key);
  if (known) return known;
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  if (saltedPasswords.size >= SALTED_PASSWORDS_KEPT) saltedPasswords.delete(saltedPasswords.keys().next().value!);
  saltedPasswords.set(key, salted);
  return salted;
}

/** Checks the server-final-message; a server that cannot prove it knows the password is refused. */
export function verifyScramServerFinal(serverFinal: string, expected: Buffer): void {
  const attrs = parseAttributes(serverFinal);
  const err = attrs.get('e');
  if (err) throw new ScramError(`SCRAM authentication failed on the server: ${err}`);
  const v = attrs.get('v');
  if (!v) throw new ScramError('SCRAM server-final-message has no signature');
  const got = Buffer.from(v, 'base64');
  if (got.length !== expected.length || !timingSafeEqual(got, expected)) {
    throw new ScramError('SCRAM server signature does not match: the server does not know the password');
  }
}

/** PostgreSQL's md5 answer: "md5" + md5hex(md5hex(password + user) + salt). */
export function md5PasswordResponse(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5').update(password + user, 'utf8').digest('hex');
  return 'md5' + createHash('md5').update(Buffer.concat([Buffer.from(inner, 'utf8'), salt])).digest('hex');
}

function hmac(key: Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

function parseAttributes(message: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of message.split(',')) {
    const eq = part.indexOf('=');
    if (eq === 1) out.set(part[0], part.slice(2));
  }
  return out;
}

function saslName(name: string): string {
  return name.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

/**
 * A reduced SASLprep (RFC 4013): non-ASCII spaces become a space, "mapped to nothing" characters are
 * dropped, then NFKC. ASCII passwords, by far the common case, pass unchanged. Like PostgreSQL, a
 * password that does not survive preparation is used as given.
 */
function saslPrep(password: string): string {
  if (/^[\x20-\x7e]*$/.test(password)) return password;
  const mapped = password
    .replace(/[\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000]/g, ' ')
    .replace(/[\u00ad\u034f\u1806\u180b-\u180d\u200c\u200d\u2060\ufe00-\ufe0f\ufeff]/g, '')
    .normalize('NFKC');
  return mapped.length > 0 ? mapped : password;
}

/**
 * The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (`SCRAM-SHA-256$4096:salt$StoredKey:ServerKey`).
 * Sent instead of the password in CREATE/ALTER ROLE, so the password itself never appears in the server's
 * statement log or in pg_stat_activity. `password` must be plain ASCII (SASLprep leaves it unchanged).
 */
export function scramVerifier(password: string, iterations = 4096): string {
  const salt = randomBytes(16);
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const storedKey = createHash('sha256').update(createHmac('sha256', salted).update('Client Key').digest()).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}
