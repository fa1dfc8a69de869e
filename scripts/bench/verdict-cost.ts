/**
 * Verdict cost: how long judging one statement takes — parse (libpg_query WASM), classify, evaluate the rules —
 * over the bypass-attempt suites the tests use, i.e. the texts built to be hard to judge. In process, no I/O.
 */
import { classifySql, connectionPolicySchema, evaluateStatements, initPolicyEngine, type PolicyIdentity } from '../../src/policy/index.js';
import { attempts, DENY_POLICY } from '../../test/support/policy-attempts.js';
import { effectAllowed, effectAttempts, EFFECT_POLICY } from '../../test/support/effect-attempts.js';

export interface VerdictCost {
  texts: number;
  samples: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The text with the highest median (what is slow by nature, not by a preempted sample), and that median. */
  slowest: { sql: string; medianMs: number };
}

export async function measureVerdictCost(repeats = 50): Promise<VerdictCost> {
  await initPolicyEngine();
  const identity: PolicyIdentity = { subject: 'bench', kind: 'service', clientId: 'bench', groups: ['bench'] };
  const cases = [
    ...attempts.map((a) => ({ policy: connectionPolicySchema.parse(DENY_POLICY), sql: a.sql })),
    ...[...effectAttempts, ...effectAllowed].map((sql) => ({ policy: connectionPolicySchema.parse(EFFECT_POLICY), sql })),
  ];
  const judge = (c: (typeof cases)[number]) => evaluateStatements(c.policy, identity, classifySql(c.sql));
  for (const c of cases) judge(c); // warm the WASM parser and the JIT
  const samples: number[] = [];
  const perCase = cases.map(() => [] as number[]);
  for (let r = 0; r < repeats; r++) {
    cases.forEach((c, i) => {
      const started = performance.now();
      judge(c);
      const ms = performance.now() - started;
      samples.push(ms);
      perCase[i]!.push(ms);
    });
  }
  const medians = perCase.map((v) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)]!);
  const worst = medians.indexOf(Math.max(...medians));
  samples.sort((a, b) => a - b);
  const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]!;
  return { texts: cases.length, samples: samples.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: samples[samples.length - 1]!, slowest: { sql: cases[worst]!.sql, medianMs: medians[worst]! } };
}
