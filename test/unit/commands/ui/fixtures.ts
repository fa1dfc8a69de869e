import { stripVTControlCharacters } from 'node:util';
import type { Identity } from '../../../../src/api/identity.js';
import type { Review } from '../../../../src/api/review.js';

export const NOW = Date.UTC(2026, 10, 25, 14, 0, 0);
export const MIN = 60_000;

export function identity(name: string, overrides: Partial<Identity> = {}): Identity {
  return {
    issuer: 'https://idp.example.com',
    subject: `sub-${name}`,
    kind: 'human',
    name: `${name}@example.com`,
    groups: [],
    expiresAt: NOW + 60 * MIN,
    ...overrides,
  };
}

export const alice = identity('alice', { groups: ['dev'], clientId: 'hoopctl-cli' });
export const bob = identity('bob', { groups: ['dba', 'oncall'] });
export const etl = identity('etl-nightly', { kind: 'service', name: 'etl-nightly', clientId: 'ci-etl', groups: ['jobs'] });

export function statementReview(id: string, overrides: Partial<Review> = {}): Review {
  return {
    id,
    kind: 'statement',
    connection: 'pg-prod',
    requester: alice,
    sessionId: `s-${id}`,
    statement: 'DELETE FROM orders\n  WHERE id = 42',
    rule: 'deletes-need-review',
    status: 'pending',
    approverGroups: ['dba'],
    minApprovals: 1,
    decisions: [],
    createdAt: NOW - 2 * MIN - 5_000,
    expiresAt: NOW + 13 * MIN,
    ...overrides,
  };
}

export function accessReview(id: string, overrides: Partial<Review> = {}): Review {
  return {
    id,
    kind: 'access',
    connection: 'pg-prod',
    requester: etl,
    reason: 'INC-123 backfill',
    durationMs: 30 * MIN,
    status: 'pending',
    approverGroups: ['dba', 'oncall'],
    minApprovals: 2,
    decisions: [],
    createdAt: NOW - 40_000,
    expiresAt: NOW + 15 * MIN,
    ...overrides,
  };
}

/** What the user sees: the last frame without colour codes, trailing spaces trimmed per line. */
export function screen(frame: string | undefined): string {
  return stripVTControlCharacters(frame ?? '')
    .split('\n')
    .map((l) => l.trimEnd())
    .join('\n');
}

/** Ink reads stdin asynchronously; give it a moment after each key. */
export async function press(stdin: { write(data: string): void }, ...keys: string[]): Promise<void> {
  for (const key of keys) {
    stdin.write(key);
    await tick();
  }
}

export const tick = (ms = 20) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export const KEY = { down: '\u001B[B', up: '\u001B[A', enter: '\r', esc: '\u001B', tab: '\t', backspace: '\u007F' } as const;

/**
 * Retries an assertion until it passes: Ink renders on its own schedule, and callbacks settle a moment later. The
 * timeout is generous (a busy machine renders late) and is not what is asserted.
 */
export async function eventually(assertion: () => void, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return assertion();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await tick(10);
    }
  }
}

/** A promise the test settles by hand, to look at the screen while a callback is still running. */
export function deferred(): { promise: Promise<void>; resolve(): void; reject(error: Error): void } {
  let resolve!: () => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
