/**
 * Command rules of an SSH connection, and the verdict they give an exec request or an interactive shell.
 *
 * ## Schema (YAML, inside an `ssh` connection of the broker config)
 * ```yaml
 * defaultAction: allow          # allow | deny — when no rule matches a command (default: allow)
 * dynamic: deny                 # deny | review | allow — a command whose effect is only known when it runs
 *                               # ($(…), backticks, `$CMD …`, `… | sh`, case); consulted only when there are rules
 * rules:
 *   - name: no-rm-rf            # unique per connection; named in the client's error
 *     match:
 *       command: ["rm -rf *", "sudo *"]   # any of these patterns (see "Patterns")
 *       identity: { groups: [contractors] }   # as for PostgreSQL rules
 *     action: deny              # allow | deny | review
 *     message: ask an SRE       # optional, shown to the client
 *   - name: break-glass
 *     match: { shell: true }    # interactive shells (no command), judged once when the shell starts
 *     action: review
 * ```
 * ## Patterns
 * A pattern is words separated by spaces. Its first word is a glob on the program (`rm`, `systemctl`,
 * `python*`), matched against the name as written and its last path part (`/bin/rm` is `rm`). An option word
 * (`-rf`, `--force`) must be present in the command, in any order or spelling of short flags (`-r -f`, `-fr`);
 * long and short spellings are different options (list `rm --recursive *` too if it matters). The remaining
 * words are globs matched in order against the command's other arguments; a lone `*` stands for any number of
 * arguments (none included). So `rm -rf *` matches `rm -fr /tmp/x` and `/bin/rm -r -f /`, `sudo *` matches any
 * sudo, and `systemctl status *` matches `systemctl status nginx` but not `systemctl restart nginx`.
 *
 * ## Verdicts
 * - The text is read as a shell would read it (src/policy/shell-words.ts): every command of a `;`, `&&`, `||`
 *   or `|` chain, of subshells and substitutions, and the commands run by wrappers (`sudo`, `env`, `nohup`,
 *   `timeout`, `xargs`, `sh -c`, `bash -c`, `eval`, `su -c` …) is judged on its own, and the text gets the
 *   strictest verdict (deny > review > allow). Within a command: the first matching deny rule, else review,
 *   else allow, else `defaultAction`.
 * - Fail closed: text that cannot be read (an unterminated quote) is denied (rule `unparseable`); a text
 *   whose effect is dynamic gets the `dynamic` action (rule `dynamic-command`).
 * - An interactive shell cannot be judged command by command: rules with `shell: true` decide whether one
 *   may start at all (else `defaultAction`). Its whole terminal is recorded. A shell (with or without a
 *   terminal, e.g. `echo 'rm -rf /' | ssh host`) is a way around command rules, so a connection whose command
 *   rules matter should deny or review shells (`match: { shell: true }`) for all but break-glass identities;
 *   the broker warns at start when it does not. SFTP and port forwarding are governed by the connection's
 *   `allow`, not by command rules.
 */
import { z } from 'zod';
import { globMatch } from './glob.js';
import { identityMatchSchema, identityMatches, type PolicyIdentity, type VerdictAction } from './rules.js';
import { basename, parseShell, type ShellCommand, type ShellParse } from './shell-words.js';

const stringList = z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(z.string().trim().min(1)).min(1));

export const commandMatchSchema = z.strictObject({
  command: stringList.optional(),
  shell: z.literal(true).optional(),
  identity: identityMatchSchema.optional(),
}).refine((m) => !(m.command && m.shell), { message: 'a rule matches either commands or interactive shells (shell: true), not both' });

export const commandRuleSchema = z.strictObject({
  name: z.string().min(1),
  match: commandMatchSchema.optional(),
  action: z.enum(['allow', 'deny', 'review']),
  message: z.string().optional(),
});

