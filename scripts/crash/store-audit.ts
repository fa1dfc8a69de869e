/**
 * What the broker's SQLite store says after a crash, read the way an auditor would check it: every stream's hash
 * chain and signed checkpoints, the statements recorded (by the workload's markers), sessions, reviews, grants and
 * locks. Opened read-only, so it can be read while a broker runs on it or after one was killed. Events the broker
 * acknowledged but has not yet copied from its event journal into SQLite are read from the journal (first, so an
 * event the broker copies in between is found in SQLite).
 */
import Database from 'better-sqlite3';
import { readFileSync } from 'node:fs';
import { createPublicKey } from 'node:crypto';
import type { Review } from '../../src/api/review.js';
import type { IdentityLock, StoredEvent } from '../../src/api/session.js';
import { verifyChain } from '../../src/broker/recording/event-chain.js';
import { verifyCheckpoints } from '../../src/broker/recording/checkpoints.js';
import { EventJournal, journalPathFor } from '../../src/broker/store/event-journal.js';
import { MARKER } from './ledger-workload.js';

export interface StoreFacts {
  /** Markers of recorded statement events. */
  statements: Set<string>;
  /** Markers whose statement has a recorded result. */
  results: Set<string>;
  streams: number;
  chainsVerified: number;
  /** `stream: reason` for every stream whose chain or checkpoints do not verify. */
  broken: string[];
  sessions: Map<string, string>;
  reviews: Review[];
  activeLocks: string[];
  activeGrants: string[];
}

/** The broker's public checkpoint key, from the private key it keeps beside the store. */
export function publicKeyBeside(storePath: string): string {
  const pem = readFileSync(storePath.replace(/[^/]+$/, 'hoopctl-audit-key.pem'), 'utf8');
  return createPublicKey(pem).export({ type: 'spki', format: 'pem' }).toString();
}

export function readStore(storePath: string, publicKeyPem: string, at = Date.now()): StoreFacts {
  const journaled = new Map<string, StoredEvent[]>();
  for (const { event } of EventJournal.read(journalPathFor(storePath)).entries) {
    const list = journaled.get(event.stream) ?? [];
    journaled.set(event.stream, list);
    list.push(event);
  }
  const db = new Database(storePath, { readonly: true, fileMustExist: true });
  try {
    const facts: StoreFacts = {
      statements: new Set(), results: new Set(), streams: 0, chainsVerified: 0, broken: [],
      sessions: new Map(), reviews: [], activeLocks: [], activeGrants: [],
    };
    let stream: StoredEvent[] = [];
    const finish = () => {
      if (stream.length === 0) return;
      facts.streams++;
      const name = stream[0]!.stream;
      const last = stream.at(-1)!.seq;
      stream.push(...(journaled.get(name) ?? []).filter((e) => e.seq > last));
      journaled.delete(name);
      const chain = verifyChain(stream);
      const signed = chain.ok ? verifyCheckpoints(stream, publicKeyPem) : undefined;
      if (chain.ok && signed?.ok) facts.chainsVerified++;
      else facts.broken.push(`${name}: ${chain.reason ?? signed?.reason}`);
      const markerOfSeq = new Map<number, string>();
      for (const e of stream) {
        const d = e.data as { sql?: string | null; params?: Array<string | null>; statementSeq?: number };
        if (e.type === 'statement') {
          const marker = MARKER.exec([d.sql ?? '', ...(d.params ?? [])].join(' '))?.[1];
          if (marker && d.statementSeq !== undefined) {
            facts.statements.add(marker);
            markerOfSeq.set(d.statementSeq, marker);
          }
        } else if (e.type === 'result' && d.statementSeq !== undefined) {
          const marker = markerOfSeq.get(d.statementSeq);
          if (marker) facts.results.add(marker);
        }
      }
      stream = [];
    };
    const rows = db.prepare('SELECT stream, seq, at, type, data, prev_hash, hash FROM events ORDER BY stream, seq').iterate() as IterableIterator<{
      stream: string; seq: number; at: number; type: string; data: string; prev_hash: string; hash: string;
    }>;
    for (const r of rows) {
      if (stream.length > 0 && stream[0]!.stream !== r.stream) finish();
      stream.push({ stream: r.stream, seq: r.seq, at: r.at, type: r.type, data: JSON.parse(r.data), prevHash: r.prev_hash, hash: r.hash });
    }
    finish();
    // Streams whose every event is still only in the journal.
    for (const events of [...journaled.values()]) {
      stream = events;
      finish();
    }
    for (const s of db.prepare('SELECT id, status FROM sessions').all() as Array<{ id: string; status: string }>) facts.sessions.set(s.id, s.status);
    facts.reviews = (db.prepare('SELECT body FROM reviews').all() as Array<{ body: string }>).map((r) => JSON.parse(r.body) as Review);
    facts.activeGrants = facts.reviews.filter((r) => r.kind === 'access' && r.status === 'approved' && (r.grantExpiresAt ?? 0) > at).map((r) => r.id).sort();
    facts.activeLocks = (db.prepare('SELECT body FROM identity_locks WHERE lifted_at IS NULL').all() as Array<{ body: string }>)
      .map((r) => JSON.parse(r.body) as IdentityLock)
      .filter((l) => l.expiresAt === undefined || l.expiresAt > at)
      .map((l) => l.id)
      .sort();
    return facts;
  } finally {
    db.close();
  }
}
