import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/lib/net.js';
import { CliProcess, loginAs, runCli, runProcess, startStack, type Stack } from '../support/stack.js';

/**
 * A `tcp` connection end to end with a real Redis: redis-cli through `hoopctl connect`, the broker as a process.
 * The same identity, access rules, session limits and locks as every other type; the recording is bytes and time.
 */
let stack: Stack;
let redis: ChildProcess;
let redisPort: number;
let alice: NodeJS.ProcessEnv;
let bob: NodeJS.ProcessEnv;
let mallory: NodeJS.ProcessEnv;
const tunnels: CliProcess[] = [];

interface SessionEvent {
  type: string;
  data: Record<string, unknown>;
}

async function openTunnel(env: NodeJS.ProcessEnv, connection: string): Promise<number> {
  const tunnel = new CliProcess(['connect', connection, '-o', 'json'], env);
  tunnels.push(tunnel);
  return JSON.parse((await tunnel.waitFor(/\{.*"port".*\}\n/))[0]!).port as number;
}

const redisCli = (port: number, ...args: string[]) => runProcess('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], process.env);

async function sessionsOf(env: NodeJS.ProcessEnv, connection: string, status?: string): Promise<Array<{ id: string; status: string; identity: { subject: string } }>> {
  const r = await runCli(['sessions', '--connection', connection, ...(status ? ['--status', status] : []), '-o', 'json'], env);
  return JSON.parse(r.stdout);
}

async function eventsOf(env: NodeJS.ProcessEnv, id: string): Promise<SessionEvent[]> {
  const r = await runCli(['replay', id, '-o', 'json'], env);
  return (JSON.parse(r.stdout) as { events: SessionEvent[] }).events;
}

/** Polls until `probe` gives a value: sessions are recorded as they end, a moment after the client is gone. */
async function eventually<T>(probe: () => Promise<T | undefined>, what: string): Promise<T> {
  for (let i = 0; i < 600; i++) {
    const v = await probe();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  redisPort = await freePort();
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    redis.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('Ready to accept connections')) resolve();
    });
    redis.once('exit', (code) => reject(new Error(`redis-server exited ${code}: ${out}`)));
  });
  const target = { host: '127.0.0.1', port: redisPort };
  stack = await startStack({
    extraConnections: [
      { name: 'cache', type: 'tcp', target, credentials: undefined, recording: { capture: true, maxCaptureBytes: 4096 } },
      { name: 'cache-one', type: 'tcp', target, credentials: undefined, access: { groups: ['dba'], session: { maxConcurrent: 1 } } },
    ],
  });
  [alice, bob, mallory] = await Promise.all([loginAs(stack, 'alice'), loginAs(stack, 'bob'), loginAs(stack, 'mallory')]);
}, 120_000);

afterAll(async () => {
  await Promise.all(tunnels.map((t) => t.stop().catch(() => undefined)));
  await stack?.stop();
  redis?.kill();
});

describe('tcp connections', () => {
  it('carries redis-cli through hoopctl connect and records bytes, timing and the capture', async () => {
    const port = await openTunnel(alice, 'cache');
    expect((await redisCli(port, 'SET', 'greeting', 'hello through the gate')).stdout.trim()).toBe('OK');
    const get = await redisCli(port, 'GET', 'greeting');
    expect(get.stdout.trim()).toBe('hello through the gate');
    // It really is the Redis behind the gate.
    expect((await redisCli(redisPort, 'GET', 'greeting')).stdout.trim()).toBe('hello through the gate');

    const closed = await eventually(async () => {
      const list = await sessionsOf(alice, 'cache');
      return list.length >= 2 && list.every((s) => s.status === 'closed') ? list : undefined;
    }, 'both redis-cli sessions to close');
    // The newest session is the GET.
    const events = await eventsOf(alice, closed[0]!.id);
    expect(events[0]).toMatchObject({ type: 'open', data: { type: 'tcp', target: { host: '127.0.0.1', port: redisPort } } });
    const bytes = events.filter((e) => e.type === 'bytes');
    expect(bytes.length).toBeGreaterThan(0);
    const sent = bytes.reduce((n, e) => n + Number(e.data.fromClient), 0);
    const received = bytes.reduce((n, e) => n + Number(e.data.fromTarget), 0);
    expect(sent).toBeGreaterThan(0);
    expect(received).toBeGreaterThan(0);
    const end = events.find((e) => e.type === 'tcp-closed')!;
    expect(end.data).toMatchObject({ fromClient: sent, fromTarget: received, closedBy: 'client' });
    const captured = events.filter((e) => e.type === 'capture').map((e) => Buffer.from(String(e.data.data), 'base64').toString());
    expect(captured.join('')).toContain('GET');
    expect(captured.join('')).toContain('hello through the gate');
  });

  it('refuses an identity its access rules do not admit, and records the refusal', async () => {
    const r = await runCli(['connect', 'cache'], mallory);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('cache');
    const refused = (await sessionsOf(alice, 'cache', 'refused')).find((s) => s.identity.subject === 'mallory');
    const denial = (await eventsOf(alice, refused!.id)).find((e) => e.type === 'access-denied');
    expect(String(denial?.data.reason)).toContain('cache');
  });

  it('keeps maxConcurrent: a second session of the same identity is refused while the first is open', async () => {
    const port = await openTunnel(bob, 'cache-one');
    const first: Socket = netConnect({ host: '127.0.0.1', port });
    await once(first, 'connect');
    first.write('PING\r\n');
    await once(first, 'data');
    const second = await redisCli(port, 'PING');
    expect(second.stdout.trim()).not.toBe('PONG');
    const refused = await eventually(async () => {
      const list = await sessionsOf(bob, 'cache-one', 'refused');
      return list.length > 0 ? list : undefined;
    }, 'the refused session');
    const denial = (await eventsOf(bob, refused[0]!.id)).find((e) => e.type === 'access-denied');
    expect(String(denial?.data.reason)).toContain('already has 1 session(s) open on cache-one');
    first.end();
  });

  it('ends a live session when an admin locks its identity', async () => {
    const port = await openTunnel(alice, 'cache-one');
    const client: Socket = netConnect({ host: '127.0.0.1', port });
    const ended = once(client, 'close');
    await once(client, 'connect');
    client.write('PING\r\n');
    await once(client, 'data');
    const lock = await runCli(['lock', 'alice', '--reason', 'leaked laptop', '--duration', '1m'], bob);
    expect(lock.code, lock.stderr).toBe(0);
    await ended;
    const after = await redisCli(port, 'PING');
    expect(after.stdout.trim()).not.toBe('PONG');
    const locks = JSON.parse((await runCli(['locks', '-o', 'json'], bob)).stdout) as Array<{ id: string }>;
    for (const l of locks) await runCli(['unlock', l.id], bob);
  });
});
