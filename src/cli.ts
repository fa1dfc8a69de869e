import { Command, CommanderError } from 'commander';
import { HoopError, UserError } from './lib/errors.js';
import { registerCommands } from './commands/index.js';

/** Entry point: parses argv, runs one command, prints failures in the two shapes users know. */
export async function main(argv: string[]): Promise<number> {
  const program = new Command('hoopctl')
    .description('An access gate: short-lived OIDC identity, local tunnels, a broker that injects credentials, enforces policy and records every session.')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();
  registerCommands(program);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    return reportFailure(e);
  }
}

export function reportFailure(e: unknown): number {
  if (e instanceof CommanderError) {
    return e.exitCode;
  }
  if (e instanceof HoopError) {
    process.stderr.write(`error: ${e.message}\n`);
    if (e.hint) process.stderr.write(`hint: ${e.hint}\n`);
    return e instanceof UserError || e.code !== 'INTERNAL' ? exitCodeFor(e) : 70;
  }
  process.stderr.write(`hoopctl hit a bug: ${(e as Error)?.stack ?? String(e)}\nPlease report it with the command you ran.\n`);
  return 70;
}

/** Documented exit codes: 1 general failure, 2 usage, 3 not authenticated, 4 access denied, 5 held for review. */
export function exitCodeFor(e: HoopError): number {
  // A rejected client secret is a failed authentication like an expired token (the README promises 3 for both).
  if (e.code.startsWith('TOKEN_') || e.code === 'NOT_LOGGED_IN' || e.code === 'CLIENT_AUTH_FAILED') return 3;
  if (e.code === 'ACCESS_DENIED' || e.code === 'APPROVAL_REQUIRED' || e.code === 'IDENTITY_LOCKED') return 4;
  if (e.code === 'HELD_FOR_REVIEW') return 5;
  if (e.code === 'USAGE') return 2;
  return 1;
}
