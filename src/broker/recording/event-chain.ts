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
  return hashEventText(JSON.stringify(e.stream), e.seq, e.at, JSON.stringify(e.type), dataJson, JSON.stringify(e.prevHash));
}

/**
 * The hash from the parts as JSON where a recorder keeps them so (its stream's, its head's, a type's): the same text
 * as hashEventWithData without a JSON.stringify per part, the largest cost of recording an event in profiles.
 */
export function hashEventText(streamJson: string, seq: number, at: number, typeJson: string, dataJson: string, prevHashJson: string): string {
  return hash('sha256', `[${streamJson},${jsonNumber(seq)},${jsonNumber(at)},${typeJson},${dataJson},${prevHashJson}]`, 'hex');
}

/** JSON of a number: its decimal text for an integer (what JSON.stringify writes), JSON.stringify otherwise. */
function jsonNumber(n: number): string {
  return Number.isSafeInteger(n) ? `${n}` : JSON.stringify(n);
}

/** JSON of a hash as the recorder chains it (hex needs no escapes); anything else through JSON.stringify. */
export function hashJson(h: string): string {
  return /^[0-9a-f]*$/.test(h) ? `"${h}"` : JSON.stringify(h);
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
