import { afterAll, describe, expect, it } from 'vitest';
import { appendFileSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import Database from 'better-sqlite3';
import { decodeJournalRecords, encodeJournalRecords, journalPathFor, type JournalEntry } from '../../../src/broker/store/event-journal.js';
import { SqliteStore } from '../../../src/broker/store/sqlite-store.js';
import { StreamRecorder } from '../../../src/broker/recording/stream-recorder.js';
import { GENESIS_HASH, hashEventWithData, verifyChain } from '../../../src/broker/recording/event-chain.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function storePath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-journal-'));
  dirs.push(dir);
  return join(dir, 'broker.db');
}

/** `count` events of `stream` chained after (seq, hash), as a recorder makes them. */
function chained(stream: string, after: { seq: number; hash: string }, count: number): JournalEntry[] {
  const out: JournalEntry[] = [];
  let { seq, hash } = after;
  for (let i = 0; i < count; i++) {
    const data = { sql: `insert into t values (${seq + 1}, 'ünïcode ✓ ${'x'.repeat(i * 7)}')` };
    const json = JSON.stringify(data);
    const event = { stream, seq: seq + 1, at: 1_700_000_000_000 + seq, type: 'statement', data, prevHash: hash };
    hash = hashEventWithData(event, json);
    seq++;
    out.push({ event: { ...event, hash }, data: json });
  }
  return out;
}

describe('the event journal format', () => {
  it('gives back every record as written, the data byte for byte as hashed', () => {
    const entries = chained('ses_a', { seq: 0, hash: GENESIS_HASH }, 5);
    const decoded = decodeJournalRecords(encodeJournalRecords(entries));
    expect(decoded.tornBytes).toBe(0);
    expect(decoded.entries).toEqual(entries);
    expect(verifyChain(decoded.entries.map((e) => e.event))).toEqual({ ok: true });
  });

  it('writes each record as its documented bytes: length, CRC-32, the fields as one JSON array, a newline, the data', () => {
    // Plain fields (a recorder's own) and fields JSON must escape, numbers that are not integers, non-ASCII data.
    const entries: JournalEntry[] = [
      ...chained('ses_0b3c5e1a-8d8e-4f4e-9a1b-000000000001', { seq: 0, hash: GENESIS_HASH }, 2),
      ...chained('audit "quoted" \\ ünï', { seq: 41, hash: GENESIS_HASH }, 2),
      { event: { stream: 'ses_x', seq: 1, at: 1.5, type: 'type\nwith newline', data: {}, prevHash: 'not-hex ✓', hash: 'h' }, data: '{}' },
    ];
    const reference = Buffer.concat(entries.map(({ event: e, data }) => {
      const payload = Buffer.from(`${JSON.stringify([e.stream, e.seq, e.at, e.type, e.prevHash, e.hash])}\n${data}`, 'utf8');
      const head = Buffer.alloc(8);
      head.writeUInt32LE(payload.length, 0);
      head.writeUInt32LE(crc32(payload), 4);
      return Buffer.concat([head, payload]);
    }));
    expect(encodeJournalRecords(entries).equals(reference)).toBe(true);
    // Through a reused buffer, as the journal encodes its batches: the same bytes, whatever the buffer held before.
    const scratch = Buffer.alloc(64 * 1024, 0xee);
    expect(encodeJournalRecords(entries.slice(3), scratch).equals(encodeJournalRecords(entries.slice(3)))).toBe(true);
    expect(encodeJournalRecords(entries, scratch).equals(reference)).toBe(true);
    // A batch larger than the buffer gets one of its own.
    expect(encodeJournalRecords(entries, Buffer.alloc(16)).equals(reference)).toBe(true);
  });

  it('stops at a record cut short anywhere, keeping every whole one before it', () => {
    const entries = chained('ses_a', { seq: 0, hash: GENESIS_HASH }, 3);
    const whole = encodeJournalRecords(entries.slice(0, 2));
    const bytes = encodeJournalRecords(entries);
    for (let cut = whole.length + 1; cut < bytes.length; cut++) {
      const decoded = decodeJournalRecords(bytes.subarray(0, cut));
      expect(decoded.entries).toEqual(entries.slice(0, 2));
      expect(decoded.tornBytes).toBe(cut - whole.length);
    }
  });

  it('stops at a record whose bytes changed', () => {
    const entries = chained('ses_a', { seq: 0, hash: GENESIS_HASH }, 3);
    const bytes = encodeJournalRecords(entries);
    const second = encodeJournalRecords(entries.slice(0, 1)).length;
    bytes[second + 20] ^= 0x01;
    const decoded = decodeJournalRecords(bytes);
    expect(decoded.entries).toEqual(entries.slice(0, 1));
    expect(decoded.tornBytes).toBe(bytes.length - second);
  });
});

