import { describe, expect, it } from 'vitest';
import { once } from 'node:events';
import ssh2 from 'ssh2';
import { streamPair } from '../../../../src/broker/mcp/stream-pair.js';

describe('streamPair', () => {
  it('carries bytes both ways and ends the other side when one side ends', async () => {
    const [a, b] = streamPair();
    const got: string[] = [];
    b.on('data', (d: Buffer) => got.push(d.toString()));
    a.write('hello ');
    a.end('world');
    await once(b, 'end');
    expect(got.join('')).toBe('hello world');
    b.end('back');
    const [reply] = (await once(a, 'data')) as [Buffer];
    expect(reply.toString()).toBe('back');
  });

  it('holds a writer until the reader reads (backpressure), then lets it go on', async () => {
    const [a, b] = streamPair();
    const big = Buffer.alloc(64 * 1024, 1);
    let done = false;
    a.write(big, () => (done = true));
    await new Promise((r) => setImmediate(r));
    // Nobody reads b: more than its high-water mark is buffered, so the write has not completed.
    expect(done).toBe(false);
    b.resume();
    await new Promise<void>((r) => a.write(Buffer.alloc(1), () => r()));
    expect(done).toBe(true);
  });

  it('destroys the other side when one is destroyed', async () => {
    const [a, b] = streamPair();
    a.destroy();
    await once(b, 'close');
    expect(b.destroyed).toBe(true);
  });

  // Regression: /mcp's ssh_command failed with KEY_EXCHANGE_FAILED when the pair delivered writes synchronously: the
  // broker's SSH server starts after it has reached the backend, and the client's answer re-entered its own write.
  it('completes an SSH key exchange and a command when the server takes the stream late', async () => {
    const hostKey = ssh2.utils.generateKeyPairSync('ed25519');
    const [clientSide, serverSide] = streamPair();
    const server = new ssh2.Server({ hostKeys: [hostKey.private] }, (conn) => {
      conn.on('authentication', (ctx) => ctx.accept());
      conn.on('ready', () =>
        conn.on('session', (accept) =>
          accept().on('exec', (acceptExec) => {
            const ch = acceptExec();
            ch.end('ran\n');
            ch.exit(0);
          }),
        ),
      );
      conn.on('error', () => undefined);
    });
    const client = new ssh2.Client();
    const ready = once(client, 'ready');
    client.connect({ sock: clientSide as never, username: 'agent', hostVerifier: () => true });
    // The client has sent its greeting and key exchange init before the server takes the stream.
    await new Promise((r) => setImmediate(r));
    server.injectSocket(serverSide as never);
    await ready;
    const output = await new Promise<string>((resolve, reject) =>
      client.exec('anything', (err, ch) => {
        if (err) return reject(err);
        let out = '';
        ch.on('data', (d: Buffer) => (out += d));
        ch.on('close', () => resolve(out));
      }),
    );
    client.end();
    expect(output).toBe('ran\n');
  });
});
