/**
 * Statement rules and masking rules of one connection, and the verdict they give.
 *
 * ## Schema (YAML, inside a connection of the broker config)
 * ```yaml
 * defaultAction: allow            # allow | deny — when no rule matches a statement (default: allow)
 * preset: production              # optional: PRESET_RULES below, judged with `rules`
 * rules:                          # evaluated per statement; see "Verdicts" below
 *   - name: no-ddl                # unique per connection; named in the client's error (SQLSTATE 42501)
 *     match:                      # optional; all fields given must match (AND); a list inside a field is any-of (OR)
 *       effects: [delete, update]   # what happens, from any spelling: SQL_EFFECTS in sql-classifier.ts
 *       statement: [DropStmt, TruncateStmt, AlterTableStmt]  # parser node kinds, incl. nested ones (CTE, DO body …)
 *       category: [ddl, admin]    # read write ddl admin session transaction copy copy-program dynamic call lock utility
 *       tables: ["payroll.*", "public.users"]   # globs on schema.table, read or written
 *       tablesRead: ["payroll.*"]
 *       tablesWritten: ["public.*"]
 *       functions: ["dblink*", pg_terminate_backend]   # globs; `name` matches in any schema, `schema.name` exactly
 *       where: absent             # absent | present — UPDATE/DELETE without a WHERE on a column, TRUNCATE, bare MERGE
 *       roleChange: true          # SET ROLE, SET SESSION AUTHORIZATION, RESET ROLE/ALL, DISCARD ALL, set_config('role')
 *       identity:                 # groups / subjects / clientIds: any of them; kind: also required when given
 *         groups: [contractors]
 *         subjects: [alice@example.com]
 *         clientIds: [ci-reporting]   # service accounts only (a human's token also names the CLI's client id)
 *         kind: service           # human | service
 *     action: deny                # allow | deny | review
 *     maxAffectedRows: 100        # deny/review only: the row guard — the write runs in a savepoint and only more rows
 *                                 # than this (its command tag) refuse it; see the README "The row guard"
 *     message: DDL goes through migrations   # optional, shown to the client
 *   - name: pii                   # a masking rule: `mask` instead of `action`
 *     match: { identity: { groups: [contractors] } }   # optional (masks for everyone); only `identity` allowed here
 *     mask:
 *       columns: [email, "customers.ssn", "*.card"]   # column, table.column, schema.table.column; globs; any case
 *       detectors: [email, credit_card, us_ssn, phone, iban, ipv4, ipv6, jwt, aws_access_key, private_key, secret_token]
 *       strategy: redact          # redact | partial (keep last 4) | hash (keyed, joinable) | null — default redact
 * ```
 * A single string is accepted wherever a list is (`statement: DropStmt`). `aws_key` is accepted for
 * `aws_access_key`. Unknown fields are errors, so a typo never silently widens access.
 *
 * ## Verdicts
 * - Each statement of a text is judged on its own; the text gets the strictest verdict (deny > review > allow).
 * - Within a statement: the first matching `deny` rule wins; else the first `review`; else the first `allow`;
 *   else `defaultAction`.
 * - Deny and review rules match broadly: a statement matches when *any* of its kinds, categories, tables or functions
 *   is listed, and an unqualified table name (`users`) matches `payroll.users` — search_path could point anywhere.
 *   So a schema-wide deny (`tables: ["payroll.*"]`) catches every unqualified table name: qualify names, or deny
 *   by table name (`tables: ["salaries"]`) instead.
 * - Allow rules match narrowly: *every* kind, category, table and function of the statement must be covered, and an
 *   unqualified table name only matches a pattern whose schema part is `*` or absent. So an allow rule for
 *   `category: [read]` never lets through a SELECT that also deletes in a CTE or calls set_config('role', …).
 * - Effects fail closed: a deny or review rule naming `effects` matches every statement whose effects include
 *   `unknown` (DO, dynamic SQL, non-built-in functions, triggers …), whatever its `effects` and `tables` lists say.
 * - `where: absent` is syntactic (a WHERE naming a column counts as a bound, `WHERE id = id` too); use effects.
 * - Fail closed: unparseable text is denied (rule `unparseable`); EXECUTE of a prepared statement the session
 *   does not know is denied (rule `unknown-prepared-statement`); PREPARE is judged by the statement it prepares.
 *
 * ## Example: a read-only, per-schema grant
 * ```yaml
 * defaultAction: deny
 * rules:
 *   - name: analysts-read-reporting
 *     match:
 *       identity: { groups: [analysts] }
 *       category: [read, transaction]
 *       tables: ["reporting.*"]
 *     action: allow
 *   - name: dba-all
 *     match: { identity: { groups: [dba] } }
 *     action: allow
 *   - { name: no-drop, match: { statement: [DropStmt, TruncateStmt] }, action: deny }
 * ```
 * Analysts may run `select … from reporting.sales` (and BEGIN/COMMIT); `select … from sales` (unqualified),
 * `select … from public.users`, any write, and `select set_config('role', …)` are denied. DBAs may do anything
 * except what a deny rule names.
 */
