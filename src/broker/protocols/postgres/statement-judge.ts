import {
  classifySql,
  emptyQueryVerdict,
  evaluateStatements,
  isEmptyQuery,
  policyRules,
  type ConnectionPolicy,
  type MaskPlan,
  type PolicyIdentity,
  type SqlClassification,
  type StatementInfo,
  type Verdict,
} from '../../../policy/index.js';
import { copyOutputColumns, copyUnmaskableReason } from '../../../policy/copy-format.js';
import { verdictContext, type VerdictCache } from './verdict-cache.js';
import { SqlState } from './errors.js';

/** The proxy's rule name when the fast-path function call protocol is refused: the parser cannot see it. */
export const FUNCTION_CALL_RULE = 'fastpath-function-call';
/** The proxy's rule name when binary results are refused under a mask plan. */
export const BINARY_RESULT_RULE = 'binary-result-masked';
/** Execute of the unnamed portal when none is open (see noUnnamedPortal). */
export const NO_UNNAMED_PORTAL_RULE = 'no-unnamed-portal';

/**
 * Execute of the unnamed portal when none is open: no Bind opened one since the session began, or the server dropped
 * it since — a simple Query does, and so does the end of its transaction (an implicit one ends at Sync, an explicit
 * one at COMMIT or ROLLBACK; the proxy sees that in ReadyForQuery): PostgreSQL would answer `portal "" does not exist`, and after a failed COPY FROM STDIN in a
 * transaction PostgreSQL 15.18 crashes on it instead, restarting and cutting every session (SECURITY.md). Refused
 * with the error PostgreSQL gives, whatever the connection's rules: a client that works never sends it.
 */
export function noUnnamedPortal(): Judgement {
  const verdict: Verdict = { action: 'deny', rule: NO_UNNAMED_PORTAL_RULE, message: 'Execute of the unnamed portal, which no Bind has opened' };
  return { verdict, refused: true, clientMessage: 'portal "" does not exist', sqlState: SqlState.InvalidCursorName };
}

/** PostgreSQL's own SQLSTATE for a syntax error, so clients and drivers treat it as one. */
export const SYNTAX_ERROR_SQLSTATE = '42601';

/** A verdict as the proxy applies it. */
export interface Judgement {
  verdict: Verdict;
  /** What is refused (deny; review failing closed when approvals are not available, or not granted). */
  refused: boolean;
  /** A `review` verdict with approvals available: the proxy holds the statement until it is decided. */
  held?: boolean;
  /** Message for the client's ErrorResponse. */
  clientMessage?: string;
  /** SQLSTATE of that ErrorResponse; 42501 when absent. */
  sqlState?: string;
  /** Its position field (1-based character of the text): where a syntax error is. */
  position?: number;
  /** The statements of the text, when it parsed. */
  statements?: StatementInfo[];
  /** The name a held Parse prepares its text under. */
  preparedName?: string;
}

/**
 * Judges the statements of one session against the connection's policy, and keeps what that needs: the
 * prepared statements the session created (SQL PREPARE and protocol-level Parse share one namespace in
 * PostgreSQL), so `EXECUTE name` is judged by the text that was prepared. Only allowed texts are ever
 * registered — a refused one never reaches the server — so every name the server knows runs allowed text.
 */
export class StatementJudge {
  readonly #policy: ConnectionPolicy;
  readonly #identity: PolicyIdentity;
  readonly #maskPlan: MaskPlan | undefined;
  readonly #prepared = new Map<string, StatementInfo>();

  readonly #reviewsAvailable: boolean;
  /** The broker's verdicts of texts already judged, shared by the sessions judged under the same rules and identity. */
  readonly #verdicts: { cache: VerdictCache; context: string } | undefined;

  constructor(policy: ConnectionPolicy, identity: PolicyIdentity, maskPlan: MaskPlan | undefined, reviewsAvailable = false, verdicts?: VerdictCache) {
    this.#reviewsAvailable = reviewsAvailable;
    this.#policy = policy;
    this.#identity = identity;
    this.#maskPlan = maskPlan;
    this.#verdicts = verdicts ? { cache: verdicts, context: verdictContext(policy, identity, maskPlan) } : undefined;
  }

  /** Whether statements need judging at all: some rule could refuse, or a mask plan needs COPY refused. */
  static needed(policy: ConnectionPolicy, maskPlan: MaskPlan | undefined): boolean {
    return policy.defaultAction === 'deny' || policyRules(policy).some((r) => r.action !== undefined) || maskPlan !== undefined;
  }

