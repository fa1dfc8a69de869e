import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTokenStore, defaultConfigDir, type StoredCredentials } from '../../../src/auth/token-store.js';

const BROKER = 'https://hoop.example.test';

function credentials(overrides: Partial<StoredCredentials> = {}): StoredCredentials {
  return {
    broker: BROKER,
    issuer: 'https://idp.example.test',
    clientId: 'hoopctl-cli',
    kind: 'device',
    tokens: { accessToken: 'at-1', refreshToken: 'rt-1', expiresAt: 1_900_000_000_000, scope: 'openid offline_access' },
    subject: 'alice',
    ...overrides,
  };
}

describe('token store', () => {
  let dir: string;
  const savedDbus = process.env.DBUS_SESSION_BUS_ADDRESS;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'hoopctl-token-store-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
    if (savedDbus === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS;
    else process.env.DBUS_SESSION_BUS_ADDRESS = savedDbus;
  });

  it('file backend: creates a 0600 file in a 0700 dir, round-trips and removes', async () => {
    const configDir = join(dir, 'config', 'hoopctl');
    const store = createTokenStore({ configDir, backend: 'file', env: {} });
    const file = join(configDir, 'credentials.json');
    expect(store.backend()).toBe('file');
    expect(store.describe()).toBe(`file ${file}`);
    expect(await store.load(BROKER)).toBeUndefined();

    await store.save(credentials());
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(configDir).mode & 0o777).toBe(0o700);
    expect(await store.load(BROKER)).toEqual(credentials());
    // a trailing slash names the same broker
    expect(await store.load(`${BROKER}/`)).toEqual(credentials());

    await store.save(credentials({ broker: 'http://127.0.0.1:8080', kind: 'client-credentials', clientId: 'ci' }));
    await store.save(credentials({ tokens: { accessToken: 'at-2', refreshToken: 'rt-2', expiresAt: 1_900_000_100_000 } }));
    expect((await store.load(BROKER))?.tokens.accessToken).toBe('at-2');
    expect((await store.load('http://127.0.0.1:8080'))?.clientId).toBe('ci');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    // atomic writes leave no temp files behind
    expect(readdirSync(configDir)).toEqual(['credentials.json']);

    expect(await store.remove(BROKER)).toBe(true);
    expect(await store.remove(BROKER)).toBe(false);
    expect(await store.load(BROKER)).toBeUndefined();
    expect(await store.load('http://127.0.0.1:8080')).toBeDefined();
  });

  it('never persists a client secret, even when a caller attaches one', async () => {
    const store = createTokenStore({ configDir: dir, backend: 'file', env: {} });
    await store.save({ ...credentials(), clientSecret: 'do-not-store' } as StoredCredentials);
    expect(readFileSync(join(dir, 'credentials.json'), 'utf8')).not.toContain('do-not-store');
  });

  it('tightens a credentials file that was world-readable when it rewrites it', async () => {
    const file = join(dir, 'credentials.json');
    writeFileSync(file, JSON.stringify({ version: 1, credentials: {} }), { mode: 0o644 });
    const store = createTokenStore({ configDir: dir, backend: 'file', env: {} });
    await store.save(credentials());
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('reports a corrupt credentials file with a way out', async () => {
    writeFileSync(join(dir, 'credentials.json'), 'not json', { mode: 0o600 });
    const store = createTokenStore({ configDir: dir, backend: 'file', env: {} });
    await expect(store.load(BROKER)).rejects.toMatchObject({ code: 'TOKEN_STORE_CORRUPT', hint: expect.stringContaining('hoopctl login') });
  });

  it("'auto' falls back to the file when there is no D-Bus session", async () => {
    process.env.DBUS_SESSION_BUS_ADDRESS = `unix:path=${join(dir, 'no-such-bus')}`;
    const store = createTokenStore({ configDir: dir, env: {} });
    expect(store.backend()).toBe('file');
    expect(store.describe()).toBe(`file ${join(dir, 'credentials.json')}`);
    await store.save(credentials());
    expect(statSync(join(dir, 'credentials.json')).mode & 0o777).toBe(0o600);
    expect(await store.load(BROKER)).toEqual(credentials());
  });

  it("'keyring' without a reachable keychain fails with a hint to use the file", async () => {
    process.env.DBUS_SESSION_BUS_ADDRESS = `unix:path=${join(dir, 'no-such-bus')}`;
    const store = createTokenStore({ configDir: dir, env: { HOOPCTL_TOKEN_STORE: 'keyring' } });
    await expect(store.load(BROKER)).rejects.toMatchObject({ code: 'TOKEN_STORE_UNAVAILABLE', hint: expect.stringContaining('HOOPCTL_TOKEN_STORE=file') });
  });

  it('HOOPCTL_TOKEN_STORE selects the backend and rejects unknown values', () => {
    expect(createTokenStore({ configDir: dir, env: { HOOPCTL_TOKEN_STORE: 'file' } }).backend()).toBe('file');
    expect(() => createTokenStore({ configDir: dir, env: { HOOPCTL_TOKEN_STORE: 'vault' } })).toThrow(/auto, keyring or file/);
  });

  it('defaults the config dir to XDG_CONFIG_HOME/hoopctl, else ~/.config/hoopctl', () => {
    expect(defaultConfigDir({ XDG_CONFIG_HOME: '/x/cfg' })).toBe('/x/cfg/hoopctl');
    expect(defaultConfigDir({})).toMatch(/\/\.config\/hoopctl$/);
  });
});


