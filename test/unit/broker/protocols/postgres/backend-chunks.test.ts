import { once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BackendChunks } from '../../../../../src/broker/protocols/postgres/backend-pool.js';

/** A connected pair of loopback sockets: what the "server" writes, the chunks read. */
async function pair(): Promise<{ server: Socket; client: Socket; close(): void }> {
  const listener = createServer();
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const port = (listener.address() as { port: number }).port;
  const accepted = once(listener, 'connection');
  const client = connect(port, '127.0.0.1');
  await once(client, 'connect');
  const [server] = (await accepted) as [Socket];
  return { server, client, close: () => (server.destroy(), client.destroy(), listener.close()) };
}

let cleanup: (() => void) | undefined;
afterEach(() => cleanup?.());

describe('BackendChunks (how the relay reads a pooled backend)', () => {
  it('yields what arrives, in order, and ends when the stream ends', async () => {
    const { server, client, close } = await pair();
    cleanup = close;
    const chunks = new BackendChunks(client);
    server.write('one');
    expect((await chunks.next()).value?.toString()).toBe('one');
    server.end('two');
    expect((await chunks.next()).value?.toString()).toBe('two');
    expect((await chunks.next()).done).toBe(true);
  });

  it('detach ends a pending read without closing the socket, which keeps what comes later for whoever reads next', async () => {
    const { server, client, close } = await pair();
    cleanup = close;
    const chunks = new BackendChunks(client);
    const pending = chunks.next();
    expect(chunks.detach()).toBe(true);
    expect(await pending).toEqual({ value: undefined, done: true });
    expect(client.destroyed).toBe(false);
    expect(client.listenerCount('data')).toBe(0);
    server.write('for the next reader');
    const later = new BackendChunks(client);
    expect((await later.next()).value?.toString()).toBe('for the next reader');
  });

  it('detach reports bytes that arrived and were not read (the backend was not idle)', async () => {
    const { server, client, close } = await pair();
    cleanup = close;
    const chunks = new BackendChunks(client);
    expect((await (server.write('answer'), chunks.next())).value?.toString()).toBe('answer');
    server.write('unread');
    // Wait until the bytes are queued inside, without reading them.
    await new Promise<void>((resolve) => client.once('data', () => setImmediate(resolve)));
    expect(chunks.detach()).toBe(false);
  });

  it('a read after the peer vanished fails or ends; it never hangs', async () => {
    const { server, client, close } = await pair();
    cleanup = close;
    const chunks = new BackendChunks(client);
    const pending = chunks.next().then((r) => (r.done ? 'ended' : 'data'), () => 'failed');
    server.resetAndDestroy();
    expect(['ended', 'failed']).toContain(await pending);
  });
});
