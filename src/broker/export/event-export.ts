/**
 * Exports every recorded event (all sessions and the audit stream, in commit order) to where a SIEM reads it:
 * JSON lines to a file or stdout, a webhook (NDJSON POSTs), or syslog (RFC 5424 over UDP or TCP).
 *
 * Delivery is at least once and in order: each export follows the store's event order with a cursor saved in the
 * store after a batch is delivered, so a broker restart or an unreachable SIEM loses nothing (a batch may be sent
 * twice around a crash; `stream` + `seq` identify an event). A failing sink is retried with backoff; it never
 * holds up sessions. Events are exported as recorded, which means already masked.
 */
import { appendFile, mkdir } from 'node:fs/promises';
import { createSocket } from 'node:dgram';
import { connect as tcpConnect, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { ExportLease, SessionRow, Store, StoredEvent } from '../store/store.js';
import type { Secret } from '../../lib/secret.js';
import { errorMessage } from '../../lib/errors.js';

export type ExportSinkConfig =
  | { name: string; type: 'file'; path: string; batchSize: number }
  | { name: string; type: 'stdout'; batchSize: number }
  | { name: string; type: 'webhook'; url: string; headers: Record<string, Secret>; timeoutSeconds: number; batchSize: number }
  | { name: string; type: 'syslog'; address: string; appName: string; batchSize: number };

export interface ExportSink {
  send(events: ExportedEvent[]): Promise<void>;
  close(): Promise<void>;
}

/** One event as exported: the stored event, its time in ISO form, and who the session belongs to. */
export interface ExportedEvent {
  stream: string;
  seq: number;
  at: string;
  type: string;
  data: Record<string, unknown>;
  hash: string;
  session?: { connection: string; connectionType: string; subject: string; name: string; kind: string; claims?: Record<string, string> };
}

/** Event types a SIEM should see as warnings (syslog severity 4) rather than information (6). */
const WARNING_TYPES = /refused|denied|rejected|mismatch|unreadable|failed|token-/;

function toLine(e: ExportedEvent): string {
  return JSON.stringify(e);
}

class FileSink implements ExportSink {
  constructor(private readonly path: string) {}
  async send(events: ExportedEvent[]): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    await appendFile(this.path, events.map(toLine).join('\n') + '\n', { mode: 0o600 });
  }
  async close(): Promise<void> {}
}

class StdoutSink implements ExportSink {
  async send(events: ExportedEvent[]): Promise<void> {
    const text = events.map(toLine).join('\n') + '\n';
    await new Promise<void>((resolve, reject) => process.stdout.write(text, (e) => (e ? reject(e) : resolve())));
  }
  async close(): Promise<void> {}
}

class WebhookSink implements ExportSink {
  constructor(private readonly c: Extract<ExportSinkConfig, { type: 'webhook' }>) {}
  async send(events: ExportedEvent[]): Promise<void> {
    const headers: Record<string, string> = { 'content-type': 'application/x-ndjson' };
    for (const [name, value] of Object.entries(this.c.headers)) headers[name] = value.reveal();
    const res = await fetch(this.c.url, { method: 'POST', headers, body: events.map(toLine).join('\n') + '\n', signal: AbortSignal.timeout(this.c.timeoutSeconds * 1000) });
    await res.arrayBuffer().catch(() => undefined);
    if (!res.ok) throw new Error(`the webhook answered HTTP ${res.status}`);
  }
  async close(): Promise<void> {}
}

/** RFC 5424 messages (facility 13, "log audit"), one per event; TCP uses octet counting (RFC 6587). */
class SyslogSink implements ExportSink {
  readonly #proto: 'udp' | 'tcp';
  readonly #host: string;
  readonly #port: number;
  readonly #host0 = hostname().replace(/[^\x21-\x7e]/g, '-').slice(0, 255) || '-';
  #tcp?: Socket;

  constructor(private readonly c: Extract<ExportSinkConfig, { type: 'syslog' }>) {
    const u = new URL(c.address);
    this.#proto = u.protocol === 'tcp:' ? 'tcp' : 'udp';
    this.#host = u.hostname.replace(/^\[|\]$/g, '');
    this.#port = Number(u.port);
  }

  format(e: ExportedEvent): string {
    const severity = WARNING_TYPES.test(e.type) ? 4 : 6;
    const msgId = e.type.replace(/[^\x21-\x7e]/g, '_').slice(0, 32) || '-';
    const app = this.c.appName.replace(/[^\x21-\x7e]/g, '_').slice(0, 48);
    return `<${13 * 8 + severity}>1 ${e.at} ${this.#host0} ${app} ${process.pid} ${msgId} - ${toLine(e)}`;
  }

