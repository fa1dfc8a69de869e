import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PassThrough, Writable } from 'node:stream';
import { capIdle, castOutput, castsFromEvents, playCast, toAsciicast, type Cast } from '../../../src/commands/replay-player.js';
import type { StoredEvent } from '../../../src/api/session.js';

const ev = (type: string, data: Record<string, unknown>): StoredEvent => ({ stream: 's', seq: 0, at: 0, type, data, prevHash: '', hash: '' });

const cast: Cast = {
  header: { version: 2, width: 80, height: 24 },
  events: [[0.1, 'o', 'a'], [0.15, 'i', 'x'], [0.2, 'o', 'b'], [5.2, 'r', '90x30'], [5.25, 'o', 'c']],
};

function sink(): { out: Writable; text: () => string } {
  let text = '';
  return { out: new Writable({ write(c, _e, cb) { text += c; cb(); } }), text: () => text };
}

describe('castsFromEvents', () => {
  it('rebuilds one cast per terminal channel from terminal and cast events', () => {
    const casts = castsFromEvents([
      ev('terminal', { channel: 1, width: 100, height: 30, timestamp: 1700000000, term: 'xterm' }),
      ev('cast', { channel: 1, events: [[0.1, 'o', 'hi']] }),
      ev('terminal', { channel: 2, width: 80, height: 24, command: 'top' }),
      ev('cast', { channel: 2, events: [[0.2, 'o', 'top!']] }),
      ev('cast', { channel: 1, events: [[0.3, 'o', ' there']] }),
    ], 'alice on web');
    expect(casts).toHaveLength(2);
    expect(casts[0]!.cast.header).toEqual({ version: 2, width: 100, height: 30, timestamp: 1700000000, env: { TERM: 'xterm' }, title: 'alice on web' });
    expect(castOutput(casts[0]!.cast)).toBe('hi there');
    expect(casts[1]!.cast.header.title).toBe('alice on web: top');
  });
});

describe('asciicast v2', () => {
  it('writes a header line and one array per event', () => {
    const lines = toAsciicast(cast).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0]).toEqual({ version: 2, width: 80, height: 24 });
    expect(lines.slice(1)).toEqual(cast.events);
  });

  it('capIdle shortens long pauses only', () => {
    expect(capIdle(cast.events, 1).map(([t]) => t)).toEqual([0.1, 0.15, 0.2, 1.2, 1.25]);
    expect(capIdle(cast.events, 10).map(([t]) => t)).toEqual(cast.events.map(([t]) => t));
  });
});

describe('playCast', () => {
  // The player's clock is faked: what is asserted is where in the recording it is, however busy the machine.
  beforeEach(() => vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] }));
  afterEach(() => vi.useRealTimers());

  it('plays output in order with its timing (speed 10: 5.25 s of recording in 0.525 s)', async () => {
    const s = sink();
    let result: string | undefined;
    const playing = playCast(cast, { speed: 10, out: s.out }).then((r) => (result = r));
    await vi.advanceTimersByTimeAsync(30);
    expect(s.text()).toBe('ab');
    await vi.advanceTimersByTimeAsync(480);
    expect(s.text()).toBe('ab');
    expect(result).toBeUndefined();
    await vi.advanceTimersByTimeAsync(20);
    expect(s.text()).toBe('abc');
    expect(await playing).toBe('ended');
  });

  it('skips idle time when asked', async () => {
    const s = sink();
    const playing = playCast(cast, { speed: 1, maxIdle: 0.2, out: s.out });
    // 0.2 s, then the 5 s pause capped at 0.2 s, then 0.05 s: all of it well within a second.
    await vi.advanceTimersByTimeAsync(1000);
    expect(await playing).toBe('ended');
    expect(s.text()).toBe('abc');
  });

  it('q quits, space pauses, → seeks forward', async () => {
    const keys = new PassThrough();
    const s = sink();
    const playing = playCast(cast, { speed: 1, out: s.out, keys });
    await vi.advanceTimersByTimeAsync(300);
    expect(s.text()).toBe('ab');
    keys.write(' ');
    keys.write('\x1b[C');
    expect(s.text()).toBe('abc');
    keys.write('q');
    expect(await playing).toBe('quit');
  });

  it('← redraws from the start', async () => {
    const keys = new PassThrough();
    const s = sink();
    const playing = playCast(cast, { speed: 1, out: s.out, keys });
    await vi.advanceTimersByTimeAsync(300);
    keys.write('\x1b[D');
    expect(s.text()).toBe('ab\x1bc');
    keys.write('q');
    await playing;
  });
});
