/**
 * One crash round: load on the broker (writers and held statements), `kill -9` at a chosen moment, restart, then
 * compare what the clients saw with what the store kept. Shared by `npm run crash` (20 rounds) and the e2e test
 * (one round), which each bring their own deployment and say how to kill and restart its broker.
 */
import pg from 'pg';
import type { ClientConfig } from 'pg';
import { LedgerWorkload, MARKER } from './ledger-workload.js';
import { readStore } from './store-audit.js';

export interface CrashRoundOptions {
  tag: string;
  clients: number;
  holders: number;
  /** Acknowledged statements to wait for before the kill may come. */
  warmup: number;
  /** Milliseconds after the warm-up at which the broker is killed (chosen by the caller, e.g. at random). */
  killAfterMs: number;
  connect: () => ClientConfig;
  /** A direct (not gated) connection to the database holding `ledger`: what really ran there. */
  direct: ClientConfig;
  storePath: string;
  publicKeyPem: string;
  /** SIGKILLs the broker and resolves once it has exited. */
  kill(): Promise<void>;
  /** Starts it again on the same config and store; resolves once it listens. */
  restart(): Promise<void>;
}

export interface CrashRoundReport {
  acknowledged: number;
  /** Acknowledged statements with a recorded statement event. */
  recorded: number;
  /** Acknowledged but not recorded: must be 0. */
  missing: string[];
  /** Acknowledged statements whose result event was lost with the broker (results are recorded as they are sent). */
  resultsLost: number;
  /** Rows in the database (all rounds so far) whose statement is not in the recording: must be 0. */
  ranUnrecorded: string[];
  streams: number;
  chainsVerified: number;
  broken: string[];
  /** Sessions "open" in the store when the broker died, and how many of them are "failed" after the restart. */
  sessionsOpenAtKill: number;
  sessionsMarkedFailed: number;
  openAtKillIds: string[];
  /** Statement reviews pending (held by a live session) at the kill, and how many are orphaned after the restart. */
  reviewsPendingAtKill: number;
  reviewsOrphaned: number;
  reviewsStillPending: number;
  grantsBefore: string[];
  grantsAfter: string[];
  locksBefore: string[];
  locksAfter: string[];
  /** Client errors other than losing the connection: must be empty. */
  clientErrors: string[];
  connectionsLost: number;
}

export async function runCrashRound(o: CrashRoundOptions): Promise<CrashRoundReport> {
  const workload = new LedgerWorkload({ tag: o.tag, clients: o.clients, holders: o.holders, connect: o.connect });
  workload.start();
  await workload.whenBusy(o.warmup);
  if (o.killAfterMs > 0) await new Promise((r) => setTimeout(r, o.killAfterMs));
  await o.kill();
  // Every client learns its connection is gone (the tunnel closes them); what they saw before is final.
  await workload.done;
  const acknowledged = [...workload.acknowledged];
  const atKill = readStore(o.storePath, o.publicKeyPem);
  const openAtKill = [...atKill.sessions].filter(([, s]) => s === 'open').map(([id]) => id);
  const pendingAtKill = atKill.reviews.filter((r) => r.kind === 'statement' && r.status === 'pending' && r.sessionId).map((r) => r.id);
  await o.restart();
  const after = readStore(o.storePath, o.publicKeyPem);
  const byId = new Map(after.reviews.map((r) => [r.id, r]));
  const ran = new pg.Client(o.direct);
  await ran.connect();
  let rows: string[];
  try {
    rows = (await ran.query<{ marker: string }>('select marker from ledger')).rows.map((r) => r.marker);
  } finally {
    await ran.end();
  }
  return {
    acknowledged: acknowledged.length,
    recorded: acknowledged.filter((m) => after.statements.has(m)).length,
    missing: acknowledged.filter((m) => !after.statements.has(m)),
    resultsLost: acknowledged.filter((m) => !after.results.has(m)).length,
    ranUnrecorded: rows.filter((m) => MARKER.test(m) && !after.statements.has(m)),
    streams: after.streams,
    chainsVerified: after.chainsVerified,
    broken: after.broken,
    sessionsOpenAtKill: openAtKill.length,
    sessionsMarkedFailed: openAtKill.filter((id) => after.sessions.get(id) === 'failed').length,
    openAtKillIds: openAtKill,
    reviewsPendingAtKill: pendingAtKill.length,
    reviewsOrphaned: pendingAtKill.filter((id) => byId.get(id)?.status === 'orphaned').length,
    reviewsStillPending: after.reviews.filter((r) => r.kind === 'statement' && r.status === 'pending' && r.sessionId).length,
    grantsBefore: atKill.activeGrants,
    grantsAfter: after.activeGrants,
    locksBefore: atKill.activeLocks,
    locksAfter: after.activeLocks,
    clientErrors: workload.errors,
    connectionsLost: workload.lost,
  };
}
