import type { Command as CommandType } from 'commander';
import { HoopError, UserError } from './lib/errors.js';
import { ENV_TOKEN_HINT } from './auth/env-token.js';
import { exitCodeFor } from './lib/exit-codes.js';

export { exitCodeFor };

export const VERSION = '0.1.0';


/** Entry point: parses argv, runs one command, prints failures in the two shapes users know. */
export async function main(argv: string[]): Promise<number> {
  // `--version` is asked by scripts and shells on every prompt: answer before loading the commands (Ink, the
  // parser's WASM, the OIDC client), which take most of a second.
  // `hoopctl … | head`: a reader that stops early is not an error; end quietly instead of throwing EPIPE.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') process.stderr.write(`hoopctl: cannot write to standard output: ${e.message}\n`);
    process.exit(e.code === 'EPIPE' ? 0 : 1);
  });
  const args = argv.slice(2);
  if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  // NO_COLOR (no-color.org) for everything, the Ink console included: Ink's chalk reads only FORCE_COLOR, and
  // reads it once, when first loaded — that is below, so set it here.
  if (process.env.NO_COLOR && process.env.FORCE_COLOR === undefined) process.env.FORCE_COLOR = '0';
  // The broker's V8 heap is held small from its first allocation on, loading its modules included.
  const brokerAt = args.indexOf('broker');
  if (brokerAt >= 0 && args[brokerAt + 1] === 'start') (await import('./lib/young-generation.js')).holdBrokerHeap();
  const [{ Command }, { registerCommands }, { setProfileFlag }] = await Promise.all([import('commander'), import('./commands/index.js'), import('./commands/profile-flag.js')]);
  let profile: { name?: string; argv: string[] };
  try {
    profile = takeProfileOption(argv);
  } catch (e) {
    return reportFailure(e);
  }
  setProfileFlag(profile.name);
  argv = profile.argv;
  const program: CommandType = new Command('hoopctl')
    .description('An access gate: short-lived OIDC identity, local tunnels, a broker that injects credentials, enforces policy and records every session.')
    .version(VERSION)
    // Taken out of argv before parsing (takeProfileOption): declared here for --help.
    .option('--profile <name>', 'run against this profile\'s broker (also HOOPCTL_PROFILE); see `hoopctl profiles`')
    .showHelpAfterError()
    .exitOverride();
  // The command's own file only, unless completion or help needs all of them (see registerCommands).
  await registerCommands(program, argv[2] === '__complete' || argv[2]?.startsWith('-') ? undefined : argv[2]);
  if (argv[2] === '__complete') {
    // Asked by the completion scripts at each Tab: candidates or nothing, never an error on the terminal.
    const { complete } = await import('./commands/completion.js');
    const candidates = await complete(program, argv.slice(3)).catch(() => []);
    if (candidates.length > 0) process.stdout.write(candidates.join('\n') + '\n');
    return 0;
  }
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    return reportFailure(e);
  }
}

/**
 * `--profile NAME` (or `--profile=NAME`) anywhere before `--`, so it works before or after the command name
 * (`hoopctl --profile prod sessions`, `hoopctl sessions --profile prod`) without every command declaring it. What
 * follows `--` belongs to the program a command runs.
 */
export function takeProfileOption(argv: string[]): { name?: string; argv: string[] } {
  const out: string[] = [];
  let name: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (arg === '--profile' || arg.startsWith('--profile=')) {
      const value = arg === '--profile' ? argv[++i] : arg.slice('--profile='.length);
      if (!value || value.startsWith('-')) throw new UserError('--profile needs a name', { code: 'USAGE', hint: 'hoopctl --profile prod sessions' });
      name = value;
      continue;
    }
    out.push(arg);
  }
  return { name, argv: out };
}

export function reportFailure(e: unknown): number {
  if (isCommanderError(e)) {
    // Unknown command or option, missing argument, no command at all: usage errors exit 2, as the README says.
    // Help and the version asked for exit 0.
    return e.exitCode === 0 ? 0 : 2;
  }
  if (e instanceof HoopError) {
    // The broker's hint for a rejected token is `hoopctl login`, which cannot help while the variable is set.
    const envToken = e.code.startsWith('TOKEN_') && process.env.HOOPCTL_TOKEN !== undefined;
    process.stderr.write(`error: ${e.message}${envToken && !e.message.includes('HOOPCTL_TOKEN') ? ' (the token in HOOPCTL_TOKEN)' : ''}\n`);
    const hint = envToken ? ENV_TOKEN_HINT : e.hint;
    if (hint) process.stderr.write(`hint: ${hint}\n`);
    return e instanceof UserError || e.code !== 'INTERNAL' ? exitCodeFor(e) : 70;
  }
  process.stderr.write(`hoopctl hit a bug: ${(e as Error)?.stack ?? String(e)}\nPlease report it with the command you ran.\n`);
  return 70;
}

/** Commander's own error type, told by shape so this module need not load commander for `--version`. */
function isCommanderError(e: unknown): e is { code: string; exitCode: number } {
  const code = (e as { code?: unknown } | null)?.code;
  return e instanceof Error && typeof code === 'string' && code.startsWith('commander.');
}
