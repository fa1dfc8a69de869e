import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { createSocket } from 'node:dgram';
import { createServer as createTcpServer } from 'node:net';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { SqliteStore } from '../../src/broker/store/sqlite-store.js';
import { SessionService } from '../../src/broker/session-service.js';
import { createSink, EventExporter, type ExportedEvent } from '../../src/broker/export/event-export.js';
import { parseBrokerConfig } from '../../src/broker/config.js';

/**
 * Exports against a real on-disk store and real receivers (a file, an HTTP server, UDP and TCP syslog listeners):
 * in order, nothing lost across a restart or a failing receiver, secrets kept out of the log.
 */
const dirs: string[] = [];
const closers: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'hoop-export-'));
  dirs.push(d);
  return d;
}

const identity = { subject: 'ci-bot', name: 'deploy pipeline', kind: 'service' as const, groups: [], issuer: 'https://issuer.test' };
const connection = { name: 'pg-prod', type: 'postgres', target: { host: 'db', port: 5432, database: 'app', sslmode: 'disable' }, credentials: { user: 'app' } } as never;

/** A session with `n` statements, recorded through the SessionService as the broker does. */
async function recordSession(store: SqliteStore, n: number, tag: string): Promise<string> {
  const sessions = await SessionService.create(store);
  const { row, recorder } = await sessions.open(identity as never, connection, '127.0.0.1', {});
  for (let i = 0; i < n; i++) void recorder.record('statement', { sql: `select '${tag}-${i}'` });
  await sessions.close(row.id, recorder, { status: 'closed', statementCount: n, errorCount: 0, durationMs: 1 });
  return row.id;
}

async function until(f: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1500 && !f(); i++) await new Promise((r) => setTimeout(r, 20));
  expect(f(), what).toBe(true);
}

