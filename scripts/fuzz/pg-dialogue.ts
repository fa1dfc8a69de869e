/**
 * One PostgreSQL fuzz session: a startup (sometimes mutated), then chunks of well-formed and mutated frontend
 * messages, each chunk closed by a sentinel (CopyFail, Sync, ROLLBACK, a SELECT of a marker) whose answer proves the
 * session still works. A session ends when the broker or the server ends it (the FATAL it sent says why), when the
 * client's own stream is left inside a frame (it then ends its side), or after its messages with a Terminate.
 */
import { FrameModel, FUZZ_SQL, copyFail, createQuery, createSync, createTerminate, mutate, startupMessage, startupPhase, wellFormed, type MutationKind } from './pg-corpus.js';
import { rng } from './rng.js';
import { Progress, type Transport } from './transport.js';

export interface PgDialogueOptions {
  seed: number;
  database: string;
  /** How many frontend messages this session sends at most. */
  messages: number;
  /** Messages per chunk (each chunk is followed by a sentinel). */
  chunk: number;
  /** Chance that a message is mutated. */
  mutationRate: number;
  /**
   * Whether the transport delivers every byte written (a tunnel stream does; a WebSocket mangled by the fuzzer may drop
   * some, leaving the broker rightly waiting). When it does, a sentinel never answered on a frame boundary is a finding.
   */
  lossless: boolean;
  /** Chance that the startup phase itself is fuzzed. */
  startupFuzzRate: number;
  /** The client's patience while nothing happens: past it, it gives up and ends its side. */
  stallMs: number;
  /** After the client ended its side: no close within this is a hang. */
  hangMs: number;
  /** The broker's cap on a client frame (its frame scanner refuses larger length fields). */
  maxClientFrame: number;
}

export interface SessionOutcome {
  /** How the session ended, e.g. `ok`, `broker 08P01: protocol violation: …`, `server 08P01: invalid frontend message type N`. */
  kind: string;
  /** Messages the broker received while the session was alive. */
  messages: number;
  mutations: Partial<Record<MutationKind, number>>;
  /** Non-fatal errors by SQLSTATE (the session went on). */
  errors: Record<string, number>;
  /** Something the fuzzer counts as a failure of the broker: a hang, a malformed answer, a silent close. */
  finding?: string;
}

interface ErrorSeen {
  severity: string;
  code: string;
  message: string;
  fromServer: boolean;
}

/** Reads the broker's answer stream: frames, errors, markers. */
class ReplyReader {
  #buf: Buffer = Buffer.alloc(0);
  #expectN: number;
  fatal: ErrorSeen | undefined;
  malformed: string | undefined;
  readonly markers = new Set<string>();
  readonly errors: Record<string, number> = {};
  readyForQuery = 0;

  constructor(expectN: number) {
    this.#expectN = expectN;
  }

  feed(bytes: Buffer): void {
    this.#buf = this.#buf.length === 0 ? bytes : Buffer.concat([this.#buf, bytes]);
    while (this.#expectN > 0 && this.#buf.length > 0 && this.#buf[0] === 0x4e) {
      // The single-byte 'N' refusing an SSLRequest or GSSENCRequest.
      this.#buf = this.#buf.subarray(1);
      this.#expectN--;
    }
    while (this.#buf.length >= 5 && !this.malformed) {
      const type = this.#buf[0]!;
      const length = this.#buf.readInt32BE(1);
      if (length < 4) {
        this.malformed = `answer frame of type ${type} with length ${length}`;
        return;
      }
      if (this.#buf.length < 1 + length) return;
      const body = this.#buf.subarray(5, 1 + length);
      this.#buf = this.#buf.subarray(1 + length);
      this.#expectN = 0;
      if (process.env.FUZZ_TRACE) process.stderr.write(`<- ${String.fromCharCode(type)} ${JSON.stringify(body.toString('latin1').slice(0, 100))}\n`);
      if (type === 0x45) this.#onError(body);
      else if (type === 0x5a) this.readyForQuery++;
      else if (type === 0x44) {
        const s = body.toString('latin1');
        const m = /hoopctl-fuzz-\d+-\d+/.exec(s);
        if (m) this.markers.add(m[0]);
      }
    }
  }

  #onError(body: Buffer): void {
    const fields = new Map<string, string>();
    let pos = 0;
    while (pos < body.length && body[pos] !== 0) {
      const code = String.fromCharCode(body[pos]!);
      const end = body.indexOf(0, pos + 1);
      if (end < 0) {
        this.malformed = 'ErrorResponse without terminator';
        return;
      }
      fields.set(code, body.toString('utf8', pos + 1, end));
      pos = end + 1;
    }
    const e: ErrorSeen = {
      severity: fields.get('V') ?? fields.get('S') ?? '?',
      code: fields.get('C') ?? '?',
      message: fields.get('M') ?? '',
      // The server's errors name the routine that raised them; the broker's own never do.
      fromServer: fields.has('R'),
    };
    if (e.severity === 'FATAL' || e.severity === 'PANIC') this.fatal ??= e;
    else this.errors[e.code] = (this.errors[e.code] ?? 0) + 1;
  }
}

/** Parse, Bind, Describe, Execute, Close. */
const EXTENDED = new Set([0x50, 0x42, 0x44, 0x45, 0x43]);

