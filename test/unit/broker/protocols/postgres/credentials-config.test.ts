import { describe, expect, it } from 'vitest';
import { parseBrokerConfig } from '../../../../../src/broker/config.js';
import { quoteIdent, quoteLiteral } from '../../../../../src/broker/protocols/postgres/admin-sql.js';
import { grantRolesFor } from '../../../../../src/broker/protocols/postgres/session-roles.js';
import { FetchedSecret, FileSecret } from '../../../../../src/lib/secret.js';

const base = { auth: { issuers: [{ issuer: 'https://issuer.test', audience: 'hoopctl' }] } };
const pg = (credentials: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  ...base,
  connections: [{ name: 'pg', type: 'postgres', target: { host: 'db', database: 'app' }, credentials, access: { groups: ['dba'] }, ...extra }],
});
const problems = (input: unknown) => {
  try {
    parseBrokerConfig(input, { env: { PG: 'x' } });
    return '';
  } catch (e) {
    return (e as Error).message;
  }
};

describe('postgres credentials in the broker config', () => {
  it('a helper source is fetched per session (nothing runs at load); a file source remembers its path', () => {
    const helper = parseBrokerConfig(pg({ user: 'u', password: { command: ['/bin/false'], cacheFor: '5m' } })).connections[0]!;
    expect(helper.type === 'postgres' && helper.credentials.password).toBeInstanceOf(FetchedSecret);
    expect((helper as { credentials: { password: FetchedSecret } }).credentials.password.cacheForMs).toBe(300_000);
    expect((helper as { credentials: { password: FetchedSecret } }).credentials.password.known).toBe(false);
    const file = parseBrokerConfig(pg({ user: 'u', password: { file: '/etc/hostname' } })).connections[0]!;
    expect(file.type === 'postgres' && file.credentials.password).toBeInstanceOf(FileSecret);
  });

  it('a helper needs a command', () => {
    expect(problems(pg({ user: 'u', password: { command: [] } }))).toContain('connections[0].credentials.password');
  });

  it('rotateEvery needs the password from a file, and says why', () => {
    expect(problems(pg({ user: 'u', password: { env: 'PG' }, rotateEvery: '30d' }))).toContain(
      'connections[0].credentials.rotateEvery: rotation writes the new password to the secret file: give credentials.password as { file: … }',
    );
  });

  it('dynamic roles: the first byGroup entry naming one of the identity\'s groups, else grantRoles', () => {
    const dynamic = { grantRoles: ['app_read'], byGroup: [{ groups: ['dba'], grantRoles: ['app_rw'] }, { groups: ['ops'], grantRoles: ['app_ops'] }], sweepEvery: 1 };
    expect(grantRolesFor(dynamic, ['ops', 'dba'])).toEqual(['app_rw']);
    expect(grantRolesFor(dynamic, ['analysts'])).toEqual(['app_read']);
    expect(problems(pg({ user: 'admin', password: { env: 'PG' }, dynamic: { grantRoles: [] } }))).toContain('connections[0].credentials.dynamic.grantRoles');
  });

  it('the backend pool is off unless asked for; its settings get defaults, and a bad one is named', () => {
    const off = parseBrokerConfig(pg({ user: 'u', password: { env: 'PG' } }), { env: { PG: 'x' } }).connections[0]!;
    expect(off.type === 'postgres' && off.pool).toBeUndefined();
    const on = parseBrokerConfig(pg({ user: 'u', password: { env: 'PG' } }, { pool: { idle: 4, idleTimeout: '30s' } }), { env: { PG: 'x' } }).connections[0]!;
    expect(on.type === 'postgres' && on.pool).toEqual({ idle: 4, idleTimeout: 30_000, maxLifetime: 1_800_000 });
    expect(problems(pg({ user: 'u', password: { env: 'PG' } }, { pool: { idle: 0 } }))).toContain('connections[0].pool.idle');
    expect(problems(pg({ user: 'u', password: { env: 'PG' } }, { pool: { idle: 2, size: 9 } }))).toMatch(/connections\[0\]\.pool.*size/);
    expect(problems(pg({ user: 'u', password: { env: 'PG' } }, { pool: { idle: 2, idleTimeout: 'soon' } }))).toContain('connections[0].pool.idleTimeout');
  });

  it('refuses a backend pool with per-session roles or scheduled rotation, and says why', () => {
    expect(problems(pg({ user: 'admin', password: { env: 'PG' }, dynamic: { grantRoles: ['app_read'] } }, { pool: { idle: 2 } }))).toContain(
      'connections[0].pool: a backend pool cannot be used with per-session roles (credentials.dynamic)',
    );
    expect(problems(pg({ user: 'u', password: { file: '/etc/hostname' }, rotateEvery: '30d' }, { pool: { idle: 2 } }))).toContain(
      'connections[0].pool: a backend pool cannot be used with scheduled rotation (credentials.rotateEvery)',
    );
  });

  it('quotes role names and literals the broker sends', () => {
    expect(quoteIdent('we"ird role')).toBe('"we""ird role"');
    expect(quoteLiteral("it's")).toBe("'it''s'");
    expect(() => quoteLiteral('a\\b')).toThrow();
  });
});
