/**
 * `npm run fuzz`: malformed input at scale through the real broker. Drives mutated PostgreSQL frontend messages (startup,
 * SSL/GSS/cancel requests, Query, Parse/Bind/Describe/Execute/Sync, COPY, FunctionCall, password/SASL, Terminate),
 * hand-made and mangled WebSocket frames of the tunnel itself, mutated HTTP requests and SSH handshakes, in bounded
 * batches of concurrent sessions, while a well-formed session (hoopctl connect + node-postgres) runs beside them and
 * the broker's RSS is sampled. Prints a summary; exits 1 on a crash, a hang, a failed control session or a finding.
 *
 *   npm run fuzz -- --count 1000000 --seed 1 --concurrency 16
 */
import { cpus, totalmem } from 'node:os';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runCampaign, type CampaignStats } from './fuzz/campaign.js';
import { startControlSession } from './fuzz/control.js';
import { FUZZ_DATABASE, rssMb, startFuzzDeployment, type FuzzDeployment } from './fuzz/deployment.js';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '1000000' },
    seed: { type: 'string', default: '20261129' },
    concurrency: { type: 'string', default: '16' },
    'per-session': { type: 'string', default: '200' },
    chunk: { type: 'string', default: '25' },
    'mutation-rate': { type: 'string', default: '0.03' },
    'stall-ms': { type: 'string', default: '3000' },
    'hang-ms': { type: 'string', default: '30000' },
    mix: { type: 'string', default: 'postgres=70,tunnel-frames=15,http=10,ssh=5' },
    json: { type: 'boolean', default: false },
    /** Stops after this many seconds even if --count is not reached (the summary says how far it got). */
    seconds: { type: 'string' },
    /** Replays these session numbers only (comma-separated), e.g. a finding's. */
    session: { type: 'string' },
    /** Writes a V8 heap snapshot of the broker at each memory sample (10 %, 20 %, … of the run) into this directory. */
    'heap-snapshots': { type: 'string' },
  },
});

async function main(): Promise<void> {
  const mix = Object.fromEntries(values.mix!.split(',').map((kv) => [kv.split('=')[0], Number(kv.split('=')[1])])) as Record<'postgres' | 'tunnel-frames' | 'http' | 'ssh', number>;
  // Replaying sessions: the broker logs everything, and the log is printed at the end.
  const d = await startFuzzDeployment({ ssh: (mix.ssh ?? 0) > 0, logLevel: values.session ? 'debug' : 'warn', ...(values['heap-snapshots'] ? { heapSnapshots: values['heap-snapshots'] } : {}) });
  const pid = d.broker.pid!;
  let crashed: string | undefined;
  d.broker.once('exit', (code, signal) => (crashed = `broker exited (code ${code}, signal ${signal})`));
  try {
    const control = await startControlSession(d, 'fuzz-pg', FUZZ_DATABASE);
    const rss = { start: rssMb(pid), peak: 0, samples: [] as number[] };
    rss.peak = rss.start;
    const sampler = setInterval(() => {
      if (crashed) return;
      const now = rssMb(pid);
      rss.samples.push(now);
      rss.peak = Math.max(rss.peak, now);
    }, 1000);
    // The memory curve: the broker measures itself after a full GC at the start, at every tenth of the run, and idle
    // after it, so heap growth is told apart from garbage not yet collected and from what the allocator keeps.
    const curve: MemoryPoint[] = [];
    const probe = async (label: string, messages: number) => {
      if (crashed) return;
      const m = await d.memory().catch(() => undefined);
      if (m) curve.push({ label, messages, rssMb: m.rss / 2 ** 20, heapMb: m.heapUsed / 2 ** 20, externalMb: m.external / 2 ** 20 });
    };
    const probes: Array<Promise<void>> = [probe('start', 0)];
    let tenth = 0;
    let lastReport = Date.now();
    const count = Number(values.count);
    const stats = await runCampaign({
      brokerUrl: d.brokerUrl,
      token: d.token,
      pg: { connections: ['fuzz-pg', 'fuzz-pg-plain'], database: FUZZ_DATABASE },
      http: d.http,
      ...(d.ssh ? { ssh: d.ssh } : {}),
      count,
      seed: Number(values.seed),
      concurrency: Number(values.concurrency),
      perSession: Number(values['per-session']),
      chunk: Number(values.chunk),
      mutationRate: Number(values['mutation-rate']),
      mix,
      stallMs: Number(values['stall-ms']),
      hangMs: Number(values['hang-ms']),
      brokerAlive: () => !crashed,
      ...(values.seconds ? { maxSeconds: Number(values.seconds) } : {}),
      ...(values.session ? { only: values.session.split(',').map(Number) } : {}),
      onSession: (s) => {
        const reached = Math.min(10, Math.floor((s.messages / count) * 10));
        if (reached > tenth) {
          tenth = reached;
          probes.push(probe(`${tenth * 10} %`, s.messages));
        }
        if (Date.now() - lastReport < 10_000) return;
        lastReport = Date.now();
        process.stderr.write(`${new Date().toISOString()} ${s.messages} messages, ${s.sessions} sessions, broker RSS ${rssMb(pid).toFixed(0)} MiB, control ${control.answered} answers\n`);
      },
    });
    await Promise.all(probes);
    const endBusy = crashed ? 0 : rssMb(pid);
    // A quiet moment after the run: what the broker keeps once its sessions are gone.
    await new Promise((r) => setTimeout(r, 5000));
    clearInterval(sampler);
    const endIdle = crashed ? 0 : rssMb(pid);
    await probe('idle after', stats.messages);
    const fresh = crashed ? undefined : await startControlSession(d, 'fuzz-pg-plain', FUZZ_DATABASE).then(async (c) => {
      while (c.answered < 10 && !c.failure) await new Promise((r) => setTimeout(r, 50));
      await c.stop();
      return c;
    });
    await control.stop();
    // Every session the run opened must have ended: one left open is a session the broker still holds (a leak, and
    // a session a user would see live for ever). The control sessions were just stopped: give them their moment.
    const leftOpen = crashed ? [] : await openSessions(d);
    if (values.session) process.stderr.write(readFileSync(d.brokerLogPath, 'utf8').split('\n').filter((l) => !l.includes('fuzz-pg"') || true).slice(-80).join('\n') + '\n');
    const logErrors = readFileSync(d.brokerLogPath, 'utf8').split('\n').filter((l) => /"level":(50|60)/.test(l));
    // A PostgreSQL backend that crashed makes the server restart and cut every session, the control session's too.
    const pgCrashes = readFileSync(d.pgLogPath, 'utf8').split('\n').filter((l) => /terminated by signal|was terminated by|Failed process was running|all server processes terminated/.test(l));
    const memory = judgeMemory(curve);
    // Each lost control connection needs a PostgreSQL restart to explain it (one restart cuts each session once).
    const restarts = pgCrashes.filter((l) => /all server processes terminated/.test(l)).length;
    const unexplainedLosses = Math.max(0, control.losses.length - restarts);
    const sessionsLeftOpen = leftOpen.length;
    const report = summary(stats, { crashed, rss: { start: rss.start, peak: rss.peak, endBusy, endIdle }, control: control.answered, controlFailure: control.failure ?? fresh?.failure, logErrors, count, curve, memory, pgCrashes, sessionsLeftOpen, controlLosses: control.losses, unexplainedLosses });
    process.stdout.write(values.json ? JSON.stringify({ stats, rss, curve, memory, pgCrashes, sessionsLeftOpen: leftOpen, logErrors: logErrors.slice(0, 20) }, null, 2) + '\n' : report + '\n');
    if (!memory.flat || leftOpen.length > 0 || unexplainedLosses > 0) process.exitCode = 1;
    if (crashed || stats.findings.length > 0 || control.failure || fresh?.failure || logErrors.length > 0) process.exitCode = 1;
  } finally {
    await d.stop();
  }
}