describe('event export', () => {
  it('writes JSON lines to a file in commit order, with who the session belongs to, and resumes after a restart without repeating', async () => {
    const dir = tempDir();
    const dbPath = join(dir, 'broker.db');
    const out = join(dir, 'siem', 'events.jsonl');
    let store = new SqliteStore(dbPath);
    const first = await recordSession(store, 3, 'a');
    let exporter = new EventExporter(store, createSink({ name: 'archive', type: 'file', path: out, batchSize: 2 }), { name: 'archive', batchSize: 2, intervalMs: 20 });
    exporter.start();
    const lines = () => readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as ExportedEvent);
    await until(() => { try { return lines().length === 5; } catch { return false; } }, 'the first session exported');
    await exporter.stop();
    await store.close();

    // A new broker process on the same store: a second session; the export goes on where it stopped.
    store = new SqliteStore(dbPath);
    const second = await recordSession(store, 2, 'b');
    exporter = new EventExporter(store, createSink({ name: 'archive', type: 'file', path: out, batchSize: 500 }), { name: 'archive', batchSize: 500, intervalMs: 20 });
    exporter.start();
    await until(() => lines().length === 9, 'the second session exported');
    await exporter.stop();
    await store.close();

    const all = lines();
    expect(all.map((e) => `${e.stream === first ? 'A' : e.stream === second ? 'B' : '?'}${e.seq}:${e.type}`)).toEqual([
      'A1:open', 'A2:statement', 'A3:statement', 'A4:statement', 'A5:close',
      'B1:open', 'B2:statement', 'B3:statement', 'B4:close',
    ]);
    expect(all[1]).toMatchObject({ data: { sql: "select 'a-0'" }, session: { connection: 'pg-prod', subject: 'ci-bot', kind: 'service' }, at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) });
    expect(all.every((e) => /^[0-9a-f]{64}$/.test(e.hash))).toBe(true);
  });

  it('retries a webhook that fails, delivers everything once it answers, and never logs the secret header', async () => {
    const dir = tempDir();
    const store = new SqliteStore(join(dir, 'broker.db'));
    closers.push(() => store.close());
    const received: ExportedEvent[] = [];
    const seenHeaders: IncomingHttpHeaders[] = [];
    let failuresLeft = 2;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seenHeaders.push(req.headers);
        if (failuresLeft-- > 0) return void res.writeHead(503).end('busy');
        for (const line of Buffer.concat(chunks).toString().trim().split('\n')) received.push(JSON.parse(line) as ExportedEvent);
        res.writeHead(202).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise<void>((r) => server.close(() => r())));
    const logLines: string[] = [];
    const logger = pino({ level: 'debug' }, { write: (l: string) => void logLines.push(l) });
    const config = parseBrokerConfig(
      {
        auth: { issuers: [{ issuer: 'https://issuer.test', audience: 'urn:t' }] },
        export: [{ name: 'siem', type: 'webhook', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/ingest`, headers: { Authorization: { value: 'Splunk s3cr3t-hec-token' } } }],
      },
      { baseDir: dir },
    );
    await recordSession(store, 4, 'w');
    const sink = config.export[0]!;
    const exporter = new EventExporter(store, createSink(sink), { name: sink.name, batchSize: sink.batchSize, intervalMs: 20, logger });
    exporter.start();
    await until(() => received.length === 6, 'delivered after two refusals');
    await exporter.stop();
    expect(received.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(seenHeaders.length).toBe(3);
    expect(seenHeaders.every((h) => h.authorization === 'Splunk s3cr3t-hec-token' && h['content-type'] === 'application/x-ndjson')).toBe(true);
    expect(logLines.join('')).toContain('the webhook answered HTTP 503');
    expect(logLines.join('')).not.toContain('s3cr3t');
  });

  it('sends RFC 5424 syslog over UDP and TCP, denials as warnings', async () => {
    const dir = tempDir();
    const store = new SqliteStore(join(dir, 'broker.db'));
    closers.push(() => store.close());
    const sessions = await SessionService.create(store);
    await sessions.refuse(identity as never, 'pg-prod', 'postgres', '10.0.0.9', 'not in the allowed groups');
    await recordSession(store, 1, 's');

    const udp = createSocket('udp4');
    const udpMessages: string[] = [];
    udp.on('message', (m) => udpMessages.push(m.toString()));
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
    closers.push(() => udp.close());
    let tcpData = '';
    const tcp = createTcpServer((s) => s.on('data', (d) => (tcpData += d.toString())));
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise<void>((r) => tcp.close(() => r())));

    for (const [name, address] of [['udp', `udp://127.0.0.1:${udp.address().port}`], ['tcp', `tcp://127.0.0.1:${(tcp.address() as AddressInfo).port}`]] as const) {
      const exporter = new EventExporter(store, createSink({ name, type: 'syslog', address, appName: 'hoopctl', batchSize: 500 }), { name, batchSize: 500, intervalMs: 20 });
      exporter.start();
      if (name === 'udp') await until(() => udpMessages.length === 4, 'four datagrams');
      else await until(() => (tcpData.match(/<\d+>1 /g) ?? []).length === 4, 'four framed messages');
      await exporter.stop();
    }
    const syslogLine = /^<(\d+)>1 \d{4}-\d\d-\d\dT[\d:.]+Z \S+ hoopctl \d+ (\S+) - (\{.*\})$/;
    const parsed = udpMessages.map((m) => syslogLine.exec(m)!);
    expect(parsed.every(Boolean)).toBe(true);
    expect(parsed.map((m) => [Number(m[1]), m[2]])).toEqual([[108, 'access-denied'], [110, 'open'], [110, 'statement'], [110, 'close']]);
    expect(parsed[0]![1]).toBe(String(13 * 8 + 4));
    expect(JSON.parse(parsed[0]![3]!)).toMatchObject({ type: 'access-denied', data: { reason: 'not in the allowed groups' }, session: { subject: 'ci-bot' } });
    expect(parsed.slice(1).every((m) => m[1] === String(13 * 8 + 6))).toBe(true);
    // TCP frames are octet-counted: "<length> <message>".
    const first = /^(\d+) /.exec(tcpData)!;
    expect(tcpData.slice(first[0].length, first[0].length + Number(first[1]))).toBe(udpMessages[0]);
  });

  it('names the field of a bad export config', () => {
    const base = { auth: { issuers: [{ issuer: 'https://issuer.test', audience: 'urn:t' }] } };
    expect(() => parseBrokerConfig({ ...base, export: [{ name: 'x', type: 'syslog', address: 'localhost:514' }] }, { baseDir: '/' })).toThrow(/export\[0\]\.address: .*udp:\/\/host:port/);
    expect(() => parseBrokerConfig({ ...base, export: [{ name: 'x', type: 'file', path: 'a' }, { name: 'x', type: 'stdout' }] }, { baseDir: '/' })).toThrow(/export\[1\]\.name: export name "x" is used twice/);
    expect(() => parseBrokerConfig({ ...base, export: [{ name: 'x', type: 'webhook', url: 'ftp://siem' }] }, { baseDir: '/' })).toThrow(/export\[0\]\.url/);
  });
});
