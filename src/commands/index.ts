import type { Command } from 'commander';

type Module = { register(program: Command): void };

/**
 * Each command file exports `register(program)`; this is the only list of them, in the order `--help` shows them.
 * Some files register several top-level commands; each name points at its file so that a run of one command loads
 * only that file (and what it imports), not Ink, the SQL parser's WASM and the whole broker: `hoopctl sessions`
 * starts in a third of the time. test/unit/commands/command-index.test.ts checks this table against what each file
 * registers, so a new command cannot be left out.
 */
const MODULES: Array<[names: string[], load: () => Promise<Module>]> = [
  [['login', 'logout', 'whoami'], () => import('./login.js')],
  [['status'], () => import('./status.js')],
  [['profiles'], () => import('./profiles.js')],
  [['connections'], () => import('./connections.js')],
  [['connect'], () => import('./connect.js')],
  [['psql', 'ssh', 'kubectl'], () => import('./launch.js')],
  [['exec'], () => import('./exec.js')],
  [['mcp'], () => import('./mcp.js')],
  [['reviews', 'approve', 'withdraw', 'revoke'], () => import('./reviews.js')],
  [['sessions', 'replay', 'audit'], () => import('./sessions.js')],
  [['lock', 'unlock', 'locks'], () => import('./locks.js')],
  [['policy'], () => import('./policy.js')],
  [['broker'], () => import('./broker.js')],
  [['demo'], () => import('./demo.js')],
  [['completion'], () => import('./completion.js')],
];

/** The names of every top-level command, in help order. */
export const COMMAND_NAMES: readonly string[] = MODULES.flatMap(([names]) => names);

/**
 * Registers the command `name` alone when it is one of ours; otherwise (no command, `--help`, a typo that deserves
 * "did you mean", shell completion) every command, so commander can list, suggest and complete them all.
 */
export async function registerCommands(program: Command, name?: string): Promise<void> {
  const one = name === undefined ? undefined : MODULES.find(([names]) => names.includes(name));
  const modules = await Promise.all((one ? [one] : MODULES).map(([, load]) => load()));
  for (const m of modules) m.register(program);
}
