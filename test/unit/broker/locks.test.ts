import { describe, expect, it } from 'vitest';
import { lockMatches, lockedError } from '../../../src/broker/locks.js';
import type { IdentityLock } from '../../../src/broker/store/store.js';
import type { Identity } from '../../../src/api/identity.js';

const base = { issuer: 'https://issuer.test', name: 'x', groups: [], expiresAt: 0 };
const bot: Identity = { ...base, subject: 'svc-1', kind: 'service', clientId: 'nightly-etl' };
const person: Identity = { ...base, subject: 'ada', kind: 'human', clientId: 'nightly-etl' };
const lock = (target: IdentityLock['target'], extra: Partial<IdentityLock> = {}): IdentityLock => ({ id: 'lock_1', target, reason: 'r', createdBy: 'bob', createdAt: 0, ...extra });

describe('identity locks', () => {
  it('match a subject, or a service account by its client id (a person signed in through that client is not a service account)', () => {
    expect(lockMatches(lock({ subject: 'ada' }), person)).toBe(true);
    expect(lockMatches(lock({ subject: 'ada' }), bot)).toBe(false);
    expect(lockMatches(lock({ clientId: 'nightly-etl' }), bot)).toBe(true);
    expect(lockMatches(lock({ clientId: 'nightly-etl' }), person)).toBe(false);
  });

  it('explain themselves: who locked, until when, why, and how to lift', () => {
    const e = lockedError(lock({ clientId: 'nightly-etl' }, { expiresAt: Date.UTC(2026, 10, 25, 18), reason: 'runaway job' }));
    expect(e.message).toBe('client nightly-etl is locked by bob until 2026-11-25T18:00:00.000Z: runaway job');
    expect(e.code).toBe('IDENTITY_LOCKED');
    expect(e.hint).toBe('an admin lifts it with `hoopctl unlock lock_1`');
  });
});
