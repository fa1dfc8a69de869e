import type { StoreConfig } from '../config.js';
import { PostgresStore } from './postgres-store.js';
import { SqliteStore } from './sqlite-store.js';
import type { Store } from './store.js';

/**
 * Opens the store the config names: the SQLite file at `sqlitePath` (resolved by `openBrokerResources`), or the
 * PostgreSQL store (connected, credentials checked, migrated). `broker check` and `broker start` both come here, so
 * check fails on an unreachable store, a refused login or a schema too new exactly as start would.
 */
export async function openStore(store: StoreConfig, sqlitePath: string): Promise<Store> {
  if (store.type === 'postgres') return PostgresStore.open(store.url.reveal(), { poolSize: store.poolSize });
  return new SqliteStore(sqlitePath);
}

/** `broker check`: reaches a PostgreSQL store and reads its schema version without changing it; SQLite is checked as files. */
export async function probeStore(store: StoreConfig): Promise<string | undefined> {
  return store.type === 'postgres' ? PostgresStore.probe(store.url.reveal()) : undefined;
}