/**
 * Sessions the broker still lists as open. The control sessions' ends are recorded a moment after their tunnels
 * close, so this waits until the list stops shrinking (a leaked session never leaves it).
 */
async function openSessions(d: FuzzDeployment): Promise<Array<{ id: string; connection: string }>> {
  let previous = Infinity;
  for (;;) {
    const res = await fetch(`${d.brokerUrl}/api/v1/sessions?status=open&limit=1000`, { headers: { authorization: `Bearer ${await d.token()}` } });
    const { sessions } = (await res.json()) as { sessions: Array<{ id: string; connection: string }> };
    if (sessions.length === 0 || sessions.length >= previous) return sessions;
    previous = sessions.length;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

interface MemoryPoint {
  label: string;
  messages: number;
  rssMb: number;
  /** V8 heap still reachable after a full GC. */
  heapMb: number;
  /** Memory outside the V8 heap that V8 knows of (Buffers, ArrayBuffers). */
  externalMb: number;
}

interface MemoryVerdict {
  flat: boolean;
  text: string;
}

/**
 * "Flat", checked over the second half of the run (50 % → 100 % of --count, both under the same load of concurrent
 * sessions, after the first half warmed up the JIT, the caches and the allocator): the reachable heap after a full GC
 * grows by at most HEAP_SLACK_MB and RSS by at most RSS_SLACK_MB; and once the sessions are gone, the reachable heap
 * is no larger than at 50 % plus HEAP_SLACK_MB. A leak of anything per session (a map entry, a listener, a logger, a
 * recorder, a session that never ends) grows with the session count, which doubles over the second half: at the
 * default 1,000,000 messages (about 15,000 sessions in the second half) 8 MiB is about 0.5 KiB per session.
 */
const HEAP_SLACK_MB = 8;
const RSS_SLACK_MB = 40;

function judgeMemory(curve: MemoryPoint[]): MemoryVerdict {
  const at = (label: string) => curve.find((p) => p.label === label);
  const half = at('50 %');
  const end = at('100 %');
  const idle = at('idle after');
  if (!half || !end || !idle) return { flat: false, text: 'not judged: the run did not reach --count (no 50 % and 100 % samples)' };
  const heapHalf = end.heapMb - half.heapMb;
  const rssHalf = end.rssMb - half.rssMb;
  const kept = idle.heapMb - half.heapMb;
  const flat = heapHalf <= HEAP_SLACK_MB && rssHalf <= RSS_SLACK_MB && kept <= HEAP_SLACK_MB;
  const mb = (n: number) => `${n >= 0 ? '+' : ''}${n.toFixed(1)} MiB`;
  return {
    flat,
    text: `${flat ? 'FLAT' : 'NOT FLAT'}: over the second half (50 % → 100 %) reachable heap ${mb(heapHalf)} (limit +${HEAP_SLACK_MB}), RSS ${mb(rssHalf)} (limit +${RSS_SLACK_MB}); idle after the run vs 50 %: heap ${mb(kept)} (limit +${HEAP_SLACK_MB}), RSS ${mb(idle.rssMb - half.rssMb)}`,
  };
}

function summary(
  s: CampaignStats,
  x: {
    crashed?: string; rss: { start: number; peak: number; endBusy: number; endIdle: number }; control: number; controlFailure?: string; logErrors: string[]; count: number;
    curve: MemoryPoint[]; memory: MemoryVerdict; pgCrashes: string[]; sessionsLeftOpen: number;
    controlLosses: readonly string[]; unexplainedLosses: number;
  },
): string {
  const lines = [
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}; ${new Date().toISOString()}`,
    `Command: npm run fuzz -- ${process.argv.slice(2).join(' ') || '(defaults)'}  (seed ${values.seed}, concurrency ${values.concurrency}, ${values['per-session']} messages/session, chunk ${values.chunk}, mutation rate ${values['mutation-rate']})`,
    '',
    `messages ${s.messages} of ${x.count} · sessions ${s.sessions} · ${s.seconds.toFixed(0)} s · ${(s.messages / s.seconds).toFixed(0)} messages/s · ${(s.sessions / s.seconds).toFixed(1)} sessions/s`,
    `broker crashes: ${x.crashed ? 1 : 0}${x.crashed ? ` (${x.crashed})` : ''} · errors in the broker log: ${x.logErrors.length} · findings (hangs, malformed answers, refused tunnels): ${s.findings.length}`,
    `sessions stalled during the run (no sentinel answer within --stall-ms): ${s.stalledReplays.clean + s.stalledReplays.again + s.stalledReplays.notReplayed}; replayed alone after the run: ${s.stalledReplays.clean} answered everything, ${s.stalledReplays.again} stalled again (findings)${s.stalledReplays.notReplayed ? `, ${s.stalledReplays.notReplayed} not replayed` : ''}`,
    `well-formed session beside the fuzz: ${x.control} checked round trips, ${x.controlFailure ? `FAILED: ${x.controlFailure}` : 'no error'}; connections lost and reopened: ${x.controlLosses.length}${x.controlLosses.length ? ` (${x.unexplainedLosses} not explained by a PostgreSQL restart)` : ''}`,
    ...x.controlLosses.map((l) => `  lost ${l}`),
    `broker RSS: start ${x.rss.start.toFixed(0)} MiB · peak ${x.rss.peak.toFixed(0)} MiB · end (busy) ${x.rss.endBusy.toFixed(0)} MiB · end (5 s idle) ${x.rss.endIdle.toFixed(0)} MiB`,
    `broker memory after a full GC (RSS / reachable V8 heap, MiB): ${x.curve.map((p) => `${p.label} ${p.rssMb.toFixed(0)}/${p.heapMb.toFixed(1)}`).join(' · ')}`,
    `broker memory: ${x.memory.text}`,
    `sessions still open in the broker after the run: ${x.sessionsLeftOpen}`,
    `PostgreSQL server restarts after a crashed server process (its log; PostgreSQL's own bugs): ${x.pgCrashes.filter((l) => /all server processes terminated/.test(l)).length}`,
    ...x.pgCrashes.slice(0, 12).map((l) => `  ${l.slice(0, 300)}`),
    '',
  ];
  for (const [protocol, p] of Object.entries(s.protocols)) {
    lines.push(`${protocol}: ${p!.sessions} sessions, ${p!.messages} messages (${p!.mutated} mutated); how sessions ended (sessions to replay with --session):`);
    for (const [k, n] of Object.entries(p!.outcomes).sort((a, b) => b[1] - a[1])) lines.push(`  ${String(n).padStart(8)}  ${k}  [${p!.examples[k]!.join(',')}]`);
    lines.push(`  mutations: ${Object.entries(p!.mutations).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ')}`);
  }
  lines.push(`non-fatal PostgreSQL errors by SQLSTATE (the session went on): ${Object.entries(s.pgErrors).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ')}`);
  lines.push(`HTTP statuses: ${Object.entries(s.httpStatuses).sort().map(([k, n]) => `${k} ${n}`).join(', ')}`);
  for (const f of s.findings.slice(0, 20)) lines.push(`FINDING ${f}`);
  for (const l of x.logErrors.slice(0, 10)) lines.push(`BROKER ERROR ${l.slice(0, 300)}`);
  return lines.join('\n');
}

main().catch((e) => {
  process.stderr.write(`fuzz failed: ${(e as Error).stack}\n`);
  process.exitCode = 1;
});
