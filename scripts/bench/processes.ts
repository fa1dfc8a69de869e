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
/**
 * CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat (clock ticks of 1/100 s): unlike
 * wall-clock time, what other processes on the machine do barely changes it.
 */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces), from the 3rd: utime and stime are the 14th and 15th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

export function rssMb(pid: number, which: 'VmRSS' | 'VmHWM' = 'VmRSS'): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(new RegExp(`${which}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

/** Samples a process's RSS every 200 ms, so "through the run" is what was seen, not only the end. */
export function rssSampler(pid: number): { peakMb: () => number; stop: () => void } {
  let peak = 0;
  const timer = setInterval(() => (peak = Math.max(peak, rssMb(pid))), 200);
  timer.unref();
  return { peakMb: () => Math.max(peak, rssMb(pid)), stop: () => clearInterval(timer) };
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
