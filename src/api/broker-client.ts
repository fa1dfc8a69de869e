/**
 * The one client of the broker's HTTP API: every command's requests go through it (JSON calls and event streams),
 * with the bearer token, hoopctl's user agent, and the broker's refusals turned into user errors with its hint.
 */
import { HoopError, UserError } from '../lib/errors.js';

export const USER_AGENT = 'hoopctl/0.1.0';

/** A broker's JSON error body (`{ error: { code, message, hint } }`) as the error a command prints. */
export function brokerRefusal(status: number, body: string): HoopError {
  try {
    const parsed = JSON.parse(body) as { error?: { code?: string; message?: string; hint?: string } };
    if (parsed.error?.message) {
      return new UserError(parsed.error.message, { code: parsed.error.code ?? 'BROKER_ERROR', hint: parsed.error.hint, status });
    }
  } catch {
    // not JSON: fall through
  }
  return new UserError(`broker answered HTTP ${status}`, { code: 'BROKER_ERROR', status });
}

export class BrokerClient {
  readonly broker: string;
  readonly #token: () => Promise<string>;

  /** `token` runs before every request, so a long-running command keeps a fresh token. */
  constructor(broker: string, token: () => Promise<string>) {
    this.broker = broker;
    this.#token = token;
  }

  get<T>(path: string): Promise<T> {
    return this.#json<T>(path, { method: 'GET' });
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.#json<T>(path, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  }

  /** A server-sent event stream (`text/event-stream`): the open response, for `serverSentEvents` to read. */
  async stream(path: string, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    const res = await this.#fetch(path, { method: 'GET', headers: { accept: 'text/event-stream' }, signal });
    if (!res.ok || !res.body) throw brokerRefusal(res.status, await res.text());
    return res.body;
  }

  async #json<T>(path: string, init: RequestInit & { headers?: Record<string, string> }): Promise<T> {
    const res = await this.#fetch(path, init);
    const text = await res.text();
    if (!res.ok) throw brokerRefusal(res.status, text);
    return JSON.parse(text) as T;
  }

  async #fetch(path: string, init: RequestInit & { headers?: Record<string, string> }): Promise<Response> {
    const headers = { ...init.headers, authorization: `Bearer ${await this.#token()}`, 'user-agent': USER_AGENT };
    try {
      return await fetch(new URL(path, this.broker), { ...init, headers });
    } catch (e) {
      if (init.signal?.aborted) throw e;
      throw new UserError(`cannot reach the broker at ${this.broker}: ${(e as Error).cause ?? (e as Error).message}`, { code: 'BROKER_UNREACHABLE' });
    }
  }
}
