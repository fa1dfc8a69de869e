/**
 * Verdict cost: how long judging one statement takes — parse (libpg_query WASM), classify, evaluate the rules —
 * over the bypass-attempt suites the tests use, i.e. the texts built to be hard to judge. In process, no I/O.
 *
 * Three figures, never folded into one: the cold judgement (the first of each text in a fresh process: the JIT and
 * V8's lazy tier-up of the parser's WASM code have not run yet), the warm-up rounds after it, and the steady state
 * (the rounds after those). Then the verdict cache as the proxy uses it (StatementJudge with a VerdictCache): the
 * same texts judged once more on a miss and on a hit.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { classifySql, connectionPolicySchema, evaluateStatements, initPolicyEngine, maskPlanFor, type PolicyIdentity } from '../../src/policy/index.js';
import { StatementJudge } from '../../src/broker/protocols/postgres/statement-judge.js';
import { VerdictCache } from '../../src/broker/protocols/postgres/verdict-cache.js';
import { attempts, DENY_POLICY } from '../../test/support/policy-attempts.js';
import { effectAllowed, effectAttempts, EFFECT_POLICY } from '../../test/support/effect-attempts.js';

export interface Spread {
  samples: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface VerdictCost {
  texts: number;
  /** The first judgement of each text in this process. */
  cold: Spread;
  warmupRounds: number;
  warmup: Spread;
  steadyRounds: number;
  steady: Spread;
  /** Garbage collections during the steady rounds, and how many of its slowest 1% samples overlapped one. */
  steadyGc: { count: number; maxMs: number; tailSamplesInGc: number };
  /** The text with the highest steady median (what is slow by nature, not by a preempted sample), and that median. */
  slowest: { sql: string; medianMs: number };
  /** The verdict cache (StatementJudge + VerdictCache): every text missed once, then hit. */
  cache: { miss: Spread; hit: Spread; hitShare: number };
}

function spread(values: number[]): Spread {
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { samples: s.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: s[s.length - 1]! };
}

export async function measureVerdictCost(warmupRounds = 20, steadyRounds = 50): Promise<VerdictCost> {
  await initPolicyEngine();
  const identity: PolicyIdentity = { subject: 'bench', kind: 'service', clientId: 'bench', groups: ['bench'] };
  const denyPolicy = connectionPolicySchema.parse(DENY_POLICY);
  const effectPolicy = connectionPolicySchema.parse(EFFECT_POLICY);
  const cases = [
    ...attempts.map((a) => ({ policy: denyPolicy, sql: a.sql })),
    ...[...effectAttempts, ...effectAllowed].map((sql) => ({ policy: effectPolicy, sql })),
  ];
  const judge = (c: (typeof cases)[number]) => evaluateStatements(c.policy, identity, classifySql(c.sql));
  const timed = (c: (typeof cases)[number]) => {
    const started = performance.now();
    judge(c);
    return { started, ms: performance.now() - started };
  };

  const cold = cases.map((c) => timed(c).ms);
  const warmup: number[] = [];
  for (let r = 0; r < warmupRounds; r++) for (const c of cases) warmup.push(timed(c).ms);

  const gcs: Array<{ start: number; ms: number }> = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcs.push({ start: e.startTime, ms: e.duration });
  });
  observer.observe({ entryTypes: ['gc'] });
  const steady: Array<{ started: number; ms: number }> = [];
  const perCase = cases.map(() => [] as number[]);
  for (let r = 0; r < steadyRounds; r++) {
    cases.forEach((c, i) => {
      const t = timed(c);
      steady.push(t);
      perCase[i]!.push(t.ms);
    });
  }
  await new Promise((r) => setTimeout(r, 20)); // the observer is told asynchronously
  observer.disconnect();
  const tail = [...steady].sort((a, b) => b.ms - a.ms).slice(0, Math.max(1, Math.floor(steady.length / 100)));
  const tailSamplesInGc = tail.filter((s) => gcs.some((g) => g.start < s.started + s.ms && g.start + g.ms > s.started)).length;

  const medians = perCase.map((v) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)]!);
  const worst = medians.indexOf(Math.max(...medians));

  // The cache as the proxy uses it: one judge per policy, sharing the broker's cache; a fresh cache misses each text once.
  const verdicts = new VerdictCache();
  const judges = new Map([denyPolicy, effectPolicy].map((p) => [p, new StatementJudge(p, identity, maskPlanFor(p, identity), false, verdicts)]));
  const pass = () => cases.map((c) => {
    const j = judges.get(c.policy)!;
    const started = performance.now();
    j.judge(c.sql);
    return performance.now() - started;
  });
  const miss = pass();
  const missesBefore = verdicts.misses;
  const hit: number[] = [];
  for (let r = 0; r < 10; r++) hit.push(...pass());

  return {
    texts: cases.length,
    cold: spread(cold),
    warmupRounds,
    warmup: spread(warmup),
    steadyRounds,
    steady: spread(steady.map((s) => s.ms)),
    steadyGc: { count: gcs.length, maxMs: Math.max(0, ...gcs.map((g) => g.ms)), tailSamplesInGc },
    slowest: { sql: cases[worst]!.sql, medianMs: medians[worst]! },
    // Texts that read session state (EXECUTE) are judged in full each time: the share says how many really hit.
    cache: { miss: spread(miss), hit: spread(hit), hitShare: (verdicts.hits) / (verdicts.hits + verdicts.misses - missesBefore) },
  };
}