import { z } from 'zod';
import { qualifiedMatches } from './glob.js';
import { claimsMatch } from './access.js';
import { DETECTOR_NAMES, MASK_STRATEGIES, type MaskPlan, type MaskStrategy, type DetectorName, stricterStrategy } from './mask-plan.js';
import {
  SQL_CATEGORIES,
  SQL_EFFECTS,
  mergeStatementInfo,
  type SqlClassification,
  type StatementInfo,
} from './sql-classifier.js';

const nonEmpty = z.string().min(1);

/** A list of strings, or one string standing for a list of one. */
function stringList<T extends z.ZodType<string>>(item: T) {
  return z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(item).min(1));
}

const statementKind = z
  .string()
  .refine((s) => s.length > 4 && s.endsWith('Stmt') && s[0] >= 'A' && s[0] <= 'Z', {
    message: 'statement kinds are parser node names such as DropStmt, DeleteStmt, SelectStmt',
  });

export const identityMatchSchema = z.strictObject({
  groups: stringList(nonEmpty).optional(),
  subjects: stringList(nonEmpty).optional(),
  clientIds: stringList(nonEmpty).optional(),
  kind: z.enum(['human', 'service']).optional(),
  /** Token claims (globs), all required, like `kind`: `{ ref: refs/heads/main }` for CI jobs off the main branch. */
  claims: z.record(nonEmpty, z.union([nonEmpty, z.array(nonEmpty).min(1)])).optional(),
});

export const statementMatchSchema = z.strictObject({
  effects: stringList(z.enum(SQL_EFFECTS)).optional(),
  statement: stringList(statementKind).optional(),
  category: stringList(z.enum(SQL_CATEGORIES)).optional(),
  tables: stringList(nonEmpty).optional(),
  tablesRead: stringList(nonEmpty).optional(),
  tablesWritten: stringList(nonEmpty).optional(),
  functions: stringList(nonEmpty).optional(),
  where: z.enum(['absent', 'present']).optional(),
  roleChange: z.boolean().optional(),
  identity: identityMatchSchema.optional(),
});

const detectorName = z.preprocess((v) => (v === 'aws_key' ? 'aws_access_key' : v), z.enum(DETECTOR_NAMES));

export const maskSpecSchema = z
  .strictObject({
    columns: stringList(nonEmpty).optional(),
    detectors: z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(detectorName).min(1)).optional(),
    strategy: z.enum(MASK_STRATEGIES).default('redact'),
  })
  .refine((m) => (m.columns?.length ?? 0) + (m.detectors?.length ?? 0) > 0, {
    message: 'a mask needs columns or detectors',
  });

export const policyRuleSchema = z
  .strictObject({
    name: nonEmpty,
    match: statementMatchSchema.optional(),
    action: z.enum(['allow', 'deny', 'review']).optional(),
    /**
     * The row guard: a matching DELETE/UPDATE/MERGE/INSERT runs in a savepoint and is refused (action deny, or
     * held for review) only when its command tag reports more rows than this.
     */
    maxAffectedRows: z.number().int().min(0).optional(),
    message: z.string().optional(),
    mask: maskSpecSchema.optional(),
  })
  .superRefine((rule, ctx) => {
    if (rule.maxAffectedRows !== undefined && rule.action !== 'deny' && rule.action !== 'review') {
      ctx.addIssue({ code: 'custom', path: ['maxAffectedRows'], message: `rule "${rule.name}": maxAffectedRows needs action deny or review (what happens above the limit)` });
    }
    if ((rule.action === undefined) === (rule.mask === undefined)) {
      ctx.addIssue({ code: 'custom', message: `rule "${rule.name}": give exactly one of action or mask` });
    }
    if (rule.mask && rule.match) {
      const extra = Object.keys(rule.match).filter((k) => k !== 'identity');
      if (extra.length > 0) {
        ctx.addIssue({
          code: 'custom',
          path: ['match'],
          message: `mask rule "${rule.name}" may only match on identity (not ${extra.join(', ')})`,
        });
      }
    }
  });

