import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseBrokerConfig } from '../../../../../src/broker/config.js';
import { loadBrokerHostKey, pinHostKey, fingerprintOf } from '../../../../../src/broker/protocols/ssh/host-keys.js';

const base = { auth: { issuers: [{ issuer: 'https://issuer.test', audience: 'hoopctl' }] } };
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHYG4236sYNGe/Y3SmMQtQoSmk3/EoxMYvTuwd6tZzEG';
const ssh = (extra: Record<string, unknown> = {}) => ({
  name: 'web-1', type: 'ssh', target: { host: 'web-1.internal', user: 'deploy', hostKey: KEY },
  credentials: { privateKey: { env: 'WEB_KEY' } }, access: { groups: ['ops'] }, ...extra,
});

describe('ssh connections in the broker config', () => {
  it('parses with defaults and resolves the key as a secret', () => {
    const cfg = parseBrokerConfig({ ...base, connections: [ssh()] }, { env: { WEB_KEY: 'PRIVATE' } });
    const c = cfg.connections[0]!;
    expect(c.type).toBe('ssh');
    if (c.type !== 'ssh') return;
    expect(c.target.port).toBe(22);
    expect(c.allow).toEqual({ sftp: true, portForwarding: false, remoteForwarding: false, env: ['LANG', 'LC_*', 'TZ'] });
    expect(c.defaultAction).toBe('allow');
    expect(c.dynamic).toBe('deny');
    expect(c.credentials.privateKey?.reveal()).toBe('PRIVATE');
    expect(JSON.stringify(c)).not.toContain('PRIVATE');
  });

  it.each([
    [{ target: { host: 'h', user: 'u', hostKey: 'not a key' } }, 'connections[0].target.hostKey'],
    [{ credentials: {} }, 'connections[0].credentials'],
    [{ rules: [{ name: 'x', match: { command: 'ls' }, action: 'review' }] }, 'connections[0].rules[0].action: a review rule needs'],
    [{ rules: [{ name: 'x', match: { statement: 'DropStmt' }, action: 'deny' }] }, 'connections[0].rules[0].match'],
    [{ dynamic: 'review', rules: [{ name: 'x', action: 'allow' }] }, 'connections[0].dynamic'],
  ])('refuses %j naming the field', (extra, field) => {
    expect(() => parseBrokerConfig({ ...base, connections: [ssh(extra)] }, { env: { WEB_KEY: 'k' } })).toThrow(field);
  });

  it('accepts a SHA256 fingerprint as the pin', () => {
    const fp = fingerprintOf(Buffer.from(KEY.split(' ')[1]!, 'base64'));
    expect(() => parseBrokerConfig({ ...base, connections: [ssh({ target: { host: 'h', user: 'u', hostKey: fp } })] }, { env: { WEB_KEY: 'k' } })).not.toThrow();
    const blob = Buffer.from(KEY.split(' ')[1]!, 'base64');
    expect(pinHostKey(fp).matches(blob)).toBe(true);
    expect(pinHostKey(KEY).matches(blob)).toBe(true);
    expect(pinHostKey(KEY).matches(Buffer.from('other'))).toBe(false);
  });
});

describe('the broker host key', () => {
  it('is generated once (0600) and then reused', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hoop-hk-'));
    const path = join(dir, 'hoopctl-ssh-host-key');
    const first = loadBrokerHostKey(undefined, path);
    expect(first.created).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const again = loadBrokerHostKey(undefined, path);
    expect(again.created).toBe(false);
    expect(again.fingerprint).toBe(first.fingerprint);
    expect(first.fingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    expect(loadBrokerHostKey(readFileSync(path, 'utf8'), join(dir, 'unused')).fingerprint).toBe(first.fingerprint);
  });
});
