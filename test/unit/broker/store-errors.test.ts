import { describe, expect, it } from 'vitest';
import { storeUnavailable } from '../../../src/broker/store/store-errors.js';

const sqliteError = (code: string, message: string) => Object.assign(new Error(message), { code });

describe('storeUnavailable', () => {
  it('turns a store that takes no writes into a 503 naming the store\'s own reason', () => {
    for (const [code, message] of [['SQLITE_FULL', 'database or disk is full'], ['SQLITE_READONLY', 'attempt to write a readonly database'], ['SQLITE_IOERR_WRITE', 'disk I/O error'], ['53100', 'could not extend file']]) {
      const refusal = storeUnavailable(sqliteError(code, message));
      expect(refusal?.status).toBe(503);
      expect(refusal?.code).toBe('STORE_UNAVAILABLE');
      expect(refusal?.message).toBe(`the broker cannot record sessions now, so it opens none and forwards nothing: its store refused a write (${message})`);
    }
  });

  it('leaves every other error alone (a bug stays a bug, a refusal stays a refusal)', () => {
    expect(storeUnavailable(new Error('boom'))).toBeUndefined();
    expect(storeUnavailable(sqliteError('SQLITE_CONSTRAINT_PRIMARYKEY', 'UNIQUE constraint failed'))).toBeUndefined();
    expect(storeUnavailable(sqliteError('ECONNRESET', 'socket hang up'))).toBeUndefined();
    expect(storeUnavailable(undefined)).toBeUndefined();
  });
});