export const policyRulesSchema = z.array(policyRuleSchema).superRefine((rules, ctx) => {
  const seen = new Set<string>();
  rules.forEach((r, i) => {
    if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate rule name "${r.name}"` });
    seen.add(r.name);
  });
});

export const defaultActionSchema = z.enum(['allow', 'deny']).default('allow');

export const POLICY_PRESETS = ['production'] as const;
export type PolicyPreset = (typeof POLICY_PRESETS)[number];

const PRESET_PREFIX = 'production/';
/** The production preset's row guard: a write touching more rows than this is rolled back and held for review. */
export const PRODUCTION_MAX_AFFECTED_ROWS = 10;

/**
 * `preset: production`: what no one should do by hand on a production database, in every spelling. The rules are
 * judged with the connection's own (deny beats allow, so an allow rule cannot open what the preset refuses).
 * Unknowable statements (DO, dynamic SQL, functions that are not built-ins, COPY … PROGRAM, triggers) come first
 * so that they are refused under their own name; every change of rows (DELETE, UPDATE, MERGE, ON CONFLICT DO
 * UPDATE) runs under the row guard, because only the rows it touches — which the text cannot tell — say whether it
 * is the one-row fix or the whole table: above the limit it is rolled back and held for review. Writes whose rows
 * cannot be counted (data-modifying CTEs, the extended protocol) are held for review outright.
 */
export const PRESET_RULES: Record<PolicyPreset, PolicyRule[]> = {
  production: [
    {
      name: `${PRESET_PREFIX}no-unknowable-code`,
      match: { effects: ['code', 'unknown'] },
      action: 'deny',
      message: 'DO blocks, dynamic SQL, functions and procedures that are not PostgreSQL built-ins, triggers, rules, COPY … PROGRAM and new functions cannot be judged, so production refuses them',
    },
    {
      name: `${PRESET_PREFIX}no-schema-change`,
      match: { effects: ['schema', 'truncate'] },
      action: 'deny',
      message: 'schema changes (CREATE, ALTER, DROP, RENAME, TRUNCATE, SELECT INTO …) go through migrations',
    },
    {
      name: `${PRESET_PREFIX}no-privilege-change`,
      match: { effects: ['privilege'] },
      action: 'deny',
      message: 'privileges and roles (GRANT, REVOKE, CREATE/ALTER ROLE, SET ROLE, SET SESSION AUTHORIZATION) do not change by hand',
    },
    {
      name: `${PRESET_PREFIX}no-server-config`,
      match: { effects: ['config'] },
      action: 'deny',
      message: 'server, database and role settings (ALTER SYSTEM, ALTER DATABASE/ROLE … SET, pg_reload_conf) do not change by hand',
    },
    {
      name: `${PRESET_PREFIX}no-server-access`,
      match: { effects: ['server'] },
      action: 'deny',
      message: 'the server itself (its files, programs, other backends, replication, maintenance) is out of reach',
    },
    {
      name: `${PRESET_PREFIX}row-guard`,
      match: { effects: ['delete', 'update'] },
      maxAffectedRows: PRODUCTION_MAX_AFFECTED_ROWS,
      action: 'review',
      message: 'production row guard',
    },
  ],
};

/** The two policy fields of a connection, to spread into the broker's connection schema. */
export const connectionPolicyShape = {
  defaultAction: defaultActionSchema,
  /** Rules judged together with `rules`, named `production/…` (see `PRESET_RULES`). */
  preset: z.enum(POLICY_PRESETS).optional(),
  rules: policyRulesSchema.default([]),
};

export const connectionPolicySchema = z.object(connectionPolicyShape);

export type IdentityMatch = z.infer<typeof identityMatchSchema>;
export type StatementMatch = z.infer<typeof statementMatchSchema>;
export type PolicyRule = z.infer<typeof policyRuleSchema>;
export type ConnectionPolicy = z.infer<typeof connectionPolicySchema>;

export interface PolicyIdentity {
  subject: string;
  kind: 'human' | 'service';
  clientId?: string;
  groups: string[];
  claims?: Record<string, string>;
}

export type VerdictAction = 'allow' | 'deny' | 'review';

/** A write allowed to run only inside the row guard: more rows than `maxAffectedRows` and it is undone. */
export interface RowGuard {
  rule: string;
  maxAffectedRows: number;
  /** What happens above the limit. */
  action: 'deny' | 'review';
  message?: string;
}

export interface Verdict {
  action: VerdictAction;
  /** With action allow: the statement runs under this row guard. */
  guard?: RowGuard;
  /** The deciding rule; absent when `defaultAction` decided. */
  rule?: string;
  message: string;
  /** Index of the statement (in the text) whose verdict this is. */
  statementIndex?: number;
  /** Denied as a syntax error at this 1-based character of the text. */
  syntaxErrorAt?: number;
}

/** Resolves `EXECUTE name` to the classification of the statement the session prepared under that name. */
export type ResolvePrepared = (name: string) => StatementInfo | undefined;

export const UNPARSEABLE_RULE = 'unparseable';
export const UNKNOWN_PREPARED_RULE = 'unknown-prepared-statement';

const SEVERITY: Record<VerdictAction, number> = { allow: 0, review: 1, deny: 2 };

export function identityMatches(match: IdentityMatch | undefined, who: PolicyIdentity): boolean {
  if (!match) return true;
  if (match.kind !== undefined && match.kind !== who.kind) return false;
  if (match.claims !== undefined && !claimsMatch(match.claims, who)) return false;
  const named = match.groups !== undefined || match.subjects !== undefined || match.clientIds !== undefined;
  if (!named) return true;
  if (match.groups?.some((g) => who.groups.includes(g))) return true;
  if (match.subjects?.includes(who.subject)) return true;
  return who.kind === 'service' && who.clientId !== undefined && (match.clientIds?.includes(who.clientId) ?? false);
}

/** `broad` for deny/review (any listed thing present), narrow for allow (nothing outside the lists). */
function listMatches<T>(items: readonly T[], test: (item: T) => boolean, broad: boolean): boolean {
  return broad ? items.some(test) : items.every(test);
}

function functionRef(name: string): { schema?: string; name: string } {
  const parts = name.split('.');
  return parts.length === 1 ? { name } : { schema: parts[parts.length - 2], name: parts[parts.length - 1] };
}

/** A matcher's lists as sets, made once per matcher (config objects are not changed once parsed). */
interface MatchSets {
  effects?: Set<string>;
  kinds?: Set<string>;
  categories?: Set<string>;
  functions?: string[];
}
const matchSets = new WeakMap<StatementMatch, MatchSets>();

function setsOf(match: StatementMatch): MatchSets {
  let sets = matchSets.get(match);
  if (!sets) {
    sets = {
      ...(match.effects ? { effects: new Set<string>(match.effects) } : {}),
      ...(match.statement ? { kinds: new Set(match.statement.map((k) => k.toLowerCase())) } : {}),
      ...(match.category ? { categories: new Set<string>(match.category) } : {}),
      ...(match.functions ? { functions: match.functions.map((f) => f.toLowerCase()) } : {}),
    };
    matchSets.set(match, sets);
  }
  return sets;
}

export function statementMatches(match: StatementMatch | undefined, info: StatementInfo, broad: boolean): boolean {
  if (!match) return true;
  const sets = setsOf(match);
  // A deny or review rule naming effects cannot rule out that an unknowable statement has them, on any table.
  const unknowable = broad && match.effects !== undefined && info.effects.includes('unknown');
  if (sets.effects && !unknowable) {
    const effects = sets.effects;
    if (!listMatches(info.effects, (e) => effects.has(e), broad)) return false;
  }
  if (sets.kinds) {
    const kinds = sets.kinds;
    if (!listMatches(info.kinds, (k) => kinds.has(k.toLowerCase()), broad)) return false;
  }
  if (sets.categories) {
    const cats = sets.categories;
    if (!listMatches(info.categories, (c) => cats.has(c), broad)) return false;
  }
  const tableTest = (patterns: string[]) => (t: { schema?: string; name: string }) =>
    patterns.some((p) => qualifiedMatches(p, t, broad));
  if (!unknowable) {
    if (match.tables && !listMatches([...info.tablesRead, ...info.tablesWritten], tableTest(match.tables), broad)) return false;
    if (match.tablesRead && !listMatches(info.tablesRead, tableTest(match.tablesRead), broad)) return false;
    if (match.tablesWritten && !listMatches(info.tablesWritten, tableTest(match.tablesWritten), broad)) return false;
  }
  if (sets.functions) {
    const patterns = sets.functions;
    if (!listMatches(info.functions, (f) => patterns.some((p) => qualifiedMatches(p, functionRef(f), broad)), broad)) {
      return false;
    }
  }
  if (match.where !== undefined && info.whereAbsent !== (match.where === 'absent')) return false;
  if (match.roleChange !== undefined && (info.setRole || info.setSessionAuthorization) !== match.roleChange) return false;
  return true;
}

function ruleMatches(rule: PolicyRule, identity: PolicyIdentity, info: StatementInfo): boolean {
  if (!identityMatches(rule.match?.identity, identity)) return false;
  return statementMatches(rule.match, info, rule.action !== 'allow');
}

function verdictForRule(rule: PolicyRule, action: VerdictAction): Verdict {
  const fallback =
    action === 'deny'
      ? `denied by policy rule "${rule.name}"`
      : action === 'review'
        ? `held for review by policy rule "${rule.name}"`
        : `allowed by policy rule "${rule.name}"`;
  return { action, rule: rule.name, message: rule.message ?? fallback };
}

/** Text of only comments or whitespace: the server runs nothing, so there is nothing to refuse. */
export function emptyQueryVerdict(): Verdict {
  return { action: 'allow', message: 'empty query: only comments or whitespace, the server runs nothing' };
}

/** The connection's rules with its preset's rules first. */
export function policyRules(policy: Pick<ConnectionPolicy, 'rules' | 'preset'>): PolicyRule[] {
  return policy.preset ? [...PRESET_RULES[policy.preset], ...policy.rules] : policy.rules;
}

/** The verdict for one statement (already resolved when it EXECUTEs a prepared statement). */
/** A policy's rules that act (not mask), and of them those without a row guard: made once per policy object. */
const actingRules = new WeakMap<ConnectionPolicy, { actionRules: PolicyRule[]; plain: PolicyRule[] }>();

function rulesOf(policy: ConnectionPolicy): { actionRules: PolicyRule[]; plain: PolicyRule[] } {
  let rules = actingRules.get(policy);
  if (!rules) {
    const actionRules = policyRules(policy).filter((r) => r.action !== undefined);
    rules = { actionRules, plain: actionRules.filter((r) => r.maxAffectedRows === undefined) };
    actingRules.set(policy, rules);
  }
  return rules;
}

export function evaluateStatement(policy: ConnectionPolicy, identity: PolicyIdentity, info: StatementInfo): Verdict {
  const { actionRules, plain } = rulesOf(policy);
  for (const action of ['deny', 'review'] as const) {
    const rule = plain.find((r) => r.action === action && ruleMatches(r, identity, info));
    if (rule) return verdictForRule(rule, action);
  }
  const allowRule = plain.find((r) => r.action === 'allow' && ruleMatches(r, identity, info));
  const allowed: Verdict = allowRule
    ? verdictForRule(allowRule, 'allow')
    : policy.defaultAction === 'deny'
      ? { action: 'deny', message: 'no policy rule allows this statement (default: deny)' }
      : { action: 'allow', message: 'allowed by default' };
  // Several guards: the tightest limit holds (a connection's rule can tighten a preset's, never loosen it).
  const guardRule = allowed.action === 'allow'
    ? actionRules
        .filter((r) => r.maxAffectedRows !== undefined && ruleMatches(r, identity, info))
        .sort((a, b) => a.maxAffectedRows! - b.maxAffectedRows! || SEVERITY[b.action!] - SEVERITY[a.action!])[0]
    : undefined;
  if (!guardRule) return allowed;
  const action = guardRule.action as 'deny' | 'review';
  if (!rowsCountable(info)) {
    // Only a top-level write's command tag says how many rows it changed; anything else cannot be guarded.
    return {
      ...verdictForRule(guardRule, action),
      message: `${guardRule.message ?? `row guard of rule "${guardRule.name}"`}: the rows this statement changes cannot be counted (a data-modifying CTE, EXPLAIN ANALYZE, DO, a function, several writes), so it is ${action === 'deny' ? 'refused' : 'held for review'}`,
    };
  }
  return {
    ...allowed,
    guard: { rule: guardRule.name, maxAffectedRows: guardRule.maxAffectedRows!, action, ...(guardRule.message ? { message: guardRule.message } : {}) },
  };
}

const COUNTABLE_WRITES = new Set(['DeleteStmt', 'UpdateStmt', 'MergeStmt', 'InsertStmt']);

/** One write at the top (or one EXECUTE of it), whose command tag reports the rows it changed. */
function rowsCountable(info: StatementInfo): boolean {
  if (info.dataModifyingCte || info.explainAnalyze || info.effects.includes('unknown')) return false;
  const kinds = info.kind === 'ExecuteStmt' ? info.kinds.slice(1) : info.kinds;
  const top = kinds[0];
  if (top === undefined || !COUNTABLE_WRITES.has(top)) return false;
  return kinds.slice(1).every((k) => k === 'SelectStmt');
}

/** Text of a row guard's refusal: `would delete 1000 rows …`. */
export function rowGuardMessage(guard: RowGuard, tag: string, rows: number): string {
  const verb = tag.startsWith('DELETE') ? 'delete' : tag.startsWith('UPDATE') ? 'update' : tag.startsWith('INSERT') ? 'insert or update' : 'change';
  const base = `would ${verb} ${rows} row${rows === 1 ? '' : 's'}, more than the ${guard.maxAffectedRows} rule "${guard.rule}" allows (maxAffectedRows); it was rolled back`;
  return guard.message ? `${guard.message}: ${base}` : base;
}

/**
 * The verdict for a whole text: the strictest over its statements (the first one among equals).
 * `resolvePrepared` answers EXECUTE from the session's prepared statements; without it, EXECUTE is denied.
 */
export function evaluateStatements(
  policy: ConnectionPolicy,
  identity: PolicyIdentity,
  classification: SqlClassification,
  resolvePrepared?: ResolvePrepared,
): Verdict {
  if (!classification.ok) {
    // A typo is not a permission problem: say it is a syntax error, and where, as PostgreSQL would.
    if (classification.syntaxErrorAt !== undefined) {
      return { action: 'deny', rule: UNPARSEABLE_RULE, message: `${classification.error} at character ${classification.syntaxErrorAt}`, syntaxErrorAt: classification.syntaxErrorAt };
    }
    return { action: 'deny', rule: UNPARSEABLE_RULE, message: `statement could not be parsed: ${classification.error}` };
  }
  let worst: Verdict | undefined;
  classification.statements.forEach((statement, index) => {
    let verdict: Verdict;
    let info = statement;
    if (statement.executesPrepared !== undefined) {
      const inner = resolvePrepared?.(statement.executesPrepared);
      info = inner ? mergeStatementInfo(statement, inner) : statement;
      verdict = inner
        ? evaluateStatement(policy, identity, info)
        : {
            action: 'deny',
            rule: UNKNOWN_PREPARED_RULE,
            message: `prepared statement "${statement.executesPrepared}" is unknown to the policy`,
          };
    } else {
      verdict = evaluateStatement(policy, identity, info);
    }
    if (verdict.guard && classification.statements.length > 1) {
      // The guard runs one statement in its own savepoint and reads its tag: not one of several in a text.
      verdict = {
        action: verdict.guard.action,
        rule: verdict.guard.rule,
        message: `the row guard of rule "${verdict.guard.rule}" needs this write sent as a statement of its own, not one of ${classification.statements.length} in one text`,
      };
    }
    if (!worst || SEVERITY[verdict.action] > SEVERITY[worst.action] || (verdict.guard && !worst.guard && verdict.action === worst.action)) {
      worst = { ...verdict, statementIndex: index };
    }
  });
  return worst ?? { action: 'deny', rule: UNPARSEABLE_RULE, message: 'empty statement' };
}

/** The masking that applies to `identity`, merged over every mask rule that matches it; undefined when none. */
export function maskPlanFor(policy: ConnectionPolicy, identity: PolicyIdentity): MaskPlan | undefined {
  const rules = policy.rules.filter((r) => r.mask !== undefined && identityMatches(r.match?.identity, identity));
  if (rules.length === 0) return undefined;
  const columns = new Set<string>();
  const detectors = new Set<DetectorName>();
  let strategy: MaskStrategy | undefined;
  for (const r of rules) {
    const mask = r.mask!;
    mask.columns?.forEach((c) => columns.add(c));
    mask.detectors?.forEach((d) => detectors.add(d));
    strategy = strategy === undefined ? mask.strategy : stricterStrategy(strategy, mask.strategy);
  }
  return {
    rules: rules.map((r) => r.name),
    columns: [...columns],
    detectors: DETECTOR_NAMES.filter((d) => detectors.has(d)),
    strategy: strategy ?? 'redact',
  };
}

/** Validates a policy, with errors that name the offending field. */
export function parseConnectionPolicy(input: unknown): { ok: true; policy: ConnectionPolicy } | { ok: false; error: string } {
  const result = connectionPolicySchema.safeParse(input);
  if (result.success) return { ok: true, policy: result.data };
  return { ok: false, error: z.prettifyError(result.error) };
}
