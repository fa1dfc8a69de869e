import { describe, expect, it } from 'vitest';
import type { PostgresConnection } from '../../../../../src/broker/config.js';
import { routeStartupDatabase } from '../../../../../src/broker/protocols/postgres/database-routing.js';

function connection(target: { database: string; databases?: string[] }): PostgresConnection {
  return {
    name: 'pg-prod', type: 'postgres', access: { groups: [], clientIds: [], subjects: [] }, credentials: { user: 'app_rw' },
    target: { host: 'db', port: 5432, sslmode: 'disable', connectTimeout: 1000, ...target },
  } as PostgresConnection;
}

describe('which database a client startup reaches', () => {
  const single = connection({ database: 'app' });
  const several = connection({ database: 'app', databases: ['app', 'scratch'] });

  it('sends a startup without a database, or with libpq\'s user-name default, to the default database', () => {
    expect(routeStartupDatabase(single, { user: 'alice' })).toEqual({ served: true, database: 'app' });
    expect(routeStartupDatabase(single, { user: 'alice', database: '' })).toEqual({ served: true, database: 'app' });
    expect(routeStartupDatabase(single, { user: 'alice', database: 'alice' })).toEqual({ served: true, database: 'app' });
    expect(routeStartupDatabase(several, { user: 'hoopctl', database: 'hoopctl' })).toEqual({ served: true, database: 'app' });
  });

  it('refuses another database on a connection that serves one, naming the one it serves', () => {
    expect(routeStartupDatabase(single, { user: 'someuser', database: 'otherdb' })).toEqual({
      served: false,
      message: 'connection "pg-prod" serves database "app", not "otherdb"; ask for it (or leave dbname out)',
    });
    // A listed database is not served just because it exists on the server: names compare exactly.
    expect(routeStartupDatabase(single, { user: 'x', database: 'App' }).served).toBe(false);
  });

  it('routes a startup to a listed database and refuses an unlisted one', () => {
    expect(routeStartupDatabase(several, { user: 'x', database: 'scratch' })).toEqual({ served: true, database: 'scratch' });
    expect(routeStartupDatabase(several, { user: 'scratch', database: 'scratch' })).toEqual({ served: true, database: 'scratch' });
    expect(routeStartupDatabase(several, { user: 'x', database: 'postgres' })).toEqual({
      served: false,
      message: 'connection "pg-prod" serves databases "app", "scratch", not "postgres"; ask for one of them (or leave dbname out for "app")',
    });
  });
});
