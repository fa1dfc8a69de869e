/**
 * What the broker's protocol-native answers mean to an agent, read the same way by both front doors: a PostgreSQL
 * error naming a rule is a denial, SQLSTATE RV001 a hold with its review id; an ssh refusal is the broker's one
 * `hoopctl: …` line with exit status 1; an HTTP refusal carries `x-hoopctl-refused` and a JSON body. Anything else
 * is the backend's own answer.
 */
import type { CommandResult, GateOutcome, HttpResult } from './gate.js';

/** SQLSTATEs the broker answers with (src/broker/protocols/postgres/errors.ts; not imported: this side stays neutral). */
const INSUFFICIENT_PRIVILEGE = '42501';
const HELD_FOR_REVIEW = 'RV001';
/** Exit statuses of a refused and a held (detached) ssh command (src/broker/protocols/ssh/proxy.ts). */
export const SSH_REFUSED_STATUS = 1;
export const SSH_HELD_STATUS = 5;

/** The fields of a node-postgres DatabaseError this reads. */
export interface PgError {
  code?: string;
  severity?: string;
  message: string;
}

export function sqlOutcome(e: PgError): GateOutcome<never> {
  if (e.code === HELD_FOR_REVIEW) {
    const review = /review (rev_[0-9a-f]+)/.exec(e.message)?.[1];
    if (review) return { status: 'held', reviewId: review, message: e.message.replace(/^hoopctl: /, '') };
  }
  const rule = /denied by rule "([^"]+)"/.exec(e.message ?? '')?.[1];
  if (e.code === INSUFFICIENT_PRIVILEGE && rule) return { status: 'denied', rule, message: e.message.replace(/^hoopctl: /, '') };
  if (e.code) return { status: 'error', code: e.code, message: `${e.severity ?? 'ERROR'}: ${e.message} (SQLSTATE ${e.code})` };
  return { status: 'error', message: e.message ?? String(e) };
}

export function commandOutcome(r: CommandResult, heldReview?: string): GateOutcome<CommandResult> {
  if (heldReview && r.exitStatus === SSH_HELD_STATUS) return { status: 'held', reviewId: heldReview, message: r.stderr.trim().replace(/^hoopctl: /, '') || `command held for review ${heldReview}` };
  // The broker's refusal: its one `hoopctl: …` line on stderr, exit status 1, nothing run (no output).
  if (r.exitStatus === SSH_REFUSED_STATUS && r.stdout === '' && /^hoopctl: [^\n]*\r?\n?$/.test(r.stderr)) {
    const message = r.stderr.trim().replace(/^hoopctl: /, '');
    const rule = /denied by (?:policy )?rule "([^"]+)"/.exec(message)?.[1];
    return { status: 'denied', ...(rule ? { rule } : {}), message };
  }
  return { status: 'ok', value: r };
}

/** The review id in the broker's notice of a held command (it comes on stderr before any output). */
export function heldCommandReview(stderr: string): string | undefined {
  return /hoopctl: command held for review (rev_[0-9a-f]+)/.exec(stderr)?.[1];
}

export function httpOutcome(res: HttpResult): GateOutcome<HttpResult> {
  if (res.headers['x-hoopctl-refused'] === undefined) return { status: 'ok', value: res };
  let parsed: { error?: string; rule?: string; review?: string; message?: string; details?: { name?: string } } = {};
  try {
    parsed = JSON.parse(res.body) as typeof parsed;
  } catch {
    // not the broker's JSON: keep the text
  }
  const message = (parsed.error ?? parsed.message ?? res.body.slice(0, 500)).replace(/^hoopctl: /, '');
  const review = parsed.review ?? /(rev_[0-9a-f]+)/.exec(message)?.[1];
  if (review && /held for review/.test(message)) return { status: 'held', reviewId: review, message };
  const refused = res.headers['x-hoopctl-refused'];
  const rule = parsed.rule ?? parsed.details?.name ?? (refused !== 'true' ? String(refused) : undefined);
  return { status: 'denied', ...(rule ? { rule } : {}), message };
}
