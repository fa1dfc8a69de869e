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

  describe('a client\'s cancel, judged by who sent it and recorded in the session it names', () => {
    const alice = { issuer: 'https://idp', subject: 'alice' };
    /** A session of alice on app-pg whose held statement takes the cancel (nothing is sent to a server). */
    const sessionOf = (registry: CancelRegistry, extra: { keyAlone?: boolean } = {}) => {
      const recorded: Array<{ type: string; data: Record<string, unknown> }> = [];
      let withdrawn = 0;
      const reg = registry.register({
        host: '127.0.0.1', port: 1, key: { pid: 1, secret: 2 }, connection: 'app-pg', owner: alice, ...extra,
        intercept: () => ++withdrawn > 0,
        record: async (type, data) => void recorded.push({ type, data }),
      });
      return { key: reg.key, recorded, withdrawn: () => withdrawn };
    };

    it('acts on the owner\'s cancel and records who sent it, from where, and what became of it', async () => {
      const registry = new CancelRegistry();
      const s = sessionOf(registry);
      const result = await registry.cancel(s.key, { identity: alice, connection: 'app-pg', clientAddr: '10.0.0.7', via: 'tunnel' });
      expect(result).toEqual({ outcome: 'intercepted', matched: true });
      expect(s.withdrawn()).toBe(1);
      expect(s.recorded).toEqual([{ type: 'cancel-request', data: { outcome: 'intercepted', via: 'tunnel', by: { subject: 'alice', issuer: 'https://idp' }, clientAddr: '10.0.0.7' } }]);
    });

    it('refuses another identity holding the key, and a tunnel to another connection; each refusal is recorded in the session', async () => {
      const registry = new CancelRegistry();
      const s = sessionOf(registry);
      const mallory = await registry.cancel(s.key, { identity: { issuer: 'https://idp', subject: 'mallory' }, connection: 'app-pg', via: 'tunnel' });
      expect(mallory).toMatchObject({ outcome: 'refused', matched: true, reason: 'sent by mallory, who does not own the session' });
      const otherIssuer = await registry.cancel(s.key, { identity: { issuer: 'https://elsewhere', subject: 'alice' }, connection: 'app-pg', via: 'tunnel' });
      expect(otherIssuer.outcome).toBe('refused');
      const elsewhere = await registry.cancel(s.key, { identity: alice, connection: 'other-pg', via: 'tunnel' });
      expect(elsewhere.reason).toContain('the session is on app-pg');
      expect(s.withdrawn()).toBe(0);
      expect(s.recorded.map((e) => e.data.outcome)).toEqual(['refused', 'refused', 'refused']);
    });

    it('takes a cancel without a token (the front door) only for a session opened where cancels carry none', async () => {
      const registry = new CancelRegistry();
      const tunnelSession = sessionOf(registry);
      expect((await registry.cancel(tunnelSession.key, { via: 'pg-front-door' })).outcome).toBe('refused');
      const frontDoorSession = sessionOf(registry, { keyAlone: true });
      expect((await registry.cancel(frontDoorSession.key, { via: 'pg-front-door', clientAddr: '127.0.0.1' })).outcome).toBe('intercepted');
      expect(frontDoorSession.recorded[0]!.data).toEqual({ outcome: 'intercepted', via: 'pg-front-door', clientAddr: '127.0.0.1' });
    });

    it('matches nothing for an unknown key, and records nowhere (the caller audits it)', async () => {
      const registry = new CancelRegistry();
      const s = sessionOf(registry);
      expect(await registry.cancel({ pid: s.key.pid, secret: s.key.secret ^ 1 }, { identity: alice, via: 'tunnel' })).toEqual({ outcome: 'unknown-key', matched: false });
      expect(s.recorded).toEqual([]);
    });
  });
});