export const commandRulesSchema = z.array(commandRuleSchema).superRefine((rules, ctx) => {
  const seen = new Set<string>();
  rules.forEach((r, i) => {
    if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate rule name "${r.name}"` });
    seen.add(r.name);
  });
});

/** The policy fields of an ssh connection, to spread into the broker's connection schema. */
export const commandPolicyShape = {
  defaultAction: z.enum(['allow', 'deny']).default('allow'),
  dynamic: z.enum(['allow', 'deny', 'review']).default('deny'),
  rules: commandRulesSchema.default([]),
};
export const commandPolicySchema = z.object(commandPolicyShape);

export type CommandRule = z.infer<typeof commandRuleSchema>;
export type CommandPolicy = z.infer<typeof commandPolicySchema>;

export const UNPARSEABLE_COMMAND_RULE = 'unparseable';
export const DYNAMIC_COMMAND_RULE = 'dynamic-command';

export interface CommandVerdict {
  action: VerdictAction;
  /** The deciding rule; absent when `defaultAction` decided. */
  rule?: string;
  message: string;
  /** The command (words joined) the verdict is about, when one is. */
  command?: string;
}

const SEVERITY: Record<VerdictAction, number> = { allow: 0, review: 1, deny: 2 };

interface ParsedPattern {
  program: string;
  shortFlags: Set<string>;
  longFlags: string[];
  args: string[];
}

export function parsePattern(pattern: string): ParsedPattern {
  const [program = '', ...rest] = pattern.trim().split(/\s+/);
  const shortFlags = new Set<string>();
  const longFlags: string[] = [];
  const args: string[] = [];
  for (const w of rest) {
    if (w.startsWith('--') && w.length > 2) longFlags.push(w);
    else if (w.startsWith('-') && w.length > 1 && w !== '-*') for (const f of w.slice(1)) shortFlags.add(f);
    else args.push(w);
  }
  return { program, shortFlags, longFlags, args };
}

/** Splits a command's arguments into its options (short flags, long options) and its other arguments. */
function splitArgs(words: string[]): { shortFlags: Set<string>; longFlags: string[]; args: string[] } {
  const shortFlags = new Set<string>();
  const longFlags: string[] = [];
  const args: string[] = [];
  let optionsOver = false;
  for (const w of words) {
    if (!optionsOver && w === '--') {
      optionsOver = true;
      continue;
    }
    if (!optionsOver && w.startsWith('--') && w.length > 2) longFlags.push(w);
    else if (!optionsOver && w.startsWith('-') && w.length > 1) for (const f of w.slice(1)) shortFlags.add(f);
    else args.push(w);
  }
  return { shortFlags, longFlags, args };
}

/** Globs against a sequence of words, a lone `*` standing for any run of words. */
function argsMatch(patterns: string[], args: string[]): boolean {
  if (patterns.length === 0) return args.length === 0;
  const [p, ...restP] = patterns;
  if (p === '*') {
    for (let k = 0; k <= args.length; k++) if (argsMatch(restP, args.slice(k))) return true;
    return false;
  }
  return args.length > 0 && globMatch(p!, args[0]!) && argsMatch(restP, args.slice(1));
}

export function commandMatchesPattern(pattern: string | ParsedPattern, words: string[]): boolean {
  const p = typeof pattern === 'string' ? parsePattern(pattern) : pattern;
  const [program, ...rest] = words;
  if (program === undefined) return false;
  if (!globMatch(p.program, program) && !globMatch(p.program, basename(program))) return false;
  const c = splitArgs(rest);
  for (const f of p.shortFlags) if (!c.shortFlags.has(f)) return false;
  for (const l of p.longFlags) if (!c.longFlags.some((x) => x === l || x.startsWith(`${l}=`))) return false;
  return argsMatch(p.args, c.args);
}

function ruleApplies(rule: CommandRule, identity: PolicyIdentity, command: ShellCommand | 'shell'): boolean {
  if (!identityMatches(rule.match?.identity, identity)) return false;
  if (command === 'shell') return rule.match?.shell === true;
  if (rule.match?.shell) return false;
  if (!rule.match?.command) return true;
  return rule.match.command.some((p) => commandMatchesPattern(p, command.words));
}

function verdictFor(rule: CommandRule, command?: string): CommandVerdict {
  const what = command ? `"${command}" ` : '';
  const message =
    rule.message ??
    (rule.action === 'deny'
      ? `command ${what}denied by policy rule "${rule.name}"`
      : rule.action === 'review'
        ? `command ${what}held for review by policy rule "${rule.name}"`
        : `allowed by policy rule "${rule.name}"`);
  return { action: rule.action, rule: rule.name, message, ...(command ? { command } : {}) };
}

function judge(policy: CommandPolicy, identity: PolicyIdentity, subject: ShellCommand | 'shell'): CommandVerdict {
  const text = subject === 'shell' ? undefined : subject.words.join(' ');
  for (const action of ['deny', 'review', 'allow'] as const) {
    const rule = policy.rules.find((r) => r.action === action && ruleApplies(r, identity, subject));
    if (rule) return verdictFor(rule, text);
  }
  if (policy.defaultAction === 'deny') {
    return {
      action: 'deny',
      message: subject === 'shell' ? 'no policy rule allows an interactive shell (default: deny)' : `no policy rule allows "${text}" (default: deny)`,
      ...(text ? { command: text } : {}),
    };
  }
  return { action: 'allow', message: 'allowed by default' };
}

/** The verdict for an exec request's command text: the strictest over every command it would run. */
export function evaluateCommand(policy: CommandPolicy, identity: PolicyIdentity, text: string, parsed: ShellParse = parseShell(text)): CommandVerdict {
  if (!parsed.ok) return { action: 'deny', rule: UNPARSEABLE_COMMAND_RULE, message: `command could not be read: ${parsed.error}` };
  const judged = policy.rules.length > 0 || policy.defaultAction === 'deny';
  if (!judged) return { action: 'allow', message: 'allowed by default' };
  let worst: CommandVerdict | undefined;
  const consider = (v: CommandVerdict) => {
    if (!worst || SEVERITY[v.action] > SEVERITY[worst.action]) worst = v;
  };
  for (const c of parsed.commands) consider(judge(policy, identity, c));
  if (parsed.dynamic.length > 0 && policy.dynamic !== 'allow') {
    consider({
      action: policy.dynamic, rule: DYNAMIC_COMMAND_RULE,
      message: `command ${policy.dynamic === 'deny' ? 'denied' : 'held for review'}: ${parsed.dynamic[0]} (rule "${DYNAMIC_COMMAND_RULE}")`,
    });
  }
  if (parsed.commands.length === 0 && !worst) return { action: 'allow', message: 'no command to run' };
  return worst!;
}

/** The verdict for an interactive shell (a `shell` request, with or without a terminal). */
export function evaluateShell(policy: CommandPolicy, identity: PolicyIdentity): CommandVerdict {
  const v = judge(policy, identity, 'shell');
  return v.rule && v.action !== 'allow' && !policy.rules.find((r) => r.name === v.rule)?.message
    ? { ...v, message: `interactive shell ${v.action === 'deny' ? 'denied' : 'held for review'} by policy rule "${v.rule}"` }
    : v;
}
