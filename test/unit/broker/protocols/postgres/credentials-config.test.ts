import { describe, expect, it } from 'vitest';
import { parseBrokerConfig } from '../../../../../src/broker/config.js';
import { quoteIdent, quoteLiteral } from '../../../../../src/broker/protocols/postgres/admin-sql.js';
import { grantRolesFor } from '../../../../../src/broker/protocols/postgres/session-roles.js';
import { FetchedSecret, FileSecret } from '../../../../../src/lib/secret.js';

const base = { auth: { issuers: [{ issuer: 'https://issuer.test', audience: 'hoopctl' }] } };
const pg = (credentials: Record<string, unknown>) => ({
  ...base,
  connections: [{ name: 'pg', type: 'postgres', target: { host: 'db', database: 'app' }, credentials, access: { groups: ['dba'] } }],
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

  it('quotes role names and literals the broker sends', () => {
    expect(quoteIdent('we"ird role')).toBe('"we""ird role"');
    expect(quoteLiteral("it's")).toBe("'it''s'");
    expect(() => quoteLiteral('a\\b')).toThrow();
  });
});
