import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { loadBrokerConfig } from '../broker/config.js';
import { protocolOf } from '../broker/protocols/registry.js';
import { judgeAccess, verdictWithAccess, type VerdictStage } from '../policy/dry-run.js';
import { POLICY_PRESETS, PRESET_RULES, type PolicyIdentity } from '../policy/rules.js';
import { SQL_CATEGORIES, SQL_EFFECTS, SQL_EFFECT_DESCRIPTIONS, STATEMENT_KINDS } from '../policy/sql-classifier.js';
import { UserError } from '../lib/errors.js';
import { parseOutput } from './context.js';
import { printJson } from './render.js';

export function register(program: Command): void {
  const policy = program.command('policy').description('Work with connection policies offline');
  policy
    .command('kinds')
    .description('List what PostgreSQL statement rules can match: effects, categories, statement kinds, presets')
    .option('-o, --output <format>', 'text or json', 'text')
    .addHelpText('after', '\nExample:\n  hoopctl policy kinds\n  hoopctl policy kinds -o json | jq .effects\n')
    .action((opts: { output: string }) => printKinds(parseOutput(opts.output)));
  policy
    .command('check')
    .description('Dry-run the broker: whether an identity may open the connection (access), then the verdict of its rules for SQL, a shell command or an HTTP/Kubernetes request, and what decided it')
    .requiredOption('-c, --config <file>', 'broker configuration (YAML)')
    .requiredOption('--connection <name>', 'connection whose rules apply')
    .option('--as <attr=value>', 'identity: group=G, subject=S, client=ID or clientId=ID (a service account), kind=human|service, claim.NAME=V (a token claim); repeatable', collect, [])
    .option('-e, --execute <text>', 'what to judge: SQL (postgres), a command (ssh), "METHOD /path" (http, kubernetes)')
    .option('-f, --file <file>', 'read it from a file')
    .option('--shell', 'ssh: judge opening an interactive shell instead of a command')
    .option('--expect <action>', 'exit 1 unless the verdict is this action (allow, deny or review)')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('-v, --verbose', 'SQL: also print each statement\'s effects (what effect rules match) and categories')
    .addHelpText(
      'after',
      '\nExamples:\n  hoopctl policy check --config broker.yaml --connection pg-prod --as group=analysts -e "delete from orders"\n' +
        '  hoopctl policy check -v --config broker.yaml --connection pg-prod -e "merge into orders o using s on o.id = s.id when matched then delete"\n' +
        '  hoopctl policy check --config broker.yaml --connection web-1 --as client=deploy-bot -e "sudo systemctl restart nginx"\n' +
        '  hoopctl policy check --config broker.yaml --connection k8s-prod --as group=sre -e "DELETE /api/v1/namespaces/prod"\n',
    )
    .action(async (opts: { config: string; connection: string; as: string[]; execute?: string; file?: string; expect?: string; output: string; shell?: boolean; verbose?: boolean }) => {
      const format = parseOutput(opts.output);
      const config = loadBrokerConfig(opts.config, process.env, { secrets: 'skip' });
      const connection = config.connections.find((c) => c.name === opts.connection);
      if (!connection) throw new UserError(`no connection named ${opts.connection} in ${opts.config}`, { code: 'USAGE', hint: `known: ${config.connections.map((c) => c.name).join(', ') || 'none'}` });
      const identity = parseIdentity(opts.as);
      // The broker decides who may open the connection before any rule sees a statement: so does the dry run.
      const access = judgeAccess(identity, connection.access, connection.name);
      const text = opts.execute ?? (opts.file ? readFileSync(opts.file, 'utf8') : undefined);
      const headline = (v: { action: string; rule?: string; message: string; stage: VerdictStage; guard?: { rule: string; maxAffectedRows: number; action: string } }) =>
        `${v.action.toUpperCase()}${v.stage === 'access' ? ' (access)' : v.rule ? ` by rule "${v.rule}"` : ' (default action)'}: ${v.message}` +
        (v.guard ? `; runs under the row guard of rule "${v.guard.rule}": more than ${v.guard.maxAffectedRows} rows and it is rolled back (${v.guard.action})` : '') + '\n';
      const onceGranted = (rules: { action: string; rule?: string; message: string }) =>
        access.approval ? `once granted: ${rules.action.toUpperCase()}${rules.rule ? ` by rule "${rules.rule}"` : ' (default action)'}: ${rules.message}\n` : '';
      // The module's own judge: the functions its proxy uses. A type without rules is decided by access alone.
      const module = protocolOf(connection.type);
      const result = access.admitted && module.judge ? await module.judge(connection, identity, { text, shell: Boolean(opts.shell) }) : undefined;
      const verdict = verdictWithAccess(access, access.admitted ? (result?.verdict ?? { action: 'allow', message: `${connection.type} connections have no rules: access decides` }) : undefined);
      if (format === 'json') printJson({ ...result, statements: result?.statements ?? [], verdict, access, ...(access.approval && result ? { granted: result.verdict } : {}) });
      else {
        process.stdout.write(headline(verdict) + (result ? onceGranted(result.verdict) : ''));
        for (const s of result?.statements ?? []) {
          // `guard`: allowed only under the row guard (rolled back above its limit).
          process.stdout.write(`  ${(s.verdict.guard ? 'guard' : s.verdict.action).padEnd(6)} ${s.kind.padEnd(18)} ${s.text.replace(/\s+/g, ' ').trim().slice(0, 100)}\n`);
          if (opts.verbose && s.effects) {
            process.stdout.write(`         effects: ${s.effects.join(', ') || 'none'} · categories: ${(s.categories ?? []).join(', ')}\n`);
          }
        }
        if (result?.mask) {
          process.stdout.write(`masking for this identity: ${result.mask.strategy}; columns ${result.mask.columns.join(', ') || 'none'}; detectors ${result.mask.detectors.join(', ') || 'none'}\n`);
        }
      }
      if (opts.expect && opts.expect !== verdict.action) process.exitCode = 1;
    });
}

