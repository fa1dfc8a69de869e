import type { StoredEvent } from '../api/session.js';

/** One recorded terminal as asciicast v2: a header and `[seconds, code, data]` events. */
export interface Cast {
  header: { version: 2; width: number; height: number; timestamp?: number; env?: Record<string, string>; title?: string };
  events: Array<[number, 'o' | 'i' | 'r', string]>;
}

/** The terminals of a session (one per PTY or shell channel), rebuilt from its `terminal` and `cast` events. */
export function castsFromEvents(events: StoredEvent[], title?: string): Array<{ channel: number; cast: Cast }> {
  const byChannel = new Map<number, Cast>();
  for (const e of events) {
    const d = e.data as Record<string, unknown>;
    if (e.type === 'terminal') {
      byChannel.set(Number(d.channel), {
        header: {
          version: 2, width: Number(d.width) || 80, height: Number(d.height) || 24,
          ...(typeof d.timestamp === 'number' ? { timestamp: d.timestamp } : {}),
          ...(typeof d.term === 'string' ? { env: { TERM: d.term } } : {}),
          ...(title || typeof d.command === 'string' ? { title: [title, d.command].filter(Boolean).join(': ') } : {}),
        },
        events: [],
      });
    } else if (e.type === 'cast') {
      const cast = byChannel.get(Number(d.channel));
      if (cast && Array.isArray(d.events)) cast.events.push(...(d.events as Cast['events']));
    }
  }
  return [...byChannel].map(([channel, cast]) => ({ channel, cast }));
}

/** The asciicast v2 file text: the header line, then one JSON array per event. */
export function toAsciicast(cast: Cast): string {
  return [JSON.stringify(cast.header), ...cast.events.map((e) => JSON.stringify(e))].join('\n') + '\n';
}

/** Shortens every pause longer than `maxIdle` seconds to `maxIdle` (asciinema's idle_time_limit). */
export function capIdle(events: Cast['events'], maxIdle: number): Cast['events'] {
  let shift = 0;
  let prev = 0;
  return events.map(([t, k, d]) => {
    const gap = t - prev;
    if (gap > maxIdle) shift += gap - maxIdle;
    prev = t;
    return [Math.round((t - shift) * 1000) / 1000, k, d];
  });
}

/** What the terminal showed: every output event, in order. */
export function castOutput(cast: Cast): string {
  return cast.events.filter(([, k]) => k === 'o').map(([, , d]) => d).join('');
}

export interface PlayOptions {
  speed: number;
  /** Pauses longer than this many seconds are shortened to it. */
  maxIdle?: number;
  out: NodeJS.WritableStream;
  /** A TTY in raw mode: space pauses, ←/→ seek 5 s, +/- change speed, q quits. */
  keys?: NodeJS.ReadableStream;
  /** Seconds a ←/→ press moves. */
  seekStep?: number;
  onStatus?(status: { position: number; duration: number; speed: number; paused: boolean }): void;
}

const SPEEDS = [0.25, 0.5, 1, 2, 4, 8, 16];

/**
 * Plays a terminal with its original timing. Seeking back redraws from the start (a terminal cannot be rewound),
 * seeking forward writes what lies between at once. Resolves when the recording ends or the viewer quits.
 */
export function playCast(cast: Cast, o: PlayOptions): Promise<'ended' | 'quit'> {
  const events = (o.maxIdle !== undefined ? capIdle(cast.events, o.maxIdle) : cast.events).filter(([, k]) => k === 'o');
  const duration = events.at(-1)?.[0] ?? 0;
  const step = o.seekStep ?? 5;
  let speed = o.speed;
  let index = 0;
  let position = 0; // cast seconds at `since`
  let since = performance.now();
  let paused = false;
  let timer: NodeJS.Timeout | undefined;

  return new Promise((resolve) => {
    const now = () => (paused ? position : position + ((performance.now() - since) / 1000) * speed);
    const status = () => o.onStatus?.({ position: now(), duration, speed, paused });
    const finish = (how: 'ended' | 'quit') => {
      clearTimeout(timer);
      o.keys?.off('data', onKey);
      resolve(how);
    };
    const writeUpTo = (t: number) => {
      let chunk = '';
      while (index < events.length && events[index]![0] <= t) chunk += events[index++]![2];
      if (chunk) o.out.write(chunk);
    };
    const schedule = () => {
      clearTimeout(timer);
      if (paused) return;
      const t = now();
      writeUpTo(t);
      if (index >= events.length) return finish('ended');
      timer = setTimeout(schedule, Math.max(0, ((events[index]![0] - t) / speed) * 1000));
    };
    const rebase = () => {
      position = now();
      since = performance.now();
    };
    const seek = (to: number) => {
      const target = Math.max(0, Math.min(duration, to));
      if (target < now()) {
        // Redraw from the start: reset the terminal, replay everything up to the target at once.
        o.out.write('\x1bc');
        index = 0;
      }
      position = target;
      since = performance.now();
      writeUpTo(target);
      status();
      schedule();
    };
    const onKey = (data: Buffer | string) => {
      const k = data.toString();
      if (k === 'q' || k === '\x03' || k === '\x1b' ) return finish('quit');
      if (k === ' ') {
        rebase();
        paused = !paused;
        status();
        return schedule();
      }
      if (k === '\x1b[C') return seek(now() + step);
      if (k === '\x1b[D') return seek(now() - step);
      if (k === '+' || k === '=' || k === '-') {
        rebase();
        const i = SPEEDS.findIndex((s) => s >= speed);
        speed = SPEEDS[Math.max(0, Math.min(SPEEDS.length - 1, (i < 0 ? SPEEDS.length - 1 : i) + (k === '-' ? -1 : 1)))]!;
        status();
        return schedule();
      }
    };
    o.keys?.on('data', onKey);
    schedule();
  });
}
