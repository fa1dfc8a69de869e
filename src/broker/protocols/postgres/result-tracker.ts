import { performance } from 'node:perf_hooks';
import type { ErrorFields } from './messages.js';
import { rowsFromTag } from './messages.js';
import { SqlState } from './errors.js';

/** One finished statement, as recorded in a 'result' event. */
export interface StatementResult {
  /** The `statementSeq` of the 'statement' event this result belongs to. */
  statementSeq: number;
  /** Command tags in order (`SELECT 3`, `INSERT 0 1`); several for a multi-statement simple query. */
  tags: string[];
  /** Sum of the row counts the tags report. */
  rows: number;
  durationMs: number;
  error?: { code: string; message: string };
  /** The server skipped this Execute because an earlier message of its Sync group failed. */
  skipped?: true;
  /** The Execute hit its row limit (PortalSuspended); the portal can be executed again. */
  suspended?: true;
  /**
   * The session ended before the server finished answering: the client left mid-statement or between ErrorResponse
   * and ReadyForQuery. Without an error, nobody knows how the statement ended; it is not "ok".
   */
  incomplete?: true;
  /** The server stopped the statement (SQLSTATE 57014 query_canceled: a client's cancel request, or a statement timeout). */
  cancelled?: true;
}

/** What the tracker reports for an ErrorResponse that belongs to no recorded statement. */
export interface UnattributedError {
  code: string;
  message: string;
  severity: string;
}

type Pending =
  | { kind: 'round'; statementSeq: number; start: number; tags: string[]; error?: ErrorFields; denial?: ErrorFields; boundary: number }
  | { kind: 'execute'; statementSeq: number; start: number; denial?: ErrorFields }
  | { kind: 'sync'; boundary: number }
  /** The client ended COPY data (CopyDone or CopyFail); no answer of its own. */
  | { kind: 'copy-end' };

/**
 * Pairs backend completions with the statements that caused them. The server answers strictly in
 * order, so a FIFO of what the client sent is enough:
 * - a simple Query (or FunctionCall) is one round closed by ReadyForQuery, collecting every tag and
 *   the error that ended it;
 * - an Execute ends at its CommandComplete, EmptyQueryResponse, PortalSuspended or ErrorResponse;
 *   an error also covers a failed Parse/Bind of the same statement, since those precede its Execute;
 * - a Sync ends at ReadyForQuery; Executes still open then were skipped by the server after an error.
 * A statement the policy refused is sent as a substitute that the server fails; its entry carries the denial,
 * which replaces the server's error (for the client and the result) when it comes.
 *
 * COPY FROM STDIN: the server ignores Sync (and Flush) while it is in copy-in mode — libpq sends a Sync right with
 * the Execute of a COPY and another after CopyDone — so the Syncs between the COPY and the end of its data have no
 * ReadyForQuery of their own. Which ones those are is known only once the server answers CopyInResponse.
 */
export class ResultTracker {
  readonly #queue: Pending[] = [];
  /** The server is in copy-in mode and the client has not ended its data yet: its Syncs are ignored. */
  #copyIn = false;
  /** How many messages that the server answers with ReadyForQuery (simple Query, FunctionCall, Sync) were sent. */
  #boundariesSent = 0;
  /** The number of the one the last ReadyForQuery answered (0: none yet). */
  #boundaryAnswered = 0;

  /** A simple Query or FunctionCall was forwarded; `denial`: a refused one's substitute was. */
  round(statementSeq: number, denial?: ErrorFields): void {
    this.#queue.push({ kind: 'round', statementSeq, start: performance.now(), tags: [], ...(denial ? { denial } : {}), boundary: ++this.#boundariesSent });
  }

  /** An Execute was forwarded; `denial`: a refused Parse or Bind's substitute was. */
  execute(statementSeq: number, denial?: ErrorFields): void {
    this.#queue.push({ kind: 'execute', statementSeq, start: performance.now(), ...(denial ? { denial } : {}) });
  }

