import { describe, expect, it } from 'vitest';
import { vi } from 'vitest';
import { ExecOutputRecording, TerminalRecording, EXEC_OUTPUT_CAP, maskAcross, HOLD_OPEN_LINE_MS } from '../../../../../src/broker/protocols/ssh/recordings.js';
import { maskText } from '../../../../../src/policy/masking.js';
import { MemoryRecorder, type RecordedEvent } from '../../../../support/memory-recorder.js';
import { createLineMasker } from '../../../../../src/broker/protocols/ssh/line-masker.js';

const mask = { detectors: ['email'] as const, strategy: 'redact' as const, key: 'k' };

describe('TerminalRecording', () => {
  it('batches a busy terminal into few events, keeps order and masks', async () => {
    const events: RecordedEvent[] = [];
    const rec = await TerminalRecording.start(new MemoryRecorder('s', events), 1, { width: 80, height: 24, term: 'xterm', mask: { ...mask, detectors: [...mask.detectors] } });
    for (let i = 0; i < 2000; i++) rec.output(Buffer.from(`line ${i} mail bob@example.com\r\n`));
    rec.input(Buffer.from('ls\r'));
    rec.resize(100, 40);
    await rec.close();
    const casts = events.filter((e) => e.type === 'cast');
    expect(casts.length).toBeLessThan(10);
    const all = casts.flatMap((e) => e.data.events as Array<[number, string, string]>);
    const out = all.filter(([, k]) => k === 'o').map(([, , d]) => d).join('');
    expect(out).toContain('line 1999 mail [REDACTED:email]');
    expect(out).not.toContain('bob@example.com');
    expect(all.at(-2)).toEqual([expect.any(Number), 'i', 'ls\r']);
    expect(all.at(-1)).toEqual([expect.any(Number), 'r', '100x40']);
    expect(events[0]).toMatchObject({ type: 'terminal', data: { channel: 1, version: 2, width: 80, height: 24, term: 'xterm' } });
  });

  it('keeps a multi-byte character split across chunks whole', async () => {
    const events: RecordedEvent[] = [];
    const rec = await TerminalRecording.start(new MemoryRecorder('s', events), 1, { width: 80, height: 24 });
    const bytes = Buffer.from('héllo');
    rec.output(bytes.subarray(0, 2));
    rec.output(bytes.subarray(2));
    await rec.close();
    expect(events.filter((e) => e.type === 'cast').flatMap((e) => (e.data.events as Array<[number, string, string]>).map(([, , d]) => d)).join('')).toBe('héllo');
  });
});

describe('masking a terminal across events and batches', () => {
  const cards = { detectors: ['credit_card', 'email'] as Array<'credit_card' | 'email'>, strategy: 'redact' as const, key: 'k' };
  const casts = (events: RecordedEvent[], kind = 'o') =>
    events.filter((e) => e.type === 'cast').flatMap((e) => e.data.events as Array<[number, string, string]>).filter(([, k]) => k === kind);

  it('masks a value spread over several pieces as the whole string would be, keeping one piece per piece', () => {
    const parts = ['pay with 4111', ' 1111 11', '11 1111 now', ', mail ada@exa', 'mple.com'];
    const out = maskAcross(parts, cards);
    expect(out).toHaveLength(parts.length);
    expect(out.join('')).toBe(maskText(parts.join(''), cards.detectors, 'redact', 'k').text);
    expect(out).toEqual(['pay with [REDACTED:credit_card]', '', ' now', ', mail [REDACTED:email]', '']);
    expect(maskAcross(['nothing here'], cards)).toEqual(['nothing here']);
  });

  it('masks a card number echoed one keystroke at a time, and the keystrokes themselves', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
    try {
      const events: RecordedEvent[] = [];
      const rec = await TerminalRecording.start(new MemoryRecorder('s', events), 1, { width: 80, height: 24, mask: cards });
      for (const ch of 'echo 4111111111111111\r') {
        rec.input(Buffer.from(ch));
        rec.output(Buffer.from(ch === '\r' ? '\r\n' : ch));
        await vi.advanceTimersByTimeAsync(30); // a typist: every key its own event, several batches
      }
      rec.output(Buffer.from('4111111111111111\r\n$ '));
      await rec.close();
      const typed = casts(events, 'i');
      const shown = casts(events, 'o');
      expect(typed.length).toBeGreaterThan(10);
      expect(typed.map(([, , d]) => d).join('')).toBe('echo [REDACTED:credit_card]\r');
      expect(shown.map(([, , d]) => d).join('')).toBe('echo [REDACTED:credit_card]\r\n[REDACTED:credit_card]\r\n$ ');
      expect(JSON.stringify(events)).not.toMatch(/4111/);
    } finally {
      vi.useRealTimers();
    }
  });

  it('writes a line that never ends (a prompt) once it has waited long enough', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
    try {
      const events: RecordedEvent[] = [];
      const rec = await TerminalRecording.start(new MemoryRecorder('s', events), 1, { width: 80, height: 24, mask: cards });
      rec.output(Buffer.from('done\r\nprod-db:~$ '));
      await vi.advanceTimersByTimeAsync(200);
      expect(casts(events).map(([, , d]) => d).join('')).toBe('done\r\n');
      await vi.advanceTimersByTimeAsync(HOLD_OPEN_LINE_MS);
      expect(casts(events).map(([, , d]) => d).join('')).toBe('done\r\nprod-db:~$ ');
      await rec.close();
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('ExecOutputRecording', () => {
  it('masks whole lines even when a value is split across chunks', async () => {
    const events: RecordedEvent[] = [];
    const rec = new ExecOutputRecording(new MemoryRecorder('s', events), 1, { ...mask, detectors: [...mask.detectors] });
    rec.write('stdout', Buffer.from('contact: bob@exa'));
    rec.write('stdout', Buffer.from('mple.com\nbye'));
    await rec.close();
    expect(events.map((e) => e.data.data).join('')).toBe('contact: [REDACTED:email]\nbye');
  });

  it('caps what it keeps and says so', async () => {
    const events: RecordedEvent[] = [];
    const rec = new ExecOutputRecording(new MemoryRecorder('s', events), 1);
    const chunk = Buffer.from('x'.repeat(1023) + '\n');
    for (let i = 0; i < 400; i++) rec.write('stdout', chunk);
    await rec.close();
    expect(rec.bytes).toBe(400 * 1024);
    expect(rec.truncated).toBe(true);
    expect(events.reduce((n, e) => n + String(e.data.data).length, 0)).toBe(EXEC_OUTPUT_CAP);
  });
});

describe('createLineMasker', () => {
  it('masks lines, flushes a prompt without newline, and passes binary through', async () => {
    const m = createLineMasker({ ...mask, detectors: [...mask.detectors] }, 20);
    const out: Buffer[] = [];
    m.on('data', (d: Buffer) => out.push(d));
    m.write(Buffer.from('a bob@exa'));
    m.write(Buffer.from('mple.com b\nPassword: '));
    await new Promise((r) => setTimeout(r, 60));
    expect(Buffer.concat(out).toString()).toBe('a [REDACTED:email] b\nPassword: ');
    const bin = Buffer.from([0, 1, 2, 0x62, 0x40]);
    m.write(bin);
    m.end();
    await new Promise((r) => m.on('end', r));
    expect(Buffer.concat(out).subarray(-5).equals(bin)).toBe(true);
  });
});
