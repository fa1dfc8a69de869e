import { closeSync, fstatSync, ftruncateSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { UserError } from '../../lib/errors.js';
import { processAlive } from '../../lib/process-alive.js';
import { crc32 } from 'node:zlib';
import type { StoredEvent } from './store.js';

/**
 * The SQLite store's append-only event journal: the durable record a statement waits for before it is forwarded.
 *
 * A batch of events (every append of one turn of the event loop) is one `write()` to a file opened O_APPEND; once it
 * returned, the bytes are in the kernel's page cache and survive the broker process (kill -9, a crash), which is the
 * durability SQLite's WAL with synchronous=NORMAL gave each commit before. The store later copies the journal's
 * events into SQLite in large transactions (off the statement's path) and empties the journal; on start it copies
 * whatever a stopped broker left in it first.
 *
 * A record: 4 bytes of length (little-endian), 4 bytes of CRC-32 of the payload, then the payload: the event's
 * fields as one JSON array, a newline, and the event's data as JSON exactly as it was hashed. A write cut short
 * (a kill in the middle of it, a power loss) leaves a last record whose length or checksum is wrong: it was never
 * acknowledged, and reading stops there.
 */
const HEADER = 8;
/** No event comes near this (a statement's text is capped far below); a larger length is a damaged header. */
const MAX_RECORD = 256 * 1024 * 1024;

/** An event as the journal keeps it: the data as the JSON its hash was computed over. */
export interface JournalEntry {
  event: StoredEvent;
  data: string;
}

export interface JournalContents {
  entries: JournalEntry[];
  /** Bytes after the last whole record (a torn write), 0 when the file ends on a record. */
  tornBytes: number;
}

/**
 * One buffer holding the records of `entries`, in order: a view of `scratch` when it can hold them (the journal's own,
 * reused for every batch), a new buffer otherwise. Each event's fields and data are encoded straight into it, sized
 * for the worst case (3 bytes of UTF-8 per UTF-16 unit), where joining them into one string first and measuring its
 * UTF-8 length cost a copy and a pass over every event's data: encoding was ~15 % of the recording path's CPU in
 * profiles, and this takes about a third off it (1.6 → 1.1 µs per event). The bytes are the same either way.
 */
export function encodeJournalRecords(entries: readonly JournalEntry[], scratch?: Buffer): Buffer {
  const fields: string[] = new Array(entries.length);
  let worst = 0;
  for (let i = 0; i < entries.length; i++) {
    const { event: e, data } = entries[i]!;
    const head = recordHead(e);
    fields[i] = head;
    worst += HEADER + 3 * (head.length + 1 + data.length);
  }
  const out = scratch !== undefined && scratch.length >= worst ? scratch : Buffer.allocUnsafe(worst);
  let at = 0;
  for (let i = 0; i < entries.length; i++) {
    const start = at + HEADER;
    let end = start + out.write(fields[i]!, start, 'utf8');
    out[end++] = NEWLINE;
    end += out.write(entries[i]!.data, end, 'utf8');
    out.writeUInt32LE(end - start, at);
    out.writeUInt32LE(crc32(out.subarray(start, end)), at + 4);
    at = end;
  }
  return out.subarray(0, at);
}

const NEWLINE = 0x0a;

/** Text JSON writes as it is between quotes: what a recorder's streams, types and hashes are made of. */
const PLAIN = /^[\w.:/-]*$/;

/**
 * `JSON.stringify([stream, seq, at, type, prevHash, hash])`, built by hand when no field needs escaping and both numbers
 * are integers (every event a recorder makes): the array's generic serialisation was the largest part of encoding.
 */
function recordHead(e: StoredEvent): string {
  if (Number.isSafeInteger(e.seq) && Number.isSafeInteger(e.at) && PLAIN.test(e.stream) && PLAIN.test(e.type) && PLAIN.test(e.prevHash) && PLAIN.test(e.hash)) {
    return `["${e.stream}",${e.seq},${e.at},"${e.type}","${e.prevHash}","${e.hash}"]`;
  }
  return JSON.stringify([e.stream, e.seq, e.at, e.type, e.prevHash, e.hash]);
}

/** The journal's reusable encoding buffer: a batch of a busy broker's turn fits (larger ones get a buffer of their own). */
const SCRATCH_BYTES = 64 * 1024;

/** The whole records of `bytes`, stopping at the first one that is cut short or fails its checksum. */
export function decodeJournalRecords(bytes: Buffer): JournalContents {
  const entries: JournalEntry[] = [];
  let at = 0;
  while (bytes.length - at >= HEADER) {
    const length = bytes.readUInt32LE(at);
    if (length > MAX_RECORD || bytes.length - at - HEADER < length) break;
    const payload = bytes.subarray(at + HEADER, at + HEADER + length);
    if (crc32(payload) !== bytes.readUInt32LE(at + 4)) break;
    const entry = parsePayload(payload.toString('utf8'));
    if (!entry) break;
    entries.push(entry);
    at += HEADER + length;
  }
  return { entries, tornBytes: bytes.length - at };
}

function parsePayload(text: string): JournalEntry | undefined {
  const cut = text.indexOf('\n');
  if (cut < 0) return undefined;
  try {
    const [stream, seq, at, type, prevHash, hash] = JSON.parse(text.slice(0, cut)) as [string, number, number, string, string, string];
    const data = text.slice(cut + 1);
    return { event: { stream, seq, at, type, prevHash, hash, data: JSON.parse(data) }, data };
  } catch {
    return undefined;
  }
}

/** The journal file beside a SQLite store (not SQLite's own `-journal`, which a rollback journal would use). */
export function journalPathFor(storePath: string): string {
  return `${storePath}-events`;
}

export class EventJournal {
  readonly path: string;
  readonly #fd: number;
  /** Bytes of whole records in the file: a failed write is cut back to it, so no torn record stays in the middle. */
  #size: number;
  /** Set when a failed write could not be cut back: nothing more may be appended after the damage. */
  #damaged: Error | undefined;
  /** Where batches are encoded before their write (written synchronously, so one buffer serves every batch). */
  readonly #scratch = Buffer.allocUnsafeSlow(SCRATCH_BYTES);

  constructor(path: string) {
    this.path = path;
    // 0600 like the store: the journal holds the same statements and results.
    this.#fd = openSync(path, 'a', 0o600);
    this.#size = fstatSync(this.#fd).size;
  }

  /** What a stopped broker left in the journal at `path` (an absent file: nothing). */
  static read(path: string): JournalContents {
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { entries: [], tornBytes: 0 };
      throw e;
    }
    return decodeJournalRecords(bytes);
  }

  /** Keeps a journal whose tail could not be read beside the store, for an operator, before it is emptied. */
  static keepDamaged(path: string, at: number): string {
    const kept = `${path}.damaged-${at}`;
    renameSync(path, kept);
    return kept;
  }

  get size(): number {
    return this.#size;
  }

  /** Appends the records of `entries` in one write, as `append` does. */
  appendEntries(entries: readonly JournalEntry[]): void {
    if (this.#damaged) throw this.#damaged;
    this.append(encodeJournalRecords(entries, this.#scratch));
  }

  /**
   * Appends the records in one write (a short write is continued). Throws the system's error (ENOSPC: a full disk)
   * after cutting the file back to its last whole record, so the entries count as not written.
   */
  append(bytes: Buffer): void {
    if (this.#damaged) throw this.#damaged;
    try {
      let done = 0;
      while (done < bytes.length) done += writeSync(this.#fd, bytes, done, bytes.length - done);
      this.#size += bytes.length;
    } catch (e) {
      try {
        ftruncateSync(this.#fd, this.#size);
      } catch (cut) {
        this.#damaged = Object.assign(new Error(`the event journal ${this.path} has a torn record that could not be cut off (${(cut as Error).message})`), { code: (e as NodeJS.ErrnoException).code });
      }
      throw e;
    }
  }

  /** Empties the journal once every event in it is in the store. */
  clear(): void {
    ftruncateSync(this.#fd, 0);
    this.#size = 0;
  }

  close(): void {
    closeSync(this.#fd);
  }
}

/**
 * Makes this process the one broker writing the SQLite store at `storePath` (`<store>-events.owner` holds its pid):
 * a second broker started on the same file would copy and empty the first one's journal under it, and mark its open
 * sessions failed. A file left by a broker that died (its pid is gone) is taken over. Returns the release.
 */
export function claimStore(storePath: string): () => void {
  const path = `${journalPathFor(storePath)}.owner`;
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(path, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
    }
    const owner = Number.parseInt(readTextOrEmpty(path), 10);
    if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && processAlive(owner)) {
      throw new UserError(`the store ${storePath} is in use by another broker (pid ${owner})`, {
        code: 'STORE_IN_USE', hint: `one broker process owns a SQLite store: stop that one, or give this one its own store.path (several brokers share a PostgreSQL store); if no broker runs, remove ${path}`,
      });
    }
    unlinkSync(path);
  }
  return () => {
    try {
      if (readTextOrEmpty(path).trim() === String(process.pid)) unlinkSync(path);
    } catch {
      // Gone already: nothing to give back.
    }
  };
}

function readTextOrEmpty(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
