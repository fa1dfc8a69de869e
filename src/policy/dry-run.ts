import { classifySql, type StatementInfo } from './sql-classifier.js';
import { evaluateStatements, maskPlanFor, type ConnectionPolicy, type PolicyIdentity, type Verdict } from './rules.js';
import type { MaskPlan } from './mask-plan.js';

export interface DryRunStatement {
  text: string;
  kind: string;
  categories: string[];
  verdict: Verdict;
}

export interface DryRunResult {
  verdict: Verdict;
  statements: DryRunStatement[];
  mask?: MaskPlan;
}

/**
 * What the broker would decide for `sql` sent by `identity` on a fresh session: the same classification and
 * evaluation the proxy runs, with PREPAREs earlier in the same text known to later EXECUTEs.
 */
export function dryRunPolicy(policy: ConnectionPolicy, identity: PolicyIdentity, sql: string): DryRunResult {
  const classification = classifySql(sql);
  const prepared = new Map<string, StatementInfo>();
  if (classification.ok) {
    for (const s of classification.statements) if (s.prepared) prepared.set(s.prepared.name, s.prepared.inner);
  }
  const resolve = (name: string) => prepared.get(name);
  const verdict = evaluateStatements(policy, identity, classification, resolve);
  const statements = classification.ok
    ? classification.statements.map((s) => ({
        text: s.text,
        kind: s.kind,
        categories: s.categories,
        verdict: evaluateStatements(policy, identity, { ok: true, statements: [s] }, resolve),
      }))
    : [];
  return { verdict, statements, mask: maskPlanFor(policy, identity) };
}