  async send(events: ExportedEvent[]): Promise<void> {
    if (this.#proto === 'udp') {
      const socket = createSocket(this.#host.includes(':') ? 'udp6' : 'udp4');
      try {
        for (const e of events) {
          await new Promise<void>((resolve, reject) => socket.send(Buffer.from(this.format(e)), this.#port, this.#host, (err) => (err ? reject(err) : resolve())));
        }
      } finally {
        socket.close();
      }
      return;
    }
    const tcp = await this.#connection();
    const frames = events.map((e) => {
      const msg = Buffer.from(this.format(e));
      return Buffer.concat([Buffer.from(`${msg.length} `), msg]);
    });
    await new Promise<void>((resolve, reject) => tcp.write(Buffer.concat(frames), (err) => (err ? reject(err) : resolve())));
  }

  #connection(): Promise<Socket> {
    if (this.#tcp && !this.#tcp.destroyed) return Promise.resolve(this.#tcp);
    return new Promise((resolve, reject) => {
      const s = tcpConnect(this.#port, this.#host);
      s.once('connect', () => {
        s.off('error', reject);
        s.on('error', () => s.destroy());
        this.#tcp = s;
        resolve(s);
      });
      s.once('error', reject);
    });
  }

  async close(): Promise<void> {
    this.#tcp?.end();
  }
}

export function createSink(c: ExportSinkConfig): ExportSink {
  switch (c.type) {
    case 'file':
      return new FileSink(c.path);
    case 'stdout':
      return new StdoutSink();
    case 'webhook':
      return new WebhookSink(c);
    case 'syslog':
      return new SyslogSink(c);
  }
}

/** Longest wait between retries of a failing sink. */
const MAX_BACKOFF_MS = 30_000;

/** Follows the store's event order and hands each batch to one sink; one exporter per configured export. */
export class EventExporter {
  readonly #store: Store;
  readonly #sink: ExportSink;
  readonly #name: string;
  readonly #batchSize: number;
  readonly #intervalMs: number;
  readonly #log?: Logger;
  readonly #sessions = new Map<string, ExportedEvent['session'] | null>();
  #cursor?: number;
  #lease?: ExportLease;
  #timer?: NodeJS.Timeout;
  #running?: Promise<void>;
  #failures = 0;
  #stopped = false;

  constructor(store: Store, sink: ExportSink, o: { name: string; batchSize: number; intervalMs?: number; logger?: Logger }) {
    this.#store = store;
    this.#sink = sink;
    this.#name = o.name;
    this.#batchSize = o.batchSize;
    this.#intervalMs = o.intervalMs ?? 1000;
    this.#log = o.logger?.child({ export: o.name });
  }

  start(): void {
    this.#schedule(0);
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#running = this.#tick().finally(() => (this.#running = undefined));
    }, ms);
    this.#timer.unref();
  }

  async #tick(): Promise<void> {
    let delivered = 0;
    try {
      delivered = await this.drainOnce();
      if (this.#failures > 0) this.#log?.info({ after: this.#failures }, 'export delivering again');
      this.#failures = 0;
    } catch (e) {
      this.#failures++;
      // One line per streak at warn, the rest at debug: an unreachable SIEM must not flood the broker's log.
      if (this.#failures === 1) this.#log?.warn({ err: errorMessage(e) }, 'export failed; retrying with backoff');
      else this.#log?.debug({ err: errorMessage(e), failures: this.#failures }, 'export still failing');
    }
    const backoff = this.#failures > 0 ? Math.min(this.#intervalMs * 2 ** this.#failures, MAX_BACKOFF_MS) : delivered === this.#batchSize ? 0 : this.#intervalMs;
    this.#schedule(backoff);
  }

  /**
   * Delivers one batch (if any) and saves the cursor; returns how many events went out. Only the replica holding
   * the export's lease delivers; the others stand by and ask again each interval. A replica that takes the lease
   * over reads the cursor its predecessor saved.
   */
  async drainOnce(): Promise<number> {
    if (!this.#lease?.held) {
      this.#lease = await this.#store.acquireExportLease(this.#name);
      this.#cursor = undefined;
      if (!this.#lease) return 0;
      this.#log?.info('export lease taken: this replica delivers');
    }
    this.#cursor ??= await this.#store.exportCursor(this.#name);
    const batch = await this.#store.eventsSince(this.#cursor, this.#batchSize);
    if (batch.length === 0) return 0;
    const events = await Promise.all(batch.map((e) => this.#exported(e)));
    await this.#sink.send(events);
    const pos = batch.at(-1)!.pos;
    await this.#store.saveExportCursor(this.#name, pos);
    this.#cursor = pos;
    return batch.length;
  }

  async #exported(e: StoredEvent): Promise<ExportedEvent> {
    let session = this.#sessions.get(e.stream);
    if (session === undefined) {
      const row: SessionRow | undefined = await this.#store.getSession(e.stream);
      session = row
        ? {
            connection: row.connection, connectionType: row.connectionType, subject: row.identity.subject, name: row.identity.name, kind: row.identity.kind,
            ...(row.identity.claims ? { claims: row.identity.claims } : {}),
          }
        : null;
      if (this.#sessions.size > 10_000) this.#sessions.clear();
      this.#sessions.set(e.stream, session);
    }
    return { stream: e.stream, seq: e.seq, at: new Date(e.at).toISOString(), type: e.type, data: e.data, hash: e.hash, ...(session ? { session } : {}) };
  }

  get name(): string {
    return this.#name;
  }

  /** Events recorded but not yet delivered, and how many attempts in a row have failed. */
  async status(): Promise<{ lag: number; failures: number }> {
    const cursor = this.#cursor ?? (await this.#store.exportCursor(this.#name));
    return { lag: Math.max(0, (await this.#store.lastEventPos()) - cursor), failures: this.#failures };
  }

  /** Stops following; delivers what is left (best effort, bounded by `timeoutMs`) and closes the sink. */
  async stop(timeoutMs = 5000): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
    const deadline = Date.now() + timeoutMs;
    try {
      while (Date.now() < deadline && (await this.drainOnce()) > 0);
    } catch (e) {
      this.#log?.warn({ err: errorMessage(e) }, 'export could not deliver everything before the broker stopped; it resumes from its cursor');
    }
    await this.#lease?.release();
    this.#lease = undefined;
    await this.#sink.close();
  }
}