  /** A Sync was forwarded. */
  sync(): void {
    if (!this.#copyIn) this.#queue.push({ kind: 'sync', boundary: ++this.#boundariesSent });
  }

  /**
   * Messages answered by ReadyForQuery sent so far: what was sent since belongs to a later ReadyForQuery. With
   * `answered`, the proxy knows which of its bookkeeping a ReadyForQuery covers (portals end with their transaction).
   */
  get boundariesSent(): number {
    return this.#boundariesSent;
  }

  /** The `boundariesSent` count at the message the last ReadyForQuery answered. */
  get answered(): number {
    return this.#boundaryAnswered;
  }

  /** Whether the server is taking COPY data now: only CopyData, CopyDone, CopyFail, Flush and Sync belong there. */
  get inCopyIn(): boolean {
    return this.#copyIn;
  }

  /** The client sent CopyDone or CopyFail. */
  copyEnd(): void {
    if (this.#copyIn) this.#copyIn = false;
    else this.#queue.push({ kind: 'copy-end' });
  }

  /**
   * CopyInResponse: the statement at the head entered copy-in mode, so the Syncs the client sent after it and
   * before the end of its data are ignored by the server. Returns how many Syncs were dropped, or undefined when
   * the client sent statements there too (the server fails the COPY on them and then skips to a Sync the broker
   * cannot place): their answers could not be paired, and the caller ends the session.
   */
  copyIn(): number | undefined {
    const head = this.#head();
    if (head?.kind !== 'round' && head?.kind !== 'execute') return 0;
    const end = this.#queue.findIndex((p, i) => i > 0 && p.kind === 'copy-end');
    const upto = end < 0 ? this.#queue.length : end;
    if (this.#queue.slice(1, upto).some((p) => p.kind !== 'sync')) return undefined;
    this.#queue.splice(1, upto - 1 + (end < 0 ? 0 : 1));
    if (end < 0) this.#copyIn = true;
    return upto - 1;
  }

  get pending(): number {
    // Asked at every ReadyForQuery: counted without a filtered copy of the queue.
    let n = 0;
    for (const p of this.#queue) if (p.kind !== 'copy-end') n++;
    return n;
  }

  /** The oldest entry that waits for an answer (a CopyDone or CopyFail outside COPY waits for none). */
  #head(): Pending | undefined {
    while (this.#queue[0]?.kind === 'copy-end') this.#queue.shift();
    return this.#queue[0];
  }

  commandComplete(tag: string): StatementResult[] {
    const head = this.#head();
    if (head?.kind === 'round') head.tags.push(tag);
    else if (head?.kind === 'execute') {
      this.#queue.shift();
      return [finish(head.statementSeq, head.start, [tag])];
    }
    return [];
  }

  emptyQuery(): StatementResult[] {
    const head = this.#head();
    if (head?.kind === 'execute') {
      this.#queue.shift();
      return [finish(head.statementSeq, head.start, [])];
    }
    return [];
  }

  portalSuspended(): StatementResult[] {
    const head = this.#head();
    if (head?.kind === 'execute') {
      this.#queue.shift();
      return [{ ...finish(head.statementSeq, head.start, []), suspended: true }];
    }
    return [];
  }

  /**
   * Returns the finished statement the error belongs to, or the error itself when it belongs to none;
   * `replacement` when the error answers a refused statement's substitute and must be replaced by the denial.
   */
  error(fields: ErrorFields): { results: StatementResult[]; unattributed?: UnattributedError; replacement?: ErrorFields } {
    // An error ends copy-in: the server drops the rest of the data, and the Syncs that follow count again.
    this.#copyIn = false;
    const head = this.#head();
    if (head?.kind === 'round') {
      const effective = head.error ? fields : (head.denial ?? fields);
      const replacement = !head.error ? head.denial : undefined;
      head.error ??= effective;
      return { results: [], ...(replacement ? { replacement } : {}) };
    }
    if (head?.kind === 'execute') {
      this.#queue.shift();
      const effective = head.denial ?? fields;
      return {
        results: [withError(finish(head.statementSeq, head.start, []), effective)],
        ...(head.denial ? { replacement: head.denial } : {}),
      };
    }
    return { results: [], unattributed: { code: fields.code, message: fields.message, severity: fields.severity } };
  }

  /**
   * The session is ending: what is known of every statement still waiting for its answer, so none of them leaves
   * the recording without a result. A client may leave as soon as it has read an error, before ReadyForQuery.
   */
  /** Whether a statement was sent and its answer has not ended yet (the server may be running it now). */
  get awaitingAnswer(): boolean {
    return this.#queue.some((h) => h.kind !== 'sync' && h.kind !== 'copy-end');
  }

  unfinished(): StatementResult[] {
    const out: StatementResult[] = [];
    for (const head of this.#queue.splice(0)) {
      if (head.kind === 'sync' || head.kind === 'copy-end') continue;
      const r = finish(head.statementSeq, head.start, head.kind === 'round' ? head.tags : []);
      const error = head.kind === 'round' ? head.error : undefined;
      out.push({ ...(error ? withError(r, error) : r), incomplete: true });
    }
    return out;
  }

  readyForQuery(): StatementResult[] {
    const out: StatementResult[] = [];
    while (this.#queue.length > 0) {
      const head = this.#queue.shift()!;
      if (head.kind === 'copy-end') continue;
      if (head.kind === 'execute') {
        out.push({ ...finish(head.statementSeq, head.start, []), skipped: true });
        continue;
      }
      this.#boundaryAnswered = head.boundary;
      if (head.kind === 'round') {
        const r = finish(head.statementSeq, head.start, head.tags);
        out.push(head.error ? withError(r, head.error) : r);
      }
      break;
    }
    return out;
  }
}

function finish(statementSeq: number, start: number, tags: string[]): StatementResult {
  return {
    statementSeq,
    tags,
    rows: tags.reduce((sum, t) => sum + rowsFromTag(t), 0),
    durationMs: Math.round((performance.now() - start) * 1000) / 1000,
  };
}

function withError(r: StatementResult, error: ErrorFields): StatementResult {
  return { ...r, error: { code: error.code, message: error.message }, ...(error.code === SqlState.QueryCanceled ? { cancelled: true as const } : {}) };
}
