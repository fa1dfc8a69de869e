/**
 * An opt-in memory probe for long runs (`npm run fuzz`, soak tests): with HOOPCTL_MEMORY_REPORT=<file> set, each
 * SIGUSR2 appends one JSON line of `process.memoryUsage()` to that file — taken after a full garbage collection when
 * the process runs with `--expose-gc`, so heapUsed is what is still reachable, not garbage not yet collected. With
 * HOOPCTL_HEAP_SNAPSHOTS=<dir> also set, each signal also writes a V8 heap snapshot there (slow: seconds, and the
 * process stands still meanwhile; for comparing an early and a late moment, not for every sample).
 * Off unless asked for: without the variable the signal keeps Node's default (the process ends).
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeHeapSnapshot } from 'node:v8';

export function installMemoryReport(env: NodeJS.ProcessEnv = process.env): void {
  const file = env.HOOPCTL_MEMORY_REPORT;
  if (!file) return;
  const snapshots = env.HOOPCTL_HEAP_SNAPSHOTS;
  let n = 0;
  process.on('SIGUSR2', () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const snapshot = snapshots ? writeHeapSnapshot(join(snapshots, `broker-${process.pid}-${++n}.heapsnapshot`)) : undefined;
    appendFileSync(file, JSON.stringify({ at: new Date().toISOString(), afterGc: !!gc, ...process.memoryUsage(), ...(snapshot ? { snapshot } : {}) }) + '\n');
  });
}
