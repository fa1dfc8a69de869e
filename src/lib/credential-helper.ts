/**
 * Credential helpers: a secret printed by an executable (`vault kv get -field=password …`, a cloud secret manager's
 * CLI, a password manager), so the broker needs no SDK of any of them. The command runs without a shell, in its own
 * process group (a timeout kills what it started too), with the broker's environment. Its stdout is the secret; its
 * stderr is only ever shown trimmed, in the broker's log, with the secret cut out of it.
 */
import { spawn } from 'node:child_process';
import { HoopError } from './errors.js';

/** The most a helper may print: a secret is short; more is a helper printing something else. */
const MAX_OUTPUT = 64 * 1024;
/** How much of a failing helper's stderr the broker log keeps. */
const STDERR_EXCERPT = 300;

/** A helper that failed. `message` is safe for clients (no stderr, no output); `detail` is for the broker log. */
export class CredentialHelperError extends HoopError {
  constructor(message: string, readonly detail?: string) {
    super(message, { code: 'CREDENTIAL_UNAVAILABLE', status: 502 });
  }
}

export interface HelperOptions {
  timeoutMs: number;
  /** Where a relative program path (`./bin/get-secret`) is found: the config file's directory. */
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * Runs `command` and resolves with what it printed (one trailing line break removed). Rejects with a
 * CredentialHelperError when it cannot start, exits non-zero, is killed, outlives `timeoutMs`, prints nothing or
 * prints more than 64 KiB.
 */
export function runCredentialHelper(command: readonly string[], options: HelperOptions): Promise<string> {
  const [program, ...args] = command;
  if (!program) return Promise.reject(new CredentialHelperError('the credential helper has no command'));
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true, shell: false });
    const out: Buffer[] = [];
    let outBytes = 0;
    let stderr = '';
    let settled = false;
    const excerpt = () => {
      const printed = Buffer.concat(out).toString('utf8').trim();
      let text = stderr.trim();
      // A helper that echoes its secret on stderr must not put it in the log.
      if (printed.length >= 4) text = text.split(printed).join('[redacted]');
      return text.length > STDERR_EXCERPT ? `${text.slice(0, STDERR_EXCERPT)}…` : text || undefined;
    };
    const killGroup = () => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    const finish = (error: CredentialHelperError | undefined, value?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(value!);
    };
    const timer = setTimeout(() => {
      killGroup();
      finish(new CredentialHelperError(`the credential helper did not finish within ${options.timeoutMs} ms`, excerpt()));
    }, options.timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      outBytes += d.length;
      if (outBytes > MAX_OUTPUT) {
        killGroup();
        return finish(new CredentialHelperError(`the credential helper printed more than ${MAX_OUTPUT} bytes`));
      }
      out.push(d);
    });
    child.stderr!.on('data', (d: Buffer) => {
      if (stderr.length < 4 * STDERR_EXCERPT) stderr += d.toString('utf8');
    });
    child.on('error', (e: NodeJS.ErrnoException) => finish(new CredentialHelperError(`the credential helper ${program} could not be run: ${e.code ?? e.message}`)));
    child.on('close', (code, signal) => {
      if (code !== 0) {
        const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
        return finish(new CredentialHelperError(`the credential helper ${how}`, excerpt()));
      }
      const value = Buffer.concat(out).toString('utf8').replace(/\r?\n$/, '');
      if (value.trim() === '') return finish(new CredentialHelperError('the credential helper printed nothing', excerpt()));
      finish(undefined, value);
    });
  });
}
