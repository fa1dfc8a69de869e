/**
 * PostgreSQL frontend messages for the fuzzer: well-formed ones of every kind a client sends after startup (and the
 * startup-phase requests), and mutations of them — flipped bits, cut or grown bodies, lost terminators, hostile counts,
 * a wrong type byte and, rarely, a broken length field that breaks the framing itself.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
import {
  createBind,
  createCancelRequest,
  createClose,
  createCopyData,
  createDescribe,
  createExecute,
  createParse,
  createPasswordMessage,
  createQuery,
  createSASLInitialResponse,
  createSASLResponse,
  createSSLRequest,
  createStartupMessage,
  createSync,
  createTerminate,
} from '../../src/broker/protocols/postgres/messages.js';
import type { Rng } from './rng.js';

/** Statements a fuzz session starts from: reads, writes, COPY both ways, transactions, errors, policy-denied DDL. */
export const FUZZ_SQL = [
  'select 1',
  'select id, email, note from fuzz_t where id = 1',
  'select * from fuzz_t order by id',
  "select 'ada@example.com' as email, '4111 1111 1111 1111' as card",
  'select $1::text as v',
  'select $1::int + $2::int as n',
  'begin',
  'commit',
  'rollback',
  'savepoint s1',
  'update fuzz_t set note = note where id = 2',
  'delete from fuzz_t where id < 0',
  'with d as (delete from fuzz_t where id < 0 returning *) select * from d',
  'insert into fuzz_t (id, email, note) select 1000, null, null where false',
  'copy fuzz_t to stdout',
  'copy (select id, email from fuzz_t) to stdout with (format csv, header)',
  'copy fuzz_sink from stdin',
  'copy fuzz_t to stdout with (format binary)',
  'create temp table if not exists fuzz_tmp (a int)',
  'drop table fuzz_t',
  'grant all on fuzz_t to public',
  'set application_name = fuzz',
  'select pg_backend_pid()',
  'explain select * from fuzz_t',
  'do $$ begin perform 1; end $$',
  'select 1; select 2',
  '',
  ';',
  'selec 1',
  "select E'\\xff'",
  "select repeat('x', 2000)",
  'values (1, 2), (3, 4)',
  'prepare fp as select $1::int; execute fp(1); deallocate fp',
  'listen fuzz; notify fuzz',
  'select * from fuzz_t for update',
  'show all',
] as const;

const NAMES = ['', '', 's1', 's2', 'p1', 'fp'];

/** A startup message for the fuzz role, as a client sends it first. */
export function startupMessage(database: string, applicationName = 'hoopctl-fuzz'): Buffer {
  return createStartupMessage({ user: 'fuzz', database, application_name: applicationName });
}

/** Appends a well-formed frontend message or a small well-formed exchange (Parse … Sync, COPY rows). */
export function wellFormed(r: Rng): Buffer[] {
  const sql = r.pick(FUZZ_SQL);
  switch (r.int(16)) {
    case 0:
    case 1:
    case 2:
      return [createQuery(sql)];
    case 3:
    case 4: {
      // A whole extended-protocol round.
      const stmt = r.pick(NAMES);
      const portal = r.pick(NAMES);
      const params = sql.includes('$2') ? ['1', '2'] : sql.includes('$1') ? [r.pick(['7', 'x', 'ada@example.com'])] : [];
      return [
        createParse({ name: stmt, sql, paramTypes: r.chance(0.3) ? params.map(() => 0) : [] }),
        createBind({ portal, statement: stmt, params, resultFormats: r.chance(0.2) ? [1] : [] }),
        createDescribe(r.chance(0.5) ? 'P' : 'S', r.chance(0.5) ? portal : stmt),
        createExecute({ portal, maxRows: r.chance(0.2) ? 1 + r.int(3) : 0 }),
        createSync(),
      ];
    }
    case 5:
      return [createParse({ name: r.pick(NAMES), sql, paramTypes: r.chance(0.5) ? [23] : [] })];
    case 6:
      return [createBind({ portal: r.pick(NAMES), statement: r.pick(NAMES), params: r.chance(0.5) ? [null, Buffer.from([0, 0, 0, 7])] : ['1'], binary: [false, true], resultFormats: r.chance(0.3) ? [0, 1] : [] })];
    case 7:
      return [createDescribe(r.chance(0.5) ? 'P' : 'S', r.pick(NAMES))];
    case 8:
      return [createExecute({ portal: r.pick(NAMES), maxRows: r.int(3) })];
    case 9:
      return [createClose(r.chance(0.5) ? 'P' : 'S', r.pick(NAMES))];
    case 10:
      return [r.chance(0.5) ? createSync() : frame('H', Buffer.alloc(0))];
    case 11:
      // COPY FROM STDIN with rows; outside COPY, PostgreSQL ignores CopyData, CopyDone and CopyFail.
      return [createQuery('copy fuzz_sink from stdin'), createCopyData(`row ${r.int(1000)}\tx\n`), createCopyData('ada@example.com\n'), r.chance(0.8) ? frame('c', Buffer.alloc(0)) : copyFail('fuzz')];
    case 12:
      return [r.chance(0.5) ? createCopyData(r.bytes(r.int(64))) : copyFail('stray')];
    case 13:
      return [functionCall(r)];
    case 14:
      // Password and SASL messages after authentication: the broker asked for none.
      return [r.pick([createPasswordMessage('hunter2'), createSASLInitialResponse('SCRAM-SHA-256', 'n,,n=fuzz,r=abc'), createSASLResponse('c=biws,r=abc,p=xyz')])];
    default:
      return [createQuery(sql)];
  }
}