describe('a SQLite store starting on the journal a stopped broker left', () => {
  it('copies its whole records into the store, keeps a torn journal aside, and starts with an empty one', async () => {
    const path = storePath();
    let store = new SqliteStore(path);
    const rec = StreamRecorder.fresh(store, 'ses_a');
    await rec.record('open', {});
    const head = (await store.lastEvent('ses_a'))!;
    await store.close();
    const journal = journalPathFor(path);
    expect(statSync(journal).size).toBe(0);
    // What a broker killed in the middle of its last write leaves: two acknowledged records and part of a third.
    const left = chained('ses_a', head, 3);
    const bytes = encodeJournalRecords(left);
    appendFileSync(journal, bytes.subarray(0, bytes.length - 9));

    store = new SqliteStore(path);
    const events = await store.listEvents('ses_a');
    expect(events.map((e) => [e.seq, e.type])).toEqual([[1, 'open'], [2, 'statement'], [3, 'statement']]);
    expect(verifyChain(events)).toEqual({ ok: true });
    expect(statSync(journal).size).toBe(0);
    expect(readdirSync(join(path, '..')).filter((f) => f.startsWith('broker.db-events.damaged-'))).toHaveLength(1);
    // The stream goes on after the last whole record.
    await (await StreamRecorder.open(store, 'ses_a')).record('result', { statementSeq: 3 });
    expect(verifyChain(await store.listEvents('ses_a'))).toEqual({ ok: true });
    await store.close();
  });

  it('copies nothing twice when the store already holds what the journal holds', async () => {
    const path = storePath();
    let store = new SqliteStore(path);
    const rec = StreamRecorder.fresh(store, 'ses_b');
    for (let i = 0; i < 4; i++) await rec.record('statement', { sql: `select ${i}` });
    const held = await store.listEvents('ses_b');
    await store.close();
    // A broker stopped after copying its journal into SQLite and before emptying it.
    appendFileSync(journalPathFor(path), encodeJournalRecords(held.map((event) => ({ event, data: JSON.stringify(event.data) }))));

    store = new SqliteStore(path);
    expect(await store.listEvents('ses_b')).toEqual(held);
    await store.close();
    const db = new Database(path, { readonly: true });
    try {
      expect(db.prepare('SELECT count(*) AS n FROM events_displaced').get()).toEqual({ n: 0 });
    } finally {
      db.close();
    }
  });
});

describe('a SQLite store killed (-9) while it records', () => {
  it('has every acknowledged event after a restart, and every chain verifies', async () => {
    const { spawn } = await import('node:child_process');
    const { resolve } = await import('node:path');
    const path = storePath();
    // A broker's recording (the built code) in its own process: four sessions record statements as fast as the store
    // acknowledges them, and it prints how many rounds were acknowledged, each as soon as it was.
    const dist = resolve(import.meta.dirname, '../../../dist/src/broker');
    const writer = spawn(process.execPath, ['--input-type=module', '-e', `
      const { SqliteStore } = await import(${JSON.stringify(`${dist}/store/sqlite-store.js`)});
      const { StreamRecorder } = await import(${JSON.stringify(`${dist}/recording/stream-recorder.js`)});
      const store = new SqliteStore(process.env.STORE);
      const sessions = [0, 1, 2, 3].map((i) => StreamRecorder.fresh(store, 'ses_' + i));
      for (let round = 1; ; round++) {
        await Promise.all(sessions.map((s, i) => s.record('statement', { sql: 'insert into t values (' + round + ', ' + i + ')' })));
        process.stdout.write(round + '\\n');
      }
    `], { env: { ...process.env, STORE: path }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    writer.stderr!.on('data', (d) => (stderr += d));
    let acknowledged = 0;
    const exited = new Promise<void>((r) => writer.once('exit', () => r()));
    await new Promise<void>((done, fail) => {
      let out = '';
      writer.stdout!.on('data', (d: Buffer) => {
        out += d;
        const lines = out.split('\n');
        out = lines.pop()!;
        if (lines.length > 0) acknowledged = Number(lines.at(-1));
        if (acknowledged >= 1500 && writer.exitCode === null && !writer.killed) {
          writer.kill('SIGKILL');
          done();
        }
      });
      writer.once('exit', () => fail(new Error(`the writer exited before the kill: ${stderr}`)));
    });
    await exited;

    const store = new SqliteStore(path);
    try {
      for (let i = 0; i < 4; i++) {
        const events = await store.listEvents(`ses_${i}`);
        expect(events.length).toBeGreaterThanOrEqual(acknowledged);
        expect(verifyChain(events)).toEqual({ ok: true });
      }
    } finally {
      await store.close();
    }
    expect(statSync(journalPathFor(path)).size).toBe(0);
  });
});

describe('one broker per SQLite store', () => {
  it('refuses a second process on a store in use, and takes over a store whose broker died', async () => {
    const { spawnSync } = await import('node:child_process');
    const { resolve } = await import('node:path');
    const { writeFileSync } = await import('node:fs');
    const path = storePath();
    const dist = resolve(import.meta.dirname, '../../../dist/src/broker');
    const openElsewhere = () => spawnSync(process.execPath, ['--input-type=module', '-e', `
      const { SqliteStore } = await import(${JSON.stringify(`${dist}/store/sqlite-store.js`)});
      try { await new SqliteStore(process.env.STORE).close(); console.log('opened'); } catch (e) { console.log(e.code + ': ' + e.message); }
    `], { env: { ...process.env, STORE: path }, encoding: 'utf8' });

    const store = new SqliteStore(path);
    expect(openElsewhere().stdout).toBe(`STORE_IN_USE: the store ${path} is in use by another broker (pid ${process.pid})\n`);
    await store.close();
    expect(openElsewhere().stdout).toBe('opened\n');
    // A broker killed with -9 leaves its pid behind; a pid no process has does not hold the store.
    const dead = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
    writeFileSync(`${journalPathFor(path)}.owner`, dead.stdout);
    expect(openElsewhere().stdout).toBe('opened\n');
  });
});
