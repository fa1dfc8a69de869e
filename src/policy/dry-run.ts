import { classifySql, isEmptyQuery, type StatementInfo } from './sql-classifier.js';
import { emptyQueryVerdict, evaluateStatements, maskPlanFor, type ConnectionPolicy, type PolicyIdentity, type Verdict } from './rules.js';
import type { MaskPlan } from './mask-plan.js';
import { approvalRequiredReason, decideAccess, describeAccessRule, type AccessSubject, type ConnectionAccess } from './access.js';

export interface DryRunStatement {
  text: string;
  kind: string;
  categories: string[];
  /** What the statement does, as effect rules see it. */
  effects: string[];
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
  // The proxy forwards an empty query (the server runs nothing): the dry run allows it the same way.
  const verdict = isEmptyQuery(classification) ? emptyQueryVerdict() : evaluateStatements(policy, identity, classification, resolve);
  const statements = classification.ok
    ? classification.statements.map((s) => ({
        text: s.text,
        kind: s.kind,
        categories: s.categories,
        effects: s.effects,
        verdict: evaluateStatements(policy, identity, { ok: true, statements: [s] }, resolve),
      }))
    : [];
  return { verdict, statements, mask: maskPlanFor(policy, identity) };
}

/** Whether an identity may open a connection, judged by the broker's own `decideAccess`. */
export interface AccessJudgement {
  admitted: boolean;
  /** What admitted it (`group dba`). */
  via?: string;
  /** A just-in-time connection: opening it also needs an access request these groups approve. */
  approval?: { groups: string[] };
  message: string;
}

export function judgeAccess(identity: AccessSubject, access: ConnectionAccess, connection: string): AccessJudgement {
  const decision = decideAccess(identity, access, connection);
  if (!decision.allowed) return { admitted: false, message: `${decision.reason} (${describeAccessRule(access)})` };
  if (access.approval) {
    return {
      admitted: true, via: decision.via, approval: { groups: access.approval.groups },
      message: `${approvalRequiredReason(connection)} (approvers: ${access.approval.groups.join(', ')})`,
    };
  }
  return { admitted: true, via: decision.via, message: `admitted by ${decision.via}` };
}

/** Where the verdict came from: opening the connection, or its rules. */
export type VerdictStage = 'access' | 'rules';

/**
 * The verdict the broker gives once access is taken into account: a refused identity never reaches the rules
 * (deny); on a just-in-time connection the text waits for an approved access request (review) unless a rule
 * denies it anyway — the strictest wins, as between statements.
 */
export function verdictWithAccess(access: AccessJudgement, rules: Verdict | undefined): Verdict & { stage: VerdictStage } {
  if (!access.admitted) return { action: 'deny', message: access.message, stage: 'access' };
  if (!rules) throw new Error('an admitted identity is judged by the rules');
  if (access.approval && rules.action !== 'deny') return { action: 'review', message: access.message, stage: 'access' };
  return { ...rules, stage: 'rules' };
}
