/**
 * Prometheus metrics of the broker, in the text exposition format, on a listener of their own (`metrics.listen`,
 * loopback unless `allowRemote`), so a scraper needs no OIDC token and the API port stays token-only.
 * Counters live in memory (they restart at 0 with the broker, as Prometheus expects); gauges that describe the
 * store (pending reviews, locks, export lag) are read when scraped.
 * @see https://prometheus.io/docs/instrumenting/exposition_formats/
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Store } from './store/store.js';
import type { EventExporter } from './export/event-export.js';

type Labels = Record<string, string>;

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

export class Counter {
  readonly #values = new Map<string, { labels: Labels; value: number }>();
  constructor(readonly name: string, readonly help: string) {}

  inc(labels: Labels = {}, by = 1): void {
    const key = labelText(labels);
    const v = this.#values.get(key);
    if (v) v.value += by;
    else this.#values.set(key, { labels, value: by });
  }

  render(): string[] {
    return [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`, ...[...this.#values.values()].map((v) => `${this.name}${labelText(v.labels)} ${v.value}`)];
  }
}

/** A gauge computed at scrape time. */
export interface GaugeSource {
  name: string;
  help: string;
  read(): Promise<Array<{ labels?: Labels; value: number }>> | Array<{ labels?: Labels; value: number }>;
}

export class BrokerMetrics {
  readonly sessions = new Counter('hoopctl_sessions_total', 'Sessions by connection, type and outcome (closed, failed, refused).');
  readonly statements = new Counter('hoopctl_session_statements_total', 'Statements, commands or requests handled in sessions that ended.');
  readonly sessionErrors = new Counter('hoopctl_session_errors_total', 'Statements, commands or requests refused or failed in sessions that ended.');
  readonly tokenRejections = new Counter('hoopctl_token_rejections_total', 'Access tokens rejected, by reason code.');
  readonly #gauges: GaugeSource[] = [];

  gauge(source: GaugeSource): void {
    this.#gauges.push(source);
  }

  async render(): Promise<string> {
    const lines: string[] = [];
    for (const c of [this.sessions, this.statements, this.sessionErrors, this.tokenRejections]) lines.push(...c.render());
    for (const g of this.#gauges) {
      lines.push(`# HELP ${g.name} ${g.help}`, `# TYPE ${g.name} gauge`);
      for (const v of await g.read()) lines.push(`${g.name}${labelText(v.labels ?? {})} ${v.value}`);
    }
    return lines.join('\n') + '\n';
  }
}

/** The gauges read at scrape time: live sessions, pending reviews, locks, export health, memory. */
export function registerBrokerGauges(
  metrics: BrokerMetrics,
  o: { store: Store; exporters: EventExporter[]; liveConnections(): Array<{ name: string; type: string }> },
): void {
  metrics.gauge({
    name: 'hoopctl_sessions_active', help: 'Sessions running on this broker now.',
    read: () => {
      const counts = new Map<string, { labels: Record<string, string>; value: number }>();
      for (const c of o.liveConnections()) {
        const key = `${c.name}\0${c.type}`;
        const entry = counts.get(key) ?? { labels: { connection: c.name, type: c.type }, value: 0 };
        entry.value++;
        counts.set(key, entry);
      }
      return [...counts.values()];
    },
  });
  metrics.gauge({ name: 'hoopctl_reviews_pending', help: 'Reviews waiting for a decision.', read: async () => [{ value: (await o.store.listReviews({ status: ['pending'] })).length }] });
  metrics.gauge({ name: 'hoopctl_locks_active', help: 'Identity locks in force.', read: async () => [{ value: (await o.store.activeLocks(Date.now())).length }] });
  metrics.gauge({
    name: 'hoopctl_export_lag_events', help: 'Events recorded but not yet delivered, per export.',
    read: async () => Promise.all(o.exporters.map(async (e) => ({ labels: { export: e.name }, value: (await e.status()).lag }))),
  });
  metrics.gauge({
    name: 'hoopctl_export_failures', help: 'Delivery attempts in a row that failed, per export (0: healthy).',
    read: async () => Promise.all(o.exporters.map(async (e) => ({ labels: { export: e.name }, value: (await e.status()).failures }))),
  });
  metrics.gauge({ name: 'hoopctl_process_resident_memory_bytes', help: 'Resident set size of the broker process.', read: () => [{ value: process.memoryUsage.rss() }] });
}

/** Serves GET /metrics; resolves with the bound address. */
export async function serveMetrics(metrics: BrokerMetrics, host: string, port: number, onError: (e: unknown) => void): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
      return;
    }
    metrics
      .render()
      .then((text) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(text))
      .catch((e: unknown) => {
        onError(e);
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics unavailable\n');
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return { server, url: `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}/metrics` };
}