/** FunctionCall ('F'): abs(int4) by OID, with text or binary arguments. */
function functionCall(r: Rng): Buffer {
  const args: Array<Buffer | null> = r.chance(0.5) ? [Buffer.from([0xff, 0xff, 0xff, 0xf9])] : [null];
  const parts: Buffer[] = [int32(1397), int16(1), int16(1), int16(args.length)];
  for (const a of args) parts.push(a === null ? int32(-1) : Buffer.concat([int32(a.length), a]));
  parts.push(int16(0));
  return frame('F', Buffer.concat(parts));
}

function copyFail(message: string): Buffer {
  return frame('f', Buffer.from(`${message}\0`));
}

export function frame(type: string | number, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head[0] = typeof type === 'number' ? type : type.charCodeAt(0);
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

function int32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(v | 0);
  return b;
}

function int16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeInt16BE(((v & 0xffff) << 16) >> 16);
  return b;
}

const INTERESTING_16 = [0, 1, -1, 0x7fff, -0x8000, 2, 3, 1000];
const INTERESTING_32 = [0, 1, -1, -2, 0x7fffffff, -0x80000000, 4, 5, 0x10000, 1 << 24];
/** Length fields that break the framing: too small, off by one, beyond the broker's cap. */
const BAD_LENGTHS = [0, 1, 3, -1, -4, 0x7fffffff, 256 * 1024 * 1024 + 1];

export type MutationKind =
  | 'bit-flip' | 'byte-set' | 'truncate' | 'extend' | 'terminator' | 'int16' | 'int32' | 'type-byte' | 'random-body' | 'splice' | 'length';

/**
 * One mutation of one message. The length field is kept consistent with the body except for 'length', which
 * breaks the framing (the only kind after which the rest of the stream cannot be read at all).
 */
export function mutate(r: Rng, message: Buffer, other: Buffer): { bytes: Buffer; kind: MutationKind } {
  const type = message[0]!;
  let body: Buffer = Buffer.from(message.subarray(5));
  const roll = r.int(100);
  let kind: MutationKind;
  if (roll < 3) {
    const head = Buffer.from(message.subarray(0, 5));
    const pick = r.int(3);
    head.writeInt32BE(pick === 0 ? r.pick(BAD_LENGTHS) : pick === 1 ? body.length + 4 - 1 - r.int(3) : body.length + 4 + 1 + r.int(64), 1);
    return { bytes: Buffer.concat([head, body]), kind: 'length' };
  } else if (roll < 18 && body.length > 0) {
    kind = 'bit-flip';
    for (let i = 0, n = 1 + r.int(4); i < n; i++) body[r.int(body.length)]! ^= 1 << r.int(8);
  } else if (roll < 30 && body.length > 0) {
    kind = 'byte-set';
    for (let i = 0, n = 1 + r.int(3); i < n; i++) body[r.int(body.length)] = r.pick([0, 0xff, 0x7f, 0x80, r.int(256)]);
  } else if (roll < 42 && body.length > 0) {
    kind = 'truncate';
    body = body.subarray(0, r.int(body.length));
  } else if (roll < 50) {
    kind = 'extend';
    const at = r.int(body.length + 1);
    body = Buffer.concat([body.subarray(0, at), r.bytes(1 + r.int(32)), body.subarray(at)]);
  } else if (roll < 60 && body.includes(0)) {
    kind = 'terminator';
    for (let i = 0; i < body.length; i++) if (body[i] === 0 && r.chance(0.7)) body[i] = 0x41;
  } else if (roll < 70 && body.length >= 2) {
    kind = 'int16';
    body.writeInt16BE(r.pick(INTERESTING_16), r.int(body.length - 1));
  } else if (roll < 78 && body.length >= 4) {
    kind = 'int32';
    body.writeInt32BE(r.pick(INTERESTING_32), r.int(body.length - 3));
  } else if (roll < 86) {
    kind = 'type-byte';
    return { bytes: frame(r.chance(0.5) ? r.int(256) : r.pick([...'QPBDECSHFdcfpXKTZ12']).charCodeAt(0), body), kind };
  } else if (roll < 93) {
    kind = 'random-body';
    body = r.bytes(r.int(r.chance(0.9) ? 64 : 20_000));
  } else {
    kind = 'splice';
    const from = other.subarray(5);
    body = Buffer.concat([body.subarray(0, r.int(body.length + 1)), from.subarray(r.int(from.length + 1))]);
  }
  return { bytes: frame(type, body), kind };
}