  /** Judges a simple Query's text, or a Parse's (`preparedName` set: the name it is prepared under). */
  judge(sql: string, preparedName?: string): Judgement {
    const { classification, verdict } = this.#verdictOf(sql);
    if (isEmptyQuery(classification)) return { verdict: emptyQueryVerdict(), refused: false };
    const statements = classification.ok ? classification.statements : undefined;
    if (verdict.action === 'deny' && verdict.syntaxErrorAt !== undefined) {
      // Refused like any unparseable text, but told as what it is: SQLSTATE 42601 with the parser's position.
      return {
        verdict,
        refused: true,
        clientMessage: `hoopctl: ${verdict.message}; the statement was not run`,
        sqlState: SYNTAX_ERROR_SQLSTATE,
        position: verdict.syntaxErrorAt,
      };
    }
    if (verdict.action === 'deny') {
      return { verdict, refused: true, statements, clientMessage: denialMessage(verdict) };
    }
    if (verdict.action === 'review' && this.#reviewsAvailable) {
      // Registered only once approved (admit), so a held PREPARE cannot be executed around its review.
      return { verdict, refused: false, held: true, statements, preparedName };
    }
    if (verdict.action === 'review') {
      const message = `approval is required (${verdict.message}) and approvals are not yet available, so the statement was refused`;
      return { verdict, refused: true, statements, clientMessage: `hoopctl: statement held for review by rule "${verdict.rule}": ${message}` };
    }
    const copy = this.#copyOutUnderColumnMask(sql, statements ?? []);
    if (copy) return { verdict: copy, refused: true, statements, clientMessage: denialMessage(copy) };
    if (statements) this.#register(statements, preparedName);
    return { verdict, refused: false, statements };
  }

  /** The text's classification and verdict: from the cache when it was judged before under the same context. */
  #verdictOf(sql: string): { classification: SqlClassification; verdict: Verdict } {
    const cached = this.#verdicts?.cache.get(this.#verdicts.context, sql);
    if (cached) return cached;
    const classification = classifySql(sql);
    const verdict = evaluateStatements(this.#policy, this.#identity, classification, (name) => this.#prepared.get(name));
    this.#verdicts?.cache.set(this.#verdicts.context, sql, classification, verdict);
    return { classification, verdict };
  }

  /** A held statement was approved: what it prepares becomes known to the session. */
  admit(judgement: Judgement): void {
    if (judgement.statements) this.#register(judgement.statements, judgement.preparedName);
  }

  /** The fast-path function call protocol calls a function by OID: nothing to parse, so it is refused. */
  judgeFunctionCall(functionOid: number): Judgement {
    const verdict: Verdict = {
      action: 'deny',
      rule: FUNCTION_CALL_RULE,
      message: `the fast-path function call protocol (function ${functionOid}) cannot be judged by policy`,
    };
    return { verdict, refused: true, clientMessage: denialMessage(verdict) };
  }

  /** A Bind asking for binary results that cannot be masked; `why` names the column and the setting that avoids it. */
  binaryResultRefused(why: string): Judgement {
    const rules = this.#maskPlan?.rules.join('", "') ?? '';
    const verdict: Verdict = {
      action: 'deny',
      rule: BINARY_RESULT_RULE,
      message: `binary results cannot be masked (mask rule "${rules}"): ${why}`,
    };
    return { verdict, refused: true, clientMessage: denialMessage(verdict) };
  }

  /** A protocol-level Close of a statement. */
  closeStatement(name: string): void {
    this.#prepared.delete(name);
  }

  #register(statements: StatementInfo[], preparedName: string | undefined): void {
    if (preparedName !== undefined && preparedName !== '' && statements.length === 1) this.#prepared.set(preparedName, statements[0]);
    for (const s of statements) if (s.prepared) this.#prepared.set(s.prepared.name, s.prepared.inner);
  }

  /**
   * COPY … TO STDOUT rows carry no column names: under column rules a COPY is allowed only where its columns are
   * known from the text (a query, or a column list) — the masker then masks field by field. Others are refused.
   */
  #copyOutUnderColumnMask(sql: string, statements: StatementInfo[]): Verdict | undefined {
    const plan = this.#maskPlan;
    if (!plan || plan.columns.length === 0) return undefined;
    const index = statements.findIndex((s, i) => s.kinds.includes('CopyStmt') && s.categories.includes('read') && copyOutputColumns(sql, plan, i) === 'unknown');
    if (index < 0) return undefined;
    return {
      action: 'deny',
      rule: plan.rules[0],
      message: copyUnmaskableReason(sql, index),
      statementIndex: index,
    };
  }
}

function denialMessage(verdict: Verdict): string {
  return verdict.rule !== undefined
    ? `hoopctl: statement denied by rule "${verdict.rule}": ${verdict.message}`
    : `hoopctl: statement denied by policy: ${verdict.message}`;
}
