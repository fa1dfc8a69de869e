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
import { FUZZ_DATABASE, rssMb, startFuzzDeployment } from './fuzz/deployment.js';

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
  },
});

async function main(): Promise<void> {
  const mix = Object.fromEntries(values.mix!.split(',').map((kv) => [kv.split('=')[0], Number(kv.split('=')[1])])) as Record<'postgres' | 'tunnel-frames' | 'http' | 'ssh', number>;
  // Replaying sessions: the broker logs everything, and the log is printed at the end.
  const d = await startFuzzDeployment({ ssh: (mix.ssh ?? 0) > 0, logLevel: values.session ? 'debug' : 'warn' });
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
        if (Date.now() - lastReport < 10_000) return;
        lastReport = Date.now();
        process.stderr.write(`${new Date().toISOString()} ${s.messages} messages, ${s.sessions} sessions, broker RSS ${rssMb(pid).toFixed(0)} MiB, control ${control.answered} answers\n`);
      },
    });
    const endBusy = crashed ? 0 : rssMb(pid);
    // A quiet moment after the run: what the broker keeps once its sessions are gone.
    await new Promise((r) => setTimeout(r, 5000));
    clearInterval(sampler);
    const endIdle = crashed ? 0 : rssMb(pid);
    const fresh = crashed ? undefined : await startControlSession(d, 'fuzz-pg-plain', FUZZ_DATABASE).then(async (c) => {
      while (c.answered < 10 && !c.failure) await new Promise((r) => setTimeout(r, 50));
      await c.stop();
      return c;
    });
    await control.stop();
    if (values.session) process.stderr.write(readFileSync(d.brokerLogPath, 'utf8').split('\n').filter((l) => !l.includes('fuzz-pg"') || true).slice(-80).join('\n') + '\n');
    const logErrors = readFileSync(d.brokerLogPath, 'utf8').split('\n').filter((l) => /"level":(50|60)/.test(l));
    const report = summary(stats, { crashed, rss: { start: rss.start, peak: rss.peak, endBusy, endIdle }, control: control.answered, controlFailure: control.failure ?? fresh?.failure, logErrors, count });
    process.stdout.write(values.json ? JSON.stringify({ stats, rss, logErrors: logErrors.slice(0, 20) }, null, 2) + '\n' : report + '\n');
    if (crashed || stats.findings.length > 0 || control.failure || fresh?.failure || logErrors.length > 0) process.exitCode = 1;
  } finally {
    await d.stop();
  }
}

function summary(
  s: CampaignStats,
  x: { crashed?: string; rss: { start: number; peak: number; endBusy: number; endIdle: number }; control: number; controlFailure?: string; logErrors: string[]; count: number },
): string {
  const lines = [
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}; ${new Date().toISOString()}`,
    `Command: npm run fuzz -- ${process.argv.slice(2).join(' ') || '(defaults)'}  (seed ${values.seed}, concurrency ${values.concurrency}, ${values['per-session']} messages/session, chunk ${values.chunk}, mutation rate ${values['mutation-rate']})`,
    '',
    `messages ${s.messages} of ${x.count} · sessions ${s.sessions} · ${s.seconds.toFixed(0)} s · ${(s.messages / s.seconds).toFixed(0)} messages/s · ${(s.sessions / s.seconds).toFixed(1)} sessions/s`,
    `broker crashes: ${x.crashed ? 1 : 0}${x.crashed ? ` (${x.crashed})` : ''} · errors in the broker log: ${x.logErrors.length} · findings (hangs, malformed answers, refused tunnels): ${s.findings.length}`,
    `well-formed session beside the fuzz: ${x.control} checked round trips, ${x.controlFailure ? `FAILED: ${x.controlFailure}` : 'no error'}`,
    `broker RSS: start ${x.rss.start.toFixed(0)} MiB · peak ${x.rss.peak.toFixed(0)} MiB · end (busy) ${x.rss.endBusy.toFixed(0)} MiB · end (5 s idle) ${x.rss.endIdle.toFixed(0)} MiB`,
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