/** The startup phase, mutated or not: encryption requests, protocol versions, odd parameters, cancel requests. */
export function startupPhase(r: Rng, database: string): { bytes: Buffer[]; expectN: number; cancel: boolean } {
  const bytes: Buffer[] = [];
  let expectN = 0;
  for (let i = r.int(3); i > 0; i--) {
    bytes.push(r.chance(0.5) ? createSSLRequest() : Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]));
    expectN++;
  }
  const kind = r.int(10);
  if (kind === 0) return { bytes: [...bytes, createCancelRequest({ pid: r.int(2 ** 31), secret: r.int(2 ** 31) | 0 })], expectN, cancel: true };
  const params: Record<string, string> = { user: 'fuzz', database };
  if (kind === 1) params.replication = r.pick(['true', 'database', 'off', '1']);
  if (kind === 2) params.database = r.pick(['postgres', 'nope', '', database.toUpperCase()]);
  if (kind === 3) params[`_pq_.${r.pick(['x', 'compression'])}`] = 'on';
  if (kind === 4) params[String.fromCharCode(1 + r.int(200)).repeat(1 + r.int(3))] = r.bytes(r.int(20)).toString('latin1');
  if (kind === 5) params.options = '-c statement_timeout=1';
  if (kind === 6) params.application_name = 'é'.repeat(r.int(200));
  let startup: Buffer = createStartupMessage(params);
  if (kind === 7) startup.writeInt32BE(r.pick([0x00030001, 0x00020000, 0x00040000, 0x12345678, 0x00030000]), 4);
  if (kind === 8) {
    // Structural damage: a cut, a flipped byte, a length of its own.
    startup = Buffer.from(startup);
    const pick = r.int(3);
    if (pick === 0) startup = startup.subarray(0, 8 + r.int(startup.length - 8));
    else if (pick === 1) startup[8 + r.int(startup.length - 8)] = r.int(256);
    else startup.writeInt32BE(r.pick([0, 4, 7, 9, 10_001, -1, startup.length + 3]), 0);
  }
  return { bytes: [...bytes, startup], expectN, cancel: false };
}

/**
 * What the client can know about its own stream, as the broker's frame scanner sees it: on a frame boundary, in
 * the middle of a frame, past a Terminate, or broken by a length field below 4 or above the cap.
 */
export class FrameModel {
  state: 'boundary' | 'mid-frame' | 'terminated' | 'broken' = 'boundary';
  #header = Buffer.alloc(5);
  #headerLen = 0;
  #remaining = 0;
  #code = 0;

  constructor(private readonly maxLength: number) {}

  feed(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length && (this.state === 'boundary' || this.state === 'mid-frame')) {
      if (this.#headerLen < 5) {
        const take = Math.min(5 - this.#headerLen, chunk.length - pos);
        chunk.copy(this.#header, this.#headerLen, pos, pos + take);
        this.#headerLen += take;
        pos += take;
        this.state = 'mid-frame';
        if (this.#headerLen < 5) return;
        this.#code = this.#header[0]!;
        const length = this.#header.readInt32BE(1);
        if (length < 4 || length > this.maxLength) {
          this.state = 'broken';
          return;
        }
        this.#remaining = length - 4;
      }
      const take = Math.min(this.#remaining, chunk.length - pos);
      this.#remaining -= take;
      pos += take;
      if (this.#remaining > 0) return;
      this.#headerLen = 0;
      this.state = this.#code === 0x58 ? 'terminated' : 'boundary';
    }
  }
}

export { createQuery, createSync, createTerminate, copyFail };