export function normalizeMessage(message: string): string {
  return message
    .replace(/0x[0-9a-f]+/gi, '0xN')
    .replace(/-?\d+/g, 'N')
    .replace(/"[^"]*"/g, '"…"')
    .slice(0, 110);
}

export async function runPgDialogue(t: Transport, o: PgDialogueOptions): Promise<SessionOutcome> {
  const r = rng(o.seed);
  const progress = new Progress();
  let closed = false;
  const startup = r.chance(o.startupFuzzRate) ? startupPhase(r, o.database) : { bytes: [startupMessage(o.database)], expectN: 0, cancel: false };
  const reply = new ReplyReader(startup.expectN);
  t.onData((b) => {
    reply.feed(b);
    progress.notify();
  });
  t.onClose(() => {
    closed = true;
    progress.notify();
  });
  const mutations: SessionOutcome['mutations'] = {};
  let messages = startup.bytes.length;
  const model = new FrameModel(o.maxClientFrame);
  let endedByClient = false;
  let terminatedByUs = false;
  let hung = false;
  let gaveUp = false;
  let extendedOpen = false;

  const outcome = (kind: string, finding?: string): SessionOutcome => ({ kind, messages, mutations, errors: reply.errors, ...(finding ? { finding } : {}) });
  /** Waits for `done` or the end of the session; a client left waiting gives up, ends its side and waits for the close. */
  const wait = async (done: () => boolean) => {
    if (await progress.until(() => closed || done() || !!reply.malformed, o.stallMs)) return;
    gaveUp = true;
    t.end();
    if (!(await progress.until(() => closed, o.hangMs))) hung = true;
  };

  t.write(Buffer.concat(startup.bytes));
  if (!startup.cancel) {
    let chunkNo = 0;
    while (!closed && !gaveUp && messages < o.messages + startup.bytes.length) {
      const parts: Buffer[] = [];
      let inChunk = 0;
      while (inChunk < o.chunk) {
        for (const m of wellFormed(r)) {
          // A well-behaved client ends an extended-protocol exchange with Sync before a simple Query (the broker
          // refuses one inside it): only mutations break that rule.
          if (EXTENDED.has(m[0]!)) extendedOpen = true;
          else if (m[0] === 0x53) extendedOpen = false;
          else if (extendedOpen && (m[0] === 0x51 || m[0] === 0x46)) {
            parts.push(createSync());
            inChunk++;
            extendedOpen = false;
          }
          if (r.chance(o.mutationRate)) {
            const { bytes, kind } = mutate(r, m, createQuery(r.pick(FUZZ_SQL)));
            mutations[kind] = (mutations[kind] ?? 0) + 1;
            if (process.env.FUZZ_TRACE) process.stderr.write(`-> ${kind} ${JSON.stringify(bytes.toString('latin1').slice(0, 100))}\n`);
            parts.push(bytes);
          } else {
            if (process.env.FUZZ_TRACE) process.stderr.write(`-> ${JSON.stringify(m.toString('latin1').slice(0, 100))}\n`);
            parts.push(m);
          }
          inChunk++;
        }
      }
      const bytes = Buffer.concat(parts);
      model.feed(bytes);
      if (closed) break;
      t.write(bytes);
      messages += inChunk;
      if (model.state === 'broken' || model.state === 'terminated') {
        await wait(() => false);
        break;
      }
      if (model.state === 'mid-frame') {
        // The rest of a frame the client announced will never come: a client that gives up ends its side.
        endedByClient = true;
        t.end();
        await wait(() => false);
        break;
      }
      const marker = `hoopctl-fuzz-${o.seed}-${chunkNo++}`;
      const sentinel = Buffer.concat([copyFail('fuzz sentinel'), createSync(), createQuery('rollback'), createQuery(`select '${marker}' as marker`)]);
      model.feed(sentinel);
      t.write(sentinel);
      extendedOpen = false;
      await wait(() => reply.markers.has(marker));
    }
    if (!closed && !gaveUp && !reply.malformed) {
      terminatedByUs = true;
      t.write(createTerminate());
      await wait(() => false);
    }
  } else {
    await wait(() => false);
  }
  if (!closed) t.destroy();
  if (reply.malformed) return outcome('malformed answer', `the broker sent a malformed stream: ${reply.malformed}`);
  if (hung) return outcome('hang', `no close ${o.hangMs} ms after the client ended its side (seed ${o.seed})`);
  if (reply.fatal) {
    const who = reply.fatal.fromServer ? 'server' : 'broker';
    return outcome(`${who} ${reply.fatal.code}: ${normalizeMessage(reply.fatal.message)}`);
  }
  const reason = t.closeReason();
  if (reason) return outcome(reason);
  if (terminatedByUs) return outcome('ok');
  if (startup.cancel) return outcome('cancel request (no answer, as in PostgreSQL)');
  if (model.state === 'terminated') return outcome('Terminate in the stream');
  if (endedByClient) return outcome('client ended inside a frame');
  if (gaveUp && o.lossless && !startup.cancel) return outcome('stalled', `no answer to the sentinel for ${o.stallMs} ms (seed ${o.seed})`);
  if (gaveUp) return outcome('client gave up waiting, then the broker closed');
  // Closed with nothing said: PostgreSQL closes without a word on some broken frames (an over-long small message).
  return outcome('closed without an error message');
}
