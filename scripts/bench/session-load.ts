/**
 * Session rates and idle sessions through a tunnel, with the `pg` driver: each connection is a real startup
 * (a WebSocket with the token verified by the broker, a recorded session, the backend login with the injected
 * password).
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';

export interface PgTarget {
  host: string;
  port: number;
  user: string;
  database: string;
  password?: string;
}

/** One whole session: a startup, `select 1`, the end. */
async function oneSession(target: PgTarget): Promise<void> {
  const client = new pg.Client(target);
  await client.connect();
  await client.query('select 1');
  await client.end();
}

/** Completed startups (connect, `select 1`, end) per second of `concurrency` loops over `secs` seconds. */
export async function sessionRate(target: PgTarget, concurrency: number, secs: number): Promise<{ perSecond: number; sessions: number }> {
  const until = Date.now() + secs * 1000;
  const started = Date.now();
  let sessions = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (Date.now() < until) {
      await oneSession(target);
      sessions++;
    }
  }));
  return { perSecond: sessions / ((Date.now() - started) / 1000), sessions };
}

/**
 * The same loops held for `secs`, counted per window of `windowSecs`: whether a rate lasts (a cost that grows with
 * what the host accumulates, such as the TIME_WAIT sockets of every closed connection of the last minute, shows as
 * falling windows). Also the host's TCP sockets at the end, as the kernel lists them.
 */
export async function sustainedSessionRate(target: PgTarget, concurrency: number, secs: number, windowSecs: number): Promise<{ windows: number[]; perSecond: number; tcpSockets: number }> {
  const started = Date.now();
  const until = started + secs * 1000;
  const counts = Array<number>(Math.ceil(secs / windowSecs)).fill(0);
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (Date.now() < until) {
      await oneSession(target);
      const w = Math.floor((Date.now() - started) / (windowSecs * 1000));
      if (w < counts.length) counts[w]!++;
    }
  }));
  const tcpSockets = ['/proc/net/tcp', '/proc/net/tcp6'].reduce((n, f) => {
    try {
      return n + readFileSync(f, 'latin1').split('\n').length - 2;
    } catch {
      return n;
    }
  }, 0);
  return { windows: counts.map((c) => c / windowSecs), perSecond: counts.reduce((a, b) => a + b, 0) / secs, tcpSockets };
}

/**
 * Opens `count` sessions and keeps them idle; the caller reads memory, then closes them. A session that fails to
 * open is counted, not fatal: how many opened is part of the answer.
 */
export async function openIdleSessions(target: PgTarget, count: number, concurrency = 16): Promise<{ opened: number; failed: number; firstError?: string; close: () => Promise<void> }> {
  const clients: pg.Client[] = [];
  let next = 0;
  let failed = 0;
  let firstError: string | undefined;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) {
      next++;
      const client = new pg.Client(target);
      client.on('error', () => undefined);
      try {
        await client.connect();
        await client.query('select 1');
        clients.push(client);
      } catch (e) {
        failed++;
        firstError ??= (e as Error).message;
        await client.end().catch(() => undefined);
      }
    }
  }));
  return { opened: clients.length, failed, firstError, close: async () => void (await Promise.allSettled(clients.map((c) => c.end()))) };
}
