import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { CancelRegistry } from '../../../../../src/broker/protocols/postgres/cancel-registry.js';
import { parseCancelRequest } from '../../../../../src/broker/protocols/postgres/messages.js';

describe('CancelRegistry', () => {
  it('hands out its own key and forwards a matching cancel to the real backend key', async () => {
    const received: Buffer[] = [];
    const server = createServer((s: Socket) => {
      const parts: Buffer[] = [];
      s.on('data', (d) => parts.push(d));
      s.on('end', () => {
        received.push(Buffer.concat(parts));
        s.end();
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as { port: number }).port;
    try {
      const registry = new CancelRegistry();
      const reg = registry.register({ host: '127.0.0.1', port, key: { pid: 4242, secret: 777 } });
      expect(reg.key.pid).not.toBe(4242);
      expect(await registry.forward(reg.key)).toBe('forwarded');
      expect(received).toHaveLength(1);
      expect(received[0].readInt32BE(0)).toBe(16);
      expect(parseCancelRequest(received[0].subarray(4))).toEqual({ pid: 4242, secret: 777 });
    } finally {
      server.close();
    }
  });

  it('ignores unknown pids, wrong secrets and released keys', async () => {
    const registry = new CancelRegistry();
    const reg = registry.register({ host: '127.0.0.1', port: 1, key: { pid: 1, secret: 2 } });
    expect(await registry.forward({ pid: reg.key.pid, secret: reg.key.secret + 1 })).toBe('unknown-key');
    expect(await registry.forward({ pid: reg.key.pid + 1, secret: reg.key.secret })).toBe('unknown-key');
    reg.release();
    expect(registry.size).toBe(0);
    expect(await registry.forward(reg.key)).toBe('unknown-key');
  });

  it('reports a backend it cannot reach', async () => {
    const registry = new CancelRegistry();
    const reg = registry.register({ host: '127.0.0.1', port: 1, key: { pid: 1, secret: 2 } });
    expect(await registry.forward(reg.key)).toBe('failed');
  });
});
