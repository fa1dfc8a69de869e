import type { Command } from 'commander';

/** Each command file exports `register(program)`; this is the only list of them. */
export function registerCommands(program: Command): void {
  void program;
}
