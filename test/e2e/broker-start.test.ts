import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
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
      'config ok: 1 connection(s) (api: http); 1 issuer(s); export to archive (file); review notifications to chat; metrics on 127.0.0.1:9464; audit signing key kept next to the store; admins: sre-leads\n',
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
