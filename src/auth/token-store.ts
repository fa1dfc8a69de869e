import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, fchmodSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { Entry } from '@napi-rs/keyring';
import { UserError } from '../lib/errors.js';
import type { TokenSet } from './oidc.js';

/**
 * Where hoopctl keeps its tokens, per broker URL: the OS keychain, or — where none is reachable (headless CI,
 * containers without D-Bus) — a 0600 file in the XDG config dir. Client secrets are never stored.
 */

export interface StoredCredentials {
  broker: string;
  issuer: string;
  clientId: string;
  kind: 'device' | 'client-credentials';
  tokens: TokenSet;
  subject?: string;
}

export type TokenStoreBackend = 'auto' | 'keyring' | 'file';

export interface TokenStore {
  load(broker: string): Promise<StoredCredentials | undefined>;
  save(creds: StoredCredentials): Promise<void>;
  /** Resolves true when something was removed. */
  remove(broker: string): Promise<boolean>;
  /** Human-readable location: "OS keychain" or "file /home/me/.config/hoopctl/credentials.json". */
  describe(): string;
  /** The backend actually in use (never 'auto'). */
  backend(): 'keyring' | 'file';
}

export interface TokenStoreOptions {
  configDir?: string;
  /** Overrides HOOPCTL_TOKEN_STORE; default 'auto'. */
  backend?: TokenStoreBackend;
  env?: NodeJS.ProcessEnv;
}

const SERVICE = 'hoopctl';
const FILE_NAME = 'credentials.json';
// Pinned on Linux: the library's default falls back to the kernel keyring, which forgets on reboot;
// the 0600 file is the better fallback there. Ignored on macOS and Windows.
const ENTRY_OPTIONS = { linux: { store: 'secret-service' as const } };

export function createTokenStore(options: TokenStoreOptions = {}): TokenStore {
  const env = options.env ?? process.env;
  const requested = options.backend ?? parseBackend(env.HOOPCTL_TOKEN_STORE);
  const file = new FileBackend(join(options.configDir ?? defaultConfigDir(env), FILE_NAME));
  const keyring = new KeyringBackend();

  if (requested === 'file') return facade(() => file, false);
  if (requested === 'keyring') return facade(() => keyring.require(), false);

  let chosen: 'keyring' | 'file' | undefined;
  const pick = (): KeyringBackend | FileBackend => {
    chosen ??= keyring.available() ? 'keyring' : 'file';
    return chosen === 'keyring' ? keyring : file;
  };
  // In auto mode a login saved to the file while the keychain was unreachable is still found later.
  const autoStore = facade(pick, true, file);
  // A keychain can answer the probe yet fail later (a locked keyring and no display to prompt on):
  // auto mode then moves to the file for the rest of this process instead of failing the command.
  const orFile =
    <A extends unknown[], R>(op: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      try {
        return await op(...args);
      } catch (e) {
        if (chosen !== 'keyring' || !(e instanceof UserError) || e.code !== 'TOKEN_STORE_UNAVAILABLE') throw e;
        chosen = 'file';
        return op(...args);
      }
    };
  return { ...autoStore, load: orFile(autoStore.load), save: orFile(autoStore.save), remove: orFile(autoStore.remove) };

  function facade(select: () => KeyringBackend | FileBackend, auto: boolean, fallback?: FileBackend): TokenStore {
    return {
      async load(broker) {
        const key = brokerKey(broker);
        const backend = select();
        const found = backend.load(key);
        if (found || !auto || backend === fallback) return found;
        return fallback?.load(key);
      },
      async save(creds) {
        const key = brokerKey(creds.broker);
        const backend = select();
        // Rebuilt field by field so nothing else a caller attached (a client secret, say) is ever persisted.
        backend.save(key, toStored({ ...creds, broker: key }));
        // Do not leave an older copy behind in the file once the keychain holds the current one.
        if (auto && backend !== fallback) bestEffort(() => fallback?.remove(key));
      },
      async remove(broker) {
        const key = brokerKey(broker);
        const backend = select();
        const removed = backend.remove(key);
        const removedFallback = auto && backend !== fallback ? (bestEffort(() => fallback?.remove(key)) ?? false) : false;
        return removed || removedFallback;
      },
      describe() {
        return select().describe();
      },
      backend() {
        return select() === keyring ? 'keyring' : 'file';
      },
    };
  }
}

export function defaultConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CONFIG_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.config'), 'hoopctl');
}

function parseBackend(value: string | undefined): TokenStoreBackend {
  if (value === undefined || value === '') return 'auto';
  if (value === 'auto' || value === 'keyring' || value === 'file') return value;
  throw new UserError(`HOOPCTL_TOKEN_STORE must be auto, keyring or file, not "${value}"`, { code: 'USAGE' });
}

/** Housekeeping on the fallback file must not fail an operation the keychain already completed. */
function bestEffort<T>(op: () => T): T | undefined {
  try {
    return op();
  } catch {
    return undefined;
  }
}

/**
 * One key per broker however it is spelled: no trailing slash, and `localhost` is 127.0.0.1 (a login made with
 * one must be found with the other).
 */
export function brokerKey(broker: string): string {
  const trimmed = broker.replace(/\/+$/, '');
  try {
    const u = new URL(trimmed);
    if (u.hostname === 'localhost') u.hostname = '127.0.0.1';
    return u.origin;
  } catch {
    return trimmed;
  }
}

class KeyringBackend {
  #available: boolean | undefined;
  #reason: unknown;