/** Everything a PostgreSQL rule's `match` may name, for writing rules without reading the source. */
function printKinds(format: 'text' | 'json'): void {
  const presets = Object.fromEntries(POLICY_PRESETS.map((p) => [p, PRESET_RULES[p].map((r) => ({ name: r.name, match: r.match, action: r.action, ...(r.maxAffectedRows !== undefined ? { maxAffectedRows: r.maxAffectedRows } : {}) }))]));
  if (format === 'json') {
    printJson({ effects: SQL_EFFECTS.map((e) => ({ name: e, covers: SQL_EFFECT_DESCRIPTIONS[e] })), categories: SQL_CATEGORIES, statements: STATEMENT_KINDS, presets });
    return;
  }
  const out: string[] = ['Effects (match.effects) — what a statement does, however it is spelled:'];
  const width = Math.max(...SQL_EFFECTS.map((e) => e.length));
  for (const e of SQL_EFFECTS) out.push(`  ${e.padEnd(width)}  ${SQL_EFFECT_DESCRIPTIONS[e]}`);
  out.push('', `Categories (match.category): ${SQL_CATEGORIES.join(', ')}`, '', 'Statement kinds (match.statement), parser node names:');
  for (let i = 0; i < STATEMENT_KINDS.length; i += 4) out.push(`  ${STATEMENT_KINDS.slice(i, i + 4).join(', ')}`);
  out.push('', 'Presets (preset: NAME):');
  for (const p of POLICY_PRESETS) {
    for (const r of PRESET_RULES[p]) {
      const guard = r.maxAffectedRows !== undefined ? ` (row guard: above ${r.maxAffectedRows} rows)` : '';
      out.push(`  ${r.name.padEnd(34)} ${String(r.action).padEnd(6)} effects: ${(r.match?.effects ?? []).join(', ')}${guard}`);
    }
  }
  process.stdout.write(out.join('\n') + '\n');
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function parseIdentity(pairs: string[]): PolicyIdentity {
  const identity: PolicyIdentity = { subject: 'policy-check', kind: 'human', groups: [] };
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    const key = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    if (eq <= 0 || !value) throw new UserError(`--as expects attr=value, got "${pair}"`, { code: 'USAGE' });
    if (key === 'group') identity.groups.push(value);
    else if (key === 'subject') identity.subject = value;
    else if (key === 'client' || key === 'clientId') {
      identity.clientId = value;
      identity.kind = 'service';
    } else if (key === 'kind' && (value === 'human' || value === 'service')) identity.kind = value;
    else if (key.startsWith('claim.') && key.length > 'claim.'.length) identity.claims = { ...identity.claims, [key.slice('claim.'.length)]: value };
    else throw new UserError(`--as: unknown attribute "${key}" (use group, subject, client (or clientId), kind or claim.NAME)`, { code: 'USAGE' });
  }
  return identity;
}
