import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { acceptTunnel, upgradeProblem, type TunnelStream } from '../../../src/broker/tunnel-stream.js';

/**
 * The broker's tunnel end against a general WebSocket client (`ws`, as older hoopctl versions and any other client
 * use it: random masks, its own pings and close handshake). The server echoes what it reads.
 */
describe('the broker tunnel stream', () => {
  let server: Server;
  let url: string;
  const streams: TunnelStream[] = [];

  beforeAll(async () => {
    server = createServer((_req, res) => res.writeHead(404).end());
    server.on('upgrade', (req, socket: Socket, head: Buffer) => {
      const problem = upgradeProblem(req);
      if (problem) return socket.end(`HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n${problem}`);
      const stream = acceptTunnel(req, socket, head, { maxPayload: 64 * 1024 });
      streams.push(stream);
      stream.on('error', () => undefined);
      stream.on('data', (d: Buffer) => stream.write(d));
      stream.on('end', () => stream.end());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1/tunnel/x`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const open = async () => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    return ws;
  };
  const closed = (ws: WebSocket) => new Promise<[number, string]>((r) => ws.once('close', (code, reason) => r([code, reason.toString()])));

  it('carries bytes both ways, answers pings and echoes the close', async () => {
    const ws = await open();
    const got: Buffer[] = [];
    ws.on('message', (d: Buffer) => got.push(d));
    const big = Buffer.alloc(60_000, 3);
    ws.send(Buffer.from('hello'));
    ws.send(big);
    const pong = new Promise((r) => ws.once('pong', r));
    ws.ping(Buffer.from('are you there'));
    await pong;
    await expect.poll(() => Buffer.concat(got).length).toBe(5 + big.length);
    expect(Buffer.concat(got).equals(Buffer.concat([Buffer.from('hello'), big]))).toBe(true);
    const ended = new Promise((r) => streams.at(-1)!.once('end', r));
    const result = closed(ws);
    ws.close(1000, 'bye');
    await ended;
    expect((await result)[0]).toBe(1000);
  });

  it('closes with 1009 on a frame over the limit, takes text as bytes, and ends the stream', async () => {
    const ws = await open();
    const stream = streams.at(-1)!;
    const ended = new Promise((r) => stream.once('end', r));
    const result = closed(ws);
    ws.send(Buffer.alloc(65 * 1024));
    expect(await result).toEqual([1009, 'a frame of 66560 bytes (the limit is 65536)']);
    await ended;

    const text = await open();
    const echoed = new Promise<Buffer>((r) => text.once('message', r));
    text.send('a string');
    expect((await echoed).toString()).toBe('a string');
    text.close();
  });

  it('refuses an upgrade that is not a WebSocket handshake', async () => {
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      const s = connect((server.address() as AddressInfo).port, '127.0.0.1', () => {
        s.write('GET /api/v1/tunnel/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n');
      });
      s.on('data', (d) => (text += d));
      s.on('close', () => resolve(text));
    });
    expect(answer).toMatch(/^HTTP\/1.1 400 Bad Request/);
    expect(answer).toContain('missing or invalid Sec-WebSocket-Key');
  });
});
