import type { Command } from 'commander';
import { UserError } from '../lib/errors.js';
import { resolveBroker } from './context.js';
import { listConnections } from './connections.js';

/**
 * Shell completion. `hoopctl completion bash|zsh|fish` prints a small script for the shell; the script asks
 * `hoopctl __complete <words so far…>` for the candidates (answered in cli.ts before commander parses, since the
 * words are a half-typed command line, not options for a command), so commands, options and connection names come from one
 * place (commander's own definitions, and the broker's list for this identity) and never drift from the CLI.
 * Connection names need a login; without one, completion offers nothing rather than printing an error.
 */
export function register(program: Command): void {
  program
    .command('completion <shell>')
    .description('Print a completion script for bash, zsh or fish (commands, options, connection names)')
    .addHelpText('after', '\nExamples:\n  source <(hoopctl completion bash)          # in ~/.bashrc\n  source <(hoopctl completion zsh)           # in ~/.zshrc\n  hoopctl completion fish > ~/.config/fish/completions/hoopctl.fish')
    .action((shell: string) => {
      const script = SCRIPTS[shell];
      if (!script) throw new UserError(`unknown shell "${shell}" (use bash, zsh or fish)`, { code: 'USAGE' });
      process.stdout.write(script);
    });

}

/** Candidates for the last word of `words` (the words after `hoopctl`; the last one may be empty). */
export async function complete(program: Command, words: string[]): Promise<string[]> {
  if (words.length === 0) words = [''];
  const current = words.at(-1) ?? '';
  const before = words.slice(0, -1).filter((w) => w !== '--profile' && !w.startsWith('--profile='));
  let command = program;
  const positional: string[] = [];
  for (const [i, word] of before.entries()) {
    if (before[i - 1] === '--broker') continue;
    const sub = command.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (sub && positional.length === 0) command = sub;
    else if (!word.startsWith('-')) positional.push(word);
  }
  if (current.startsWith('-')) {
    return command.options.flatMap((o) => [o.long, o.short]).filter((f): f is string => Boolean(f) && f!.startsWith(current));
  }
  const subs = command.commands.map((c) => c.name());
  if (subs.length > 0 && positional.length === 0) return subs.filter((n) => n.startsWith(current));
  // The command's first argument is a connection (connect, exec, psql …): this identity's connection names.
  const first = command.registeredArguments[0]?.name();
  if (first === 'connection' && positional.length === 0) {
    const flag = before.indexOf('--broker');
    const names = (await listConnections(resolveBroker(flag >= 0 ? before[flag + 1] : undefined))).map((c) => c.name);
    return names.filter((n) => n.startsWith(current));
  }
  return [];
}

const SCRIPTS: Record<string, string> = {
  bash: `# hoopctl completion for bash: source <(hoopctl completion bash)
_hoopctl_complete() {
  local IFS=$'\\n'
  COMPREPLY=($(hoopctl __complete "\${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _hoopctl_complete hoopctl
`,
  zsh: `#compdef hoopctl
# hoopctl completion for zsh: source <(hoopctl completion zsh)
_hoopctl() {
  local -a candidates
  candidates=("\${(@f)$(hoopctl __complete "\${(@)words[2,CURRENT]}" 2>/dev/null)}")
  compadd -- \${candidates:#}
}
compdef _hoopctl hoopctl
`,
  fish: `# hoopctl completion for fish: hoopctl completion fish > ~/.config/fish/completions/hoopctl.fish
complete -c hoopctl -f -a '(hoopctl __complete (commandline -opc)[2..-1] (commandline -ct) 2>/dev/null)'
`,
};
