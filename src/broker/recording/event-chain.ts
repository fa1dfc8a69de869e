import { hash } from 'node:crypto';
import type { StoredEvent } from '../store/store.js';

/** The hash every stream's first event points back to. */
export const GENESIS_HASH = '0'.repeat(64);

/**
 * An event's hash covers its stream, position, time, type, data and the previous event's hash, so
 * changing, reordering or dropping any event breaks every hash after it.
 */
export function hashEvent(e: Omit<StoredEvent, 'hash'>): string {
  return hashEventWithData(e, JSON.stringify(e.data));
}

/**
 * The same hash when the caller already holds the data as JSON (the recorder hands that JSON to the store too):
 * the text hashed is byte for byte `JSON.stringify([stream, seq, at, type, data, prevHash])`.
 */
export function hashEventWithData(e: Omit<StoredEvent, 'hash' | 'data'>, dataJson: string): string {
  const text = `[${JSON.stringify(e.stream)},${JSON.stringify(e.seq)},${JSON.stringify(e.at)},${JSON.stringify(e.type)},${dataJson},${JSON.stringify(e.prevHash)}]`;
  return hash('sha256', text, 'hex');
}

export interface ChainCheck {
  ok: boolean;
  /** Sequence number of the first event whose hash or back-link is wrong. */
  brokenAt?: number;
  reason?: string;
}

export function verifyChain(events: StoredEvent[]): ChainCheck {
  let prev = GENESIS_HASH;
  let expectedSeq = 1;
  for (const e of events) {
    if (e.seq !== expectedSeq) return { ok: false, brokenAt: e.seq, reason: `event ${expectedSeq} is missing` };
    if (e.prevHash !== prev) return { ok: false, brokenAt: e.seq, reason: 'back-link does not match the previous event' };
    if (hashEvent(e) !== e.hash) return { ok: false, brokenAt: e.seq, reason: 'event content does not match its hash' };
    prev = e.hash;
    expectedSeq++;
  }
  return { ok: true };
}