/**
 * Runs a small script against the token store inside its own D-Bus session with gnome-keyring, in a fresh HOME
 * (gnome-keyring keeps its keyrings there). `unlock` creates and unlocks the login keyring; without it the keyring
 * stays locked and, with no display to prompt on, every write is refused.
 */
function inKeyringSession(dir: string, unlock: boolean): { backend: string; loaded?: string; removed: boolean; after: unknown } {
  const storeModule = pathToFileURL(resolve('src/auth/token-store.ts')).href;
  const script = join(dir, 'probe.mts');
  writeFileSync(
    script,
    `import { createTokenStore } from ${JSON.stringify(storeModule)};
const store = createTokenStore({ configDir: ${JSON.stringify(join(dir, 'config'))}, env: {} });
const broker = 'https://keyring-test.hoopctl.invalid';
await store.save({ broker, issuer: 'https://idp.example.test', clientId: 'hoopctl-cli', kind: 'device', tokens: { accessToken: 'at', expiresAt: 1 } });
const loaded = await store.load(broker);
const backend = store.backend();
const removed = await store.remove(broker);
console.log(JSON.stringify({ backend, loaded: loaded?.tokens.accessToken, removed, after: (await store.load(broker)) ?? null }));
`,
  );
  const daemon = unlock
    ? 'echo -n test | gnome-keyring-daemon --unlock --components=secrets'
    : 'gnome-keyring-daemon --start --components=secrets';
  const out = execFileSync('dbus-run-session', ['--', 'sh', '-c', `${daemon} >/dev/null 2>&1; exec node --import tsx ${JSON.stringify(script)}`], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 30_000,
    env: { ...process.env, HOME: dir, XDG_DATA_HOME: join(dir, 'data'), DISPLAY: '' },
  });
  return JSON.parse(out.trim().split('\n').pop()!);
}

// Needs a Secret Service: scripts/test-prereqs.mjs installs gnome-keyring and dbus before the tests run.
describe('token store with a real Secret Service', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'hoopctl-keyring-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("'auto' uses the OS keychain inside a D-Bus session and writes no file", () => {
    expect(inKeyringSession(dir, true)).toEqual({ backend: 'keyring', loaded: 'at', removed: true, after: null });
    expect(existsSync(join(dir, 'config', 'credentials.json'))).toBe(false);
  });

  it("'auto' moves to the file when the keychain is locked and cannot prompt", () => {
    expect(inKeyringSession(dir, false)).toEqual({ backend: 'file', loaded: 'at', removed: true, after: null });
    expect(statSync(join(dir, 'config', 'credentials.json')).mode & 0o777).toBe(0o600);
  });
});
