/**
 * What happens to a running session over time: the limits that end it (duration, idleness, its token's expiry),
 * following its events live for `hoopctl sessions watch`, and the registry of sessions running in this process.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { EventEmitter } from 'node:events';
import type { Store } from './store/store.js';
import type { Identity } from '../api/identity.js';
import type { Connection } from './config.js';
import type { StreamRecorder } from './recording/stream-recorder.js';
import { formatDurationMs } from '../lib/duration.js';

export interface SessionLimits {
  /** End the session this long after it opened. */
  maxDuration?: number;
  /** End it once the client has sent nothing for this long (Teleport's client_idle_timeout). */
  idleTimeout?: number;
  /** End it when the access token that opened it expires. */
  endWithToken?: boolean;
  /** Sessions one identity may have open on the connection at once (checked when a session opens). */
  maxConcurrent?: number;
}

/**
 * Arms the limits on a session's tunnel; `end` is called once with the reason. Returns the cleanup. `activity` emits
 * `message` whenever the client sends something (a tunnel's WebSocket; an in-process MCP call's stream).
 */
export function enforceSessionLimits(ws: EventEmitter, limits: SessionLimits, tokenExpiresAt: number, end: (reason: string) => void): () => void {
  const timers: NodeJS.Timeout[] = [];
  if (limits.endWithToken) {
    // Timers hold 32-bit delays: a token valid for longer than ~24 days is checked again later.
    const arm = () => {
      const left = tokenExpiresAt - Date.now();
      if (left <= 0) return end('the access token that opened the session expired; open a new one');
      timers.push(setTimeout(arm, Math.min(left, 2 ** 31 - 1)));
    };
    arm();
  }
  const { maxDuration, idleTimeout } = limits;
  if (maxDuration) timers.push(setTimeout(() => end(`the session reached its maximum duration of ${formatDurationMs(maxDuration)}`), maxDuration));
  let onMessage: (() => void) | undefined;
  if (idleTimeout) {
    let last = Date.now();
    onMessage = () => void (last = Date.now());
    ws.on('message', onMessage);
    const check = () => {
      const quiet = Date.now() - last;
      if (quiet >= idleTimeout) return end(`the session was idle for ${formatDurationMs(idleTimeout)}`);
      timers.push(setTimeout(check, idleTimeout - quiet));
    };
    timers.push(setTimeout(check, idleTimeout));
  }
  return () => {
    for (const t of timers) clearTimeout(t);
    if (onMessage) ws.off('message', onMessage);
  };
}

/**
 * A session's events as server-sent events, from `after` on, as they are recorded (the store is polled, so any
 * writer's events show); ends with an `end` event once the session is over and everything was sent.
 */
export function followSession(store: Store, req: IncomingMessage, res: ServerResponse, id: string, after: number): void {
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive' });
  res.write(': live\n\n');
  let gone = false;
  let timer: NodeJS.Timeout | undefined;
  let quietSince = Date.now();
  req.on('close', () => {
    gone = true;
    clearTimeout(timer);
  });
  const poll = async () => {
    if (gone) return;
    const events = await store.listEvents(id, { afterSeq: after, limit: 500 });
    for (const e of events) {
      res.write(`event: event\ndata: ${JSON.stringify(e)}\n\n`);
      after = e.seq;
    }
    if (events.length > 0) quietSince = Date.now();
    else {
      const row = await store.getSession(id);
      if (row && row.status !== 'open') {
        res.write(`event: end\ndata: ${JSON.stringify({ status: row.status })}\n\n`);
        return void res.end();
      }
      if (Date.now() - quietSince > 15_000) {
        res.write(': keepalive\n\n');
        quietSince = Date.now();
      }
    }
    timer = setTimeout(() => void poll().catch(() => res.end()), events.length === 500 ? 0 : 250);
  };
  void poll().catch(() => res.end());
}

/** A session running in this broker process: its recorder (the one writer of its stream) and how to end it. */
export interface LiveSession {
  recorder: StreamRecorder;
  identity: Identity;
  connection: Connection;
  /** The just-in-time grant that let it in, when one did. */
  grantId?: string;
  end(reason: string): void;
}

/** The sessions running in this process, for the places that end them: locks, admins, grants, shutdown. */
export class LiveSessionRegistry {
  readonly #sessions = new Map<string, LiveSession>();
  readonly #emptied: Array<() => void> = [];

  add(id: string, session: LiveSession): void {
    this.#sessions.set(id, session);
  }

  delete(id: string): void {
    this.#sessions.delete(id);
    if (this.#sessions.size === 0) for (const resolve of this.#emptied.splice(0)) resolve();
  }

  /** Resolves once no session runs here (a draining broker waits on it). */
  whenEmpty(): Promise<void> {
    if (this.#sessions.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#emptied.push(resolve));
  }

  get(id: string): LiveSession | undefined {
    return this.#sessions.get(id);
  }

  /** The ids of the sessions running here. */
  ids(): string[] {
    return [...this.#sessions.keys()];
  }

  /** The connection of each running session (a gauge counts them). */
  connections(): Connection[] {
    return [...this.#sessions.values()].map((s) => s.connection);
  }

  /** Ends every session `matches` picks, recording `ended` first where `record` is given; returns their ids. */
  endWhere(matches: (s: LiveSession) => boolean, reason: string, record?: Record<string, unknown>): string[] {
    const ended: string[] = [];
    for (const [id, s] of this.#sessions) {
      if (!matches(s)) continue;
      ended.push(id);
      if (record) void s.recorder.record('ended', record).catch(() => undefined);
      s.end(reason);
    }
    return ended;
  }
}
