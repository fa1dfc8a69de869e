/** The processes of `npm run bench`: waiting for them, their memory, and (BENCH_PROFILE) their CPU profiles. */
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';

/** Kept beside the sources (tsc copies no .cjs): dist/scripts/bench → scripts/bench. */
const EXIT_ON_SIGTERM = resolve(import.meta.dirname, '../../../scripts/bench/exit-on-sigterm.cjs');

export function waitForLine(child: ChildProcess, stream: 'stdout' | 'stderr', pattern: RegExp): Promise<RegExpMatchArray> {
  return new Promise((resolvePromise, reject) => {
    let buf = '';
    child[stream]!.on('data', (d) => {
      buf += d;
      const m = buf.match(pattern);
      if (m) resolvePromise(m);
    });
    child.once('exit', (code) => reject(new Error(`exited ${code} before ${pattern}: ${buf}`)));
  });
}

/** Resident memory of a process now (VmRSS), or its peak so far (VmHWM), in MB. */
export function rssMb(pid: number, which: 'VmRSS' | 'VmHWM' = 'VmRSS'): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(new RegExp(`${which}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

/**
 * Samples a process's RSS every 200 ms, so "through the run" is what was seen, not only the end. `phase(name)` starts
 * a named part of the run (its own peak is kept too, and the RSS it ended with: what the process kept, or gave back,
 * once the part's load was over), so a report can say which part the peak came from. `startMb` is the RSS when the
 * sampler was made (right after the process said it listens).
 */
export function rssSampler(pid: number): {
  startMb: number;
  peakMb: () => number;
  phase: (name: string) => void;
  phases: () => Array<{ name: string; peakMb: number; endMb: number }>;
  stop: () => void;
} {
  let peak = 0;
  const startMb = rssMb(pid);
  const parts: Array<{ name: string; peakMb: number; endMb: number }> = [{ name: 'start and set-up', peakMb: startMb, endMb: startMb }];
  const sample = () => {
    const now = rssMb(pid);
    peak = Math.max(peak, now);
    const current = parts[parts.length - 1]!;
    current.peakMb = Math.max(current.peakMb, now);
    current.endMb = now;
  };
  const timer = setInterval(sample, 200);
  timer.unref();
  return {
    startMb,
    peakMb: () => Math.max(peak, rssMb(pid)),
    phase: (name) => {
      sample();
      const now = rssMb(pid);
      parts.push({ name, peakMb: now, endMb: now });
    },
    phases: () => {
      sample();
      return parts.map((p) => ({ ...p }));
    },
    stop: () => clearInterval(timer),
  };
}

/**
 * Node arguments of a profiled process: `--cpu-prof` writes its profile on a normal exit only, so SIGTERM is
 * turned into `process.exit` before the program is loaded (the broker's own graceful stop is not profiled).
 */
export function profiledNodeArgs(dir: string | undefined, name: string, module?: string): string[] {
  if (!dir) return module ? [module] : [];
  const prof = ['--cpu-prof', '--cpu-prof-dir', dir, '--cpu-prof-name', `${name}.cpuprofile`];
  if (!module) return [...prof, '--require', EXIT_ON_SIGTERM];
  return [...prof, '--require', EXIT_ON_SIGTERM, module];
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/** The top self-time frames of each `.cpuprofile` in `dir`, as markdown lines (share of the busy samples). */
export function summariseProfiles(dir: string, top = 10): string {
  const out: string[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort()) {
    const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { nodes: ProfileNode[]; startTime: number; endTime: number };
    const self = new Map<string, number>();
    let busy = 0;
    let idle = 0;
    for (const n of profile.nodes) {
      const hits = n.hitCount ?? 0;
      const { functionName, url, lineNumber } = n.callFrame;
      if (functionName === '(idle)') {
        idle += hits;
        continue;
      }
      busy += hits;
      const where = url ? `${url.replace(/^.*\/(node_modules|dist)\//, '$1/').replace(/^node:/, 'node:')}:${lineNumber + 1}` : '';
      const key = `${functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
      self.set(key, (self.get(key) ?? 0) + hits);
    }
    const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
    out.push(`**${basename(file, '.cpuprofile')}**: busy ${((100 * busy) / Math.max(1, busy + idle)).toFixed(0)}% of samples; top self time:`);
    for (const [frame, hits] of rows) out.push(`- ${((100 * hits) / Math.max(1, busy)).toFixed(1)}% \`${frame}\``);
    out.push('');
  }
  return out.join('\n');
}

/** Clock ticks per second of /proc/<pid>/stat's times (USER_HZ: 100 on Linux). */
const TICKS_PER_SECOND = 100;

/**
 * CPU seconds a process has used so far (user + system); with `reaped`, also what its exited children used (the
 * postmaster reaps every PostgreSQL backend, so this is the whole cluster's CPU). 0 when the process is gone.
 */
/**
 * CPU seconds of a process and all its children, reaped or still running (a PostgreSQL postmaster: its backends,
 * including those a pool keeps alive, whose time is not in the postmaster's reaped total until they exit).
 */
export function treeCpuSeconds(pid: number): number {
  let total = cpuSeconds(pid, true);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Field 4 (after the state) is the parent's pid.
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) total += cpuSeconds(Number(entry), true);
    } catch {
      // Gone while listed: its time is in the parent's reaped total now.
    }
  }
  return total;
}

/** CPU seconds of a process's main thread alone (its thread whose id is the pid): without worker, GC and I/O threads. */
export function mainThreadCpuSeconds(pid: number): number {
  return cpuSeconds(pid, false, `/proc/${pid}/task/${pid}/stat`);
}

export function cpuSeconds(pid: number, reaped = false, statFile = `/proc/${pid}/stat`): number {
  try {
    const stat = readFileSync(statFile, 'utf8');
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    const ticks = f[11]! + f[12]! + (reaped ? f[13]! + f[14]! : 0);
    return ticks / TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}
