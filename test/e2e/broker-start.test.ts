import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, statSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import Database from 'better-sqlite3';
import { startDevIssuer, type DevIssuer } from '../../src/dev/oidc-issuer.js';
import { clientCredentialsLogin } from '../../src/auth/oidc.js';
import { freePort } from '../../src/lib/net.js';
import { CliProcess, runCli } from '../support/stack.js';

let dir: string;
let issuer: DevIssuer;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hoop-start-'));
  issuer = await startDevIssuer({ audience: 'urn:hoopctl:start-test', serviceClients: [{ clientId: 'svc', clientSecret: 'svc-secret', groups: ['ops'] }] });
});

afterAll(async () => {
  await issuer?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function writeConfig(name: string, config: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof config === 'string' ? config : stringify(config));
  return path;
}

const env = () => ({ PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: join(dir, 'cfg'), HOOPCTL_TOKEN_STORE: 'file' });

describe('hoopctl broker start', () => {
  it('exits non-zero on a bad config and names the field', async () => {
    const path = writeConfig('bad.yaml', {
      auth: { issuers: [{ issuer: issuer.issuer, audience: 'x' }] },
      connections: [{ name: 'pg', type: 'postgres', target: { host: 'db', port: 'five', database: 'app' }, credentials: { user: 'u' }, access: {} }],
    });
    const r = await runCli(['broker', 'start', '--config', path], env());
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('connections[0].target.port');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('summarises a good config: connections, exports, notifications, metrics, the audit key and admins (no secret)', async () => {
    const path = writeConfig('good.yaml', {
      auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:x' }] },
      admin: { groups: ['sre-leads'] },
      metrics: { listen: '127.0.0.1:9464' },
      export: [{ name: 'archive', type: 'file', path: 'events.jsonl' }],
      notify: [{ name: 'chat', type: 'slack', url: { value: 'https://hooks.example.com/services/T0/B0/very-secret' } }],
      connections: [{ name: 'api', type: 'http', target: { url: 'http://127.0.0.1:9' }, access: { groups: ['dev'] } }],
    });
    const r = await runCli(['broker', 'check', '--config', path], env());
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(
      'config ok: 1 connection(s) (api: http); 1 issuer(s); export to archive (file); review notifications to chat; metrics on 127.0.0.1:9464; no PostgreSQL front door; audit signing key kept next to the store; admins: sre-leads\n',
    );
  });

  it('says which YAML is broken', async () => {
    const r = await runCli(['broker', 'check', '--config', writeConfig('broken.yaml', 'auth: [unclosed')], env());
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/broken\.yaml is not valid YAML/);
  });

  it('says the port is taken instead of crashing', async () => {
    const { createServer } = await import('node:net');
    const holder = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => holder.once('listening', r));
    const port = (holder.address() as { port: number }).port;
    try {
      const path = writeConfig('busy.yaml', { server: { listen: `127.0.0.1:${port}` }, store: { path: join(dir, 'busy.db') }, auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:x' }] } });
      const r = await runCli(['broker', 'start', '--config', path], env());
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`cannot listen on 127.0.0.1:${port}: EADDRINUSE`);
      expect(r.stderr).not.toContain('hit a bug');
    } finally {
      holder.close();
    }
  });

  it('refuses to serve plain HTTP on a non-loopback address unless forced', async () => {
    const r = await runCli(['broker', 'check', '--config', writeConfig('public.yaml', { server: { listen: '0.0.0.0:8080' }, auth: { issuers: [{ issuer: issuer.issuer, audience: 'x' }] } })], env());
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('plain HTTP on non-loopback address');
  });

  it('check fails on a missing TLS file naming server.tls.cert; start exits 1 with the same message and creates no store and no key', async () => {
    const state = join(dir, 'missing-tls-state');
    mkdirSync(state);
    const missing = join(dir, 'no-such-cert.pem');
    const path = writeConfig('missing-tls.yaml', {
      server: { listen: `127.0.0.1:${await freePort()}`, tls: { cert: missing, key: join(dir, 'no-such-key.pem') } },
      store: { path: join(state, 'broker.db') },
      auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:x' }] },
      connections: [{ name: 'pg', type: 'postgres', target: { host: 'db', database: 'app' }, credentials: { user: 'u', password: { env: 'PG_PASSWORD_NOT_SET' } }, access: {} }],
    });
    const problem = `server.tls.cert: cannot read ${missing}: ENOENT`;
    const check = await runCli(['broker', 'check', '--config', path], env());
    expect(check.code).toBe(1);
    expect(check.stderr).toContain(problem);
    // Every problem at once, each by its field: the key file and the unset secret too.
    expect(check.stderr).toContain('server.tls.key: cannot read');
    expect(check.stderr).toContain('connections[0].credentials.password: environment variable PG_PASSWORD_NOT_SET is not set');
    const start = await runCli(['broker', 'start', '--config', path], { ...env(), PG_PASSWORD_NOT_SET: 'pw' });
    expect(start.code, start.stderr).toBe(1);
    expect(start.stderr).toContain(problem);
    expect(start.stderr).not.toContain('hit a bug');
    expect(readdirSync(state)).toEqual([]);
  });

  it('check names an audit signing key that is not Ed25519 and a store path that is a directory', async () => {
    const state = join(dir, 'bad-key-state');
    mkdirSync(join(state, 'broker.db'), { recursive: true });
    const rsa = execFileSync('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024'], { encoding: 'utf8' });
    const path = writeConfig('bad-key.yaml', {
      store: { path: join(state, 'broker.db') },
      audit: { signingKey: { value: rsa } },
      auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:x' }] },
    });
    const r = await runCli(['broker', 'check', '--config', path], env());
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('audit.signingKey: the audit signing key must be Ed25519, not rsa');
    expect(r.stderr).toContain(`store.path: ${join(state, 'broker.db')} is not a file`);
    expect(r.stderr).not.toContain('PRIVATE KEY');
  });

  it('creates its store readable by its owner only (0600, and the -wal/-shm files beside it)', async () => {
    const state = join(dir, 'mode-state');
    const path = writeConfig('mode.yaml', {
      server: { listen: `127.0.0.1:${await freePort()}` },
      store: { path: join(state, 'broker.db') },
      auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:x' }] },
    });
    const broker = new CliProcess(['broker', 'start', '--config', path], env());
    try {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(broker.stderr)), 15_000);
        broker.child.stderr!.on('data', () => broker.stderr.includes('broker listening on') && (clearTimeout(t), resolve()));
      });
      const files = readdirSync(state).filter((f) => f.startsWith('broker.db'));
      expect(files).toEqual(expect.arrayContaining(['broker.db', 'broker.db-wal', 'broker.db-shm']));
      for (const f of [...files, 'hoopctl-audit-key.pem']) expect({ f, mode: (statSync(join(state, f)).mode & 0o777).toString(8) }).toEqual({ f, mode: '600' });
    } finally {
      await broker.stop();
    }
  });

  it('says a store file it cannot open, or one a newer hoopctl wrote, is the operator\'s to fix (exit 1, not a bug)', async () => {
    const garbage = join(dir, 'garbage-store');
    mkdirSync(garbage, { recursive: true });
    writeFileSync(join(garbage, 'broker.db'), 'this is not a SQLite database, it is a text file someone put here\n'.repeat(100));
    const bad = await runCli(['broker', 'start', '--config', writeConfig('garbage-store.yaml', { server: { listen: '127.0.0.1:0' }, auth: { issuers: [{ issuer: issuer.issuer, audience: 'x' }] }, store: { path: join(garbage, 'broker.db') } })], env());
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`cannot open the store ${join(garbage, 'broker.db')}`);
    expect(bad.stderr).not.toContain('hit a bug');

    const newer = join(dir, 'newer-store');
    mkdirSync(newer, { recursive: true });
    const db = new Database(join(newer, 'broker.db'));
    db.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL); INSERT INTO schema_migrations VALUES (999, 0)');
    db.close();
    const future = await runCli(['broker', 'start', '--config', writeConfig('newer-store.yaml', { server: { listen: '127.0.0.1:0' }, auth: { issuers: [{ issuer: issuer.issuer, audience: 'x' }] }, store: { path: join(newer, 'broker.db') } })], env());
    expect(future.code).toBe(1);
    expect(future.stderr).toMatch(/has schema version 999, newer than this broker understands/);
    expect(future.stderr).not.toContain('hit a bug');
  });

  it('names a PG_BIN_DIR without initdb instead of crashing or using another PostgreSQL (hoopctl demo)', async () => {
    const r = await runCli(['demo'], { ...env(), PG_BIN_DIR: join(dir, 'no-postgres-here') });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`PG_BIN_DIR=${join(dir, 'no-postgres-here')} holds no initdb`);
    expect(r.stderr).not.toContain('hit a bug');
  });

  it('serves its API over TLS when a certificate and key are configured', async () => {
    const cert = join(dir, 'tls.crt');
    const key = join(dir, 'tls.key');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    const port = await freePort();
    const path = writeConfig('tls.yaml', {
      server: { listen: `127.0.0.1:${port}`, tls: { cert, key } },
      store: { path: join(dir, 'tls.db') },
      auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:hoopctl:start-test' }] },
    });
    const broker = new CliProcess(['broker', 'start', '--config', path], env());
    try {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(broker.stderr)), 15_000);
        broker.child.stderr!.on('data', () => broker.stderr.includes('broker listening on') && (clearTimeout(t), resolve()));
      });
      const { accessToken } = await clientCredentialsLogin({ issuer: issuer.issuer, clientId: 'svc', clientSecret: 'svc-secret' });
      const ok = await runCli(['whoami', '-o', 'json', '--broker', `https://127.0.0.1:${port}`], { ...env(), HOOPCTL_TOKEN: accessToken, NODE_EXTRA_CA_CERTS: cert });
      expect(ok.code, ok.stderr).toBe(0);
      expect(JSON.parse(ok.stdout)).toMatchObject({ subject: 'svc', kind: 'service', groups: ['ops'] });
      const untrusted = await runCli(['whoami', '--broker', `https://127.0.0.1:${port}`], { ...env(), HOOPCTL_TOKEN: accessToken });
      expect(untrusted.code).not.toBe(0);
      expect(untrusted.stderr).toMatch(/certificate/i);
    } finally {
      await broker.stop();
    }
  });
});
