/**
 * The thread that reads the kernel's socket tables for `peerSocketOwner`: checks that arrive while a scan runs wait
 * for the next scan (which starts after they arrived, so their rows are in it) and are answered together.
 */
import { parentPort } from 'node:worker_threads';
import { lookUpOwners, type OwnerQuery } from './peer-owner.js';

let waiting: Array<{ id: number; q: OwnerQuery }> = [];
let scheduled = false;

parentPort?.on('message', (m: { id: number; q: OwnerQuery }) => {
  waiting.push(m);
  if (scheduled) return;
  scheduled = true;
  // After every message already queued has been taken: one scan for all of them.
  setImmediate(() => {
    scheduled = false;
    const batch = waiting;
    waiting = [];
    const uids = lookUpOwners(batch.map((b) => b.q));
    parentPort!.postMessage(batch.map((b, i) => ({ id: b.id, ...(uids[i] !== undefined ? { uid: uids[i] } : {}) })));
  });
});
