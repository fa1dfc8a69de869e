/**
 * The one coded error type. `code` is a stable string that tests, exit codes and `-o json` rely on.
 * `hint` is the next step a user should take ("run `hoopctl login`").
 */
export class HoopError extends Error {
  readonly code: string;
  readonly hint?: string;
  readonly status?: number;

  constructor(message: string, options: { code: string; hint?: string; status?: number; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code;
    this.hint = options.hint;
    this.status = options.status;
  }
}

/** A failure the user can fix; printed without a stack trace. */
export class UserError extends HoopError {}

export function isHoopError(e: unknown): e is HoopError {
  return e instanceof HoopError;
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
