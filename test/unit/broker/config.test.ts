import { describe, expect, it } from 'vitest';
import { inspect } from 'node:util';
import { parseBrokerConfig } from '../../../src/broker/config.js';

const base = {
  auth: { issuers: [{ issuer: 'https://login.example.com', audience: 'hoopctl', clientId: 'cli' }] },
  connections: [
    {
      name: 'pg-prod',
      type: 'postgres',
      target: { host: 'db', port: 5432, database: 'app' },
      credentials: { user: 'app', password: { env: 'PG_PW' } },
      access: { groups: ['dba'] },
    },
  ],
};

function errorOf(input: unknown, env: NodeJS.ProcessEnv = { PG_PW: 'x' }): string {
  try {
    parseBrokerConfig(input, { env });
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('config was accepted');
}

describe('broker config', () => {
  it('accepts a valid config and fills defaults', () => {
    const cfg = parseBrokerConfig(base, { env: { PG_PW: 'pw' } });
    expect(cfg.server.listen).toBe('127.0.0.1:8080');
    expect(cfg.connections[0]!.target.sslmode).toBe('prefer');
    expect(cfg.auth.issuers[0]!.maxTokenLifetime).toBe(3_600_000);
    expect(cfg.connections[0]!.credentials.password!.reveal()).toBe('pw');
  });

  it('names the field of a wrong type', () => {
    const bad = structuredClone(base) as any;
    bad.connections[0].target.port = 'five';
    expect(errorOf(bad)).toMatch(/connections\[0\]\.target\.port: .*number/);
  });

  it('names an unknown field instead of ignoring it', () => {
    const bad = structuredClone(base) as any;
    bad.connections[0].acess = {};
    expect(errorOf(bad)).toMatch(/connections\[0\].*acess/);
  });

  it('names a missing environment variable for a secret', () => {
    expect(errorOf(base, {})).toContain('connections[0].credentials.password: environment variable PG_PW is not set');
  });

  it('refuses plain HTTP on a non-loopback address unless forced', () => {
    expect(errorOf({ ...base, server: { listen: '0.0.0.0:8080' } })).toContain('server.listen: plain HTTP on non-loopback address 0.0.0.0');
    expect(parseBrokerConfig({ ...base, server: { listen: '0.0.0.0:8080', allowInsecureHttp: true } }, { env: { PG_PW: 'x' } }).server.listen).toBe('0.0.0.0:8080');
  });

  it('takes the databases a postgres connection serves, the default among them', () => {
    const several = structuredClone(base) as any;
    several.connections[0].target.databases = ['app', 'scratch'];
    expect((parseBrokerConfig(several, { env: { PG_PW: 'x' } }).connections[0] as any).target.databases).toEqual(['app', 'scratch']);
    several.connections[0].target.databases = ['scratch'];
    expect(errorOf(several)).toContain('connections[0].target.databases: list the default `database` among `databases`');
  });

  it('refuses duplicate connection names', () => {
    expect(errorOf({ ...base, connections: [base.connections[0], base.connections[0]] })).toContain('connections[1].name: duplicate connection name "pg-prod"');
  });

  it('never shows a resolved secret in JSON or inspect output', () => {
    const cfg = parseBrokerConfig(base, { env: { PG_PW: 'hunter2-secret' } });
    expect(JSON.stringify(cfg)).not.toContain('hunter2-secret');
    expect(inspect(cfg, { depth: 10 })).not.toContain('hunter2-secret');
  });
});

describe('broker config: connection rules', () => {
  it('accepts rules and names a bad one by its path', () => {
    const ok = structuredClone(base) as any;
    ok.connections[0].rules = [{ name: 'no-drop', match: { statement: ['DropStmt'] }, action: 'deny' }];
    expect(parseBrokerConfig(ok, { env: { PG_PW: 'x' } }).connections[0]!.rules[0]!.name).toBe('no-drop');
    const bad = structuredClone(base) as any;
    bad.connections[0].rules = [{ name: 'no-drop', match: { statement: ['DropStmt'] }, action: 'explode' }];
    expect(errorOf(bad)).toMatch(/connections\[0\]\.rules\[0\]/);
  });
});

describe('metrics config', () => {
  const minimal = { auth: base.auth };
  it('keeps the token-less metrics listener on loopback unless told otherwise', () => {
    expect(parseBrokerConfig({ ...minimal, metrics: { listen: '127.0.0.1:9464' } }, { baseDir: '/' }).metrics).toEqual({ listen: '127.0.0.1:9464', allowRemote: false });
    expect(() => parseBrokerConfig({ ...minimal, metrics: { listen: '0.0.0.0:9464' } }, { baseDir: '/' })).toThrow(/metrics\.listen: metrics are served without a token/);
    expect(parseBrokerConfig({ ...minimal, metrics: { listen: '0.0.0.0:9464', allowRemote: true } }, { baseDir: '/' }).metrics?.allowRemote).toBe(true);
    expect(() => parseBrokerConfig({ ...minimal, metrics: { listen: '9464' } }, { baseDir: '/' })).toThrow(/metrics\.listen: host:port/);
  });
});
