/**
 * Prometheus metrics of the broker, in the text exposition format, on a listener of their own (`metrics.listen`,
 * loopback unless `allowRemote`), so a scraper needs no OIDC token and the API port stays token-only.
 * Counters live in memory (they restart at 0 with the broker, as Prometheus expects); gauges that describe the
 * store (pending reviews, locks, export lag) are read when scraped.
 * @see https://prometheus.io/docs/instrumenting/exposition_formats/
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

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
