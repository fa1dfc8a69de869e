import type { Identity } from '../../api/identity.js';
import type { Review } from '../../api/review.js';

/**
 * Text helpers for the approval screens. Pure: every time-dependent one takes `now` or a span in ms, so a
 * frame is a function of props and tests can pin the clock.
 */

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/**
 * A compact span for ages, countdowns and windows: `42s`, `1m05s`, `30m`, `1h03m`, `2d04h`. Two units at most
 * because an approver reads these at a glance; negative spans count as zero.
 */
export function formatSpan(ms: number): string {
  const t = Math.max(0, Math.floor(ms / SECOND)) * SECOND;
  if (t < MINUTE) return `${t / SECOND}s`;
  if (t < HOUR) {
    const m = Math.floor(t / MINUTE);
    const s = Math.floor((t % MINUTE) / SECOND);
    return s === 0 ? `${m}m` : `${m}m${pad2(s)}s`;
  }
  if (t < DAY) {
    const h = Math.floor(t / HOUR);
    const m = Math.floor((t % HOUR) / MINUTE);
    return m === 0 ? `${h}h` : `${h}h${pad2(m)}m`;
  }
  const d = Math.floor(t / DAY);
  const h = Math.floor((t % DAY) / HOUR);
  return h === 0 ? `${d}d` : `${d}d${pad2(h)}h`;
}

/** A stopwatch reading for elapsed time: `0:42`, `12:05`, `1:02:03`. */
export function formatClock(ms: number): string {
  const total = Math.max(0, Math.floor(ms / SECOND));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return h > 0 ? `${h}:${pad2(m)}:${pad2(s)}` : `${m}:${pad2(s)}`;
}

/** How long ago `at` was, relative to `now`: `just now`, `42s ago`, `3m10s ago`. */
export function formatAge(at: number, now: number): string {
  const ms = now - at;
  return ms < SECOND ? 'just now' : `${formatSpan(ms)} ago`;
}

/** Time left until `at`: `in 4m10s`, or `now` once it has passed. */
export function formatCountdown(at: number, now: number): string {
  const ms = at - now;
  return ms < SECOND ? 'now' : `in ${formatSpan(ms)}`;
}

/** Shortens to `max` characters, ending in `…` when something was cut. */
export function truncate(text: string, max: number): string {
  if (max <= 0) return '';
  const chars = Array.from(text);
  return chars.length <= max ? text : chars.slice(0, Math.max(0, max - 1)).join('') + '…';
}

/** Newlines and runs of spaces in a statement would break a one-line row. */
export function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/** `alice@example.com (human)` — the identity type matters to an approver: a CI job asks differently. */
export function describeIdentity(who: Identity): string {
  return `${who.name} (${who.kind})`;
}

/** The one-line gist of a review: the statement, or `access for 30m: <reason>`. */
export function summarizeReview(review: Review): string {
  if (review.kind === 'statement') return oneLine(review.statement ?? '(statement not recorded)');
  const window = review.durationMs === undefined ? 'access' : `access for ${formatSpan(review.durationMs)}`;
  return review.reason ? `${window}: ${oneLine(review.reason)}` : window;
}

export function countApprovals(review: Review): number {
  return review.decisions.filter((d) => d.action === 'approve').length;
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}
