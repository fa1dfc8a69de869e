import { once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { PrematureCloseError, pumpChunks } from '../../../../../src/broker/protocols/postgres/chunk-pump.js';

describe('pumpChunks', () => {
  it('hands chunks over in order, one at a time: the next waits while one is handled asynchronously', async () => {
    const stream = new PassThrough();
    const seen: string[] = [];
    let release = () => {};
    const pumped = pumpChunks(
      stream,
      (chunk) => {
        seen.push(`start ${chunk.toString()}`);
        if (chunk.toString() !== 'slow') return;
        return new Promise<void>((resolve) => {
          release = () => {
            seen.push('end slow');
            resolve();
          };
        });
      },
      () => false,
    );
    stream.write('a');
    stream.write('slow');
    stream.write('b');
    await new Promise((r) => setImmediate(r));
    expect(seen).toEqual(['start a', 'start slow']);
    release();
    stream.end();
    await pumped;
    expect(seen).toEqual(['start a', 'start slow', 'end slow', 'start b']);
  });

  it('rejects with what the handler threw, and with the stream error only once the chunk under way is handled', async () => {
    const thrown = new PassThrough();
    const failing = pumpChunks(thrown, () => { throw new Error('bad frame'); }, () => false);
    thrown.write('x');
    await expect(failing).rejects.toThrow('bad frame');

    const stream = new PassThrough();
    let release = () => {};
    let handled = false;
    const pumped = pumpChunks(stream, () => new Promise<void>((resolve) => (release = () => ((handled = true), resolve()))), () => false);
    stream.write('x');
    await new Promise((r) => setImmediate(r));
    stream.destroy(new Error('reset'));
    await new Promise((r) => setImmediate(r));
    release();
    await expect(pumped).rejects.toThrow('reset');
    expect(handled).toBe(true);
  });

  it('stops when asked after a chunk, leaving the rest unread, and reports a close without end', async () => {
    const stream = new PassThrough();
    let n = 0;
    stream.write('a');
    stream.write('b');
    await pumpChunks(stream, () => void n++, () => n === 1);
    expect(n).toBe(1);
    expect(stream.read()?.toString()).toBe('b');

    const cut = new PassThrough();
    const pumped = pumpChunks(cut, () => undefined, () => false);
    cut.destroy();
    await expect(pumped).rejects.toBeInstanceOf(PrematureCloseError);
  });

  it('a detach ends a pump waiting for bytes without closing the socket; what comes later waits for the next reader', async () => {
    // A pooled backend as the relay reads it: a loopback socket pair.
    const listener = createServer();
    listener.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const accepted = once(listener, 'connection');
    const client = connect((listener.address() as { port: number }).port, '127.0.0.1');
    await once(client, 'connect');
    const [server] = (await accepted) as [Socket];
    try {
      const seen: string[] = [];
      const handBack = new AbortController();
      const pumped = pumpChunks(client, (chunk) => void seen.push(chunk.toString()), () => false, handBack.signal);
      server.write('answer');
      while (seen.length === 0) await new Promise((r) => setImmediate(r));
      handBack.abort();
      await expect(pumped).resolves.toBeUndefined();
      expect(client.destroyed).toBe(false);
      expect(client.listenerCount('data')).toBe(0);
      server.write('for the next reader');
      const later: string[] = [];
      const next = pumpChunks(client, (chunk) => void later.push(chunk.toString()), () => true);
      await next;
      expect(seen).toEqual(['answer']);
      expect(later).toEqual(['for the next reader']);
      // Already handed back: a pump with that signal reads nothing.
      await expect(pumpChunks(client, () => void seen.push('never'), () => false, handBack.signal)).resolves.toBeUndefined();
      expect(seen).toEqual(['answer']);
    } finally {
      server.destroy();
      client.destroy();
      listener.close();
    }
  });
});