  available(): boolean {
    if (this.#available === undefined) {
      try {
        new Entry(SERVICE, '__hoopctl_probe__', ENTRY_OPTIONS).getPassword();
        this.#available = true;
      } catch (e) {
        this.#available = false;
        this.#reason = e;
      }
    }
    return this.#available;
  }

  require(): this {
    if (!this.available()) {
      throw new UserError(`the OS keychain is not reachable: ${(this.#reason as Error)?.message ?? this.#reason}`, {
        code: 'TOKEN_STORE_UNAVAILABLE',
        hint: 'set HOOPCTL_TOKEN_STORE=file to keep tokens in a 0600 file instead',
        cause: this.#reason,
      });
    }
    return this;
  }

  load(broker: string): StoredCredentials | undefined {
    const value = this.#call(() => new Entry(SERVICE, broker, ENTRY_OPTIONS).getPassword());
    if (value === null) return undefined;
    try {
      return parseCredentials(JSON.parse(value));
    } catch {
      return undefined;
    }
  }

  save(broker: string, creds: StoredCredentials): void {
    this.#call(() => new Entry(SERVICE, broker, ENTRY_OPTIONS).setPassword(JSON.stringify(creds)));
  }

  remove(broker: string): boolean {
    return this.#call(() => new Entry(SERVICE, broker, ENTRY_OPTIONS).deleteCredential());
  }

  describe(): string {
    return 'OS keychain';
  }

  #call<T>(op: () => T): T {
    try {
      return op();
    } catch (e) {
      throw new UserError(`the OS keychain failed: ${(e as Error).message}`, {
        code: 'TOKEN_STORE_UNAVAILABLE',
        hint: 'set HOOPCTL_TOKEN_STORE=file to keep tokens in a 0600 file instead',
        cause: e,
      });
    }
  }
}

interface CredentialsFile {
  version: 1;
  credentials: Record<string, StoredCredentials>;
}

class FileBackend {
  constructor(readonly path: string) {}

  load(broker: string): StoredCredentials | undefined {
    const entry = this.#read().credentials[broker];
    return entry ? parseCredentials(entry) : undefined;
  }

  save(broker: string, creds: StoredCredentials): void {
    const data = this.#read();
    data.credentials[broker] = creds;
    this.#write(data);
  }

  remove(broker: string): boolean {
    const data = this.#read();
    if (!(broker in data.credentials)) return false;
    delete data.credentials[broker];
    this.#write(data);
    return true;
  }

  describe(): string {
    return `file ${this.path}`;
  }

  #read(): CredentialsFile {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, credentials: {} };
      throw new UserError(`cannot read ${this.path}: ${(e as NodeJS.ErrnoException).code ?? e}`, { code: 'TOKEN_STORE_UNREADABLE', cause: e });
    }
    try {
      const parsed = JSON.parse(text) as Partial<CredentialsFile>;
      if (parsed && typeof parsed.credentials === 'object' && parsed.credentials !== null) {
        return { version: 1, credentials: parsed.credentials };
      }
    } catch {
      // fall through to the error below
    }
    throw new UserError(`${this.path} is not a hoopctl credentials file`, {
      code: 'TOKEN_STORE_CORRUPT',
      hint: `delete ${this.path} and run \`hoopctl login\` again`,
    });
  }

  /** Temp file created 0600 before any byte is written, fsynced, then renamed over the old file. */
  #write(data: CredentialsFile): void {
    const dir = dirname(this.path);
    const temp = join(dir, `.${FILE_NAME}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      try {
        if (statSync(dir).mode & 0o077) chmodSync(dir, 0o700);
      } catch {
        // a directory we may not chmod (not ours): the file's own 0600 still protects the tokens
      }
      const fd = openSync(temp, 'wx', 0o600);
      try {
        fchmodSync(fd, 0o600);
        writeSync(fd, `${JSON.stringify(data, null, 2)}\n`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(temp, this.path);
    } catch (e) {
      try {
        unlinkSync(temp);
      } catch {
        // already gone
      }
      throw new UserError(`cannot write ${this.path}: ${(e as NodeJS.ErrnoException).code ?? e}`, { code: 'TOKEN_STORE_UNWRITABLE', cause: e });
    }
  }
}

function parseCredentials(value: unknown): StoredCredentials | undefined {
  const c = value as Partial<StoredCredentials> | null;
  if (!c || typeof c !== 'object') return undefined;
  if (typeof c.broker !== 'string' || typeof c.issuer !== 'string' || typeof c.clientId !== 'string') return undefined;
  if (c.kind !== 'device' && c.kind !== 'client-credentials') return undefined;
  if (!c.tokens || typeof c.tokens.accessToken !== 'string' || typeof c.tokens.expiresAt !== 'number') return undefined;
  return {
    broker: c.broker,
    issuer: c.issuer,
    clientId: c.clientId,
    kind: c.kind,
    tokens: c.tokens,
    ...(typeof c.subject === 'string' ? { subject: c.subject } : {}),
  };
}

function toStored(c: StoredCredentials): StoredCredentials {
  const t = c.tokens;
  return {
    broker: c.broker,
    issuer: c.issuer,
    clientId: c.clientId,
    kind: c.kind,
    tokens: {
      accessToken: t.accessToken,
      ...(t.refreshToken !== undefined ? { refreshToken: t.refreshToken } : {}),
      ...(t.idToken !== undefined ? { idToken: t.idToken } : {}),
      expiresAt: t.expiresAt,
      ...(t.scope !== undefined ? { scope: t.scope } : {}),
    },
    ...(c.subject !== undefined ? { subject: c.subject } : {}),
  };
}
