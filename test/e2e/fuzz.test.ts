import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { runCampaign, type CampaignOptions } from '../../scripts/fuzz/campaign.js';
import { startupMessage } from '../../scripts/fuzz/pg-corpus.js';
import { tunnelTransport } from '../../scripts/fuzz/tunnel-transport.js';
import { createBind, createDescribe, createExecute, createParse, createQuery, createSync } from '../../src/broker/protocols/postgres/messages.js';
import { startControlSession } from '../../scripts/fuzz/control.js';
import { FUZZ_DATABASE, startFuzzDeployment, type FuzzDeployment } from '../../scripts/fuzz/deployment.js';

/**
 * The fixed-seed slice of `npm run fuzz`: a few thousand mutated PostgreSQL messages, hand-mangled tunnel WebSocket
 * frames, HTTP requests and SSH handshakes through the real broker (a process), with a well-formed session beside
 * them. The broker must not crash or hang, must answer every malformed stream by ending that session alone, and the
 * well-formed session must get every answer right.
 */
let d: FuzzDeployment;
let crashed = false;

beforeAll(async () => {
  d = await startFuzzDeployment({ ssh: true });
  d.broker.once('exit', () => (crashed = true));
}, 120_000);

afterAll(async () => {
  await d?.stop();
});

const SEED = 20261129;

function options(extra: Partial<CampaignOptions>): CampaignOptions {
  return {
    brokerUrl: d.brokerUrl, token: d.token, pg: { connections: ['fuzz-pg', 'fuzz-pg-plain'], database: FUZZ_DATABASE }, http: d.http, ssh: d.ssh,
    count: 2000, seed: SEED, concurrency: 6, perSession: 200, chunk: 25, mutationRate: 0.03,
    mix: { postgres: 70, 'tunnel-frames': 15, http: 10, ssh: 5 },
    // The client's patience before it gives up and ends its side; a broker that then never closes is a hang.
    stallMs: 3000, hangMs: 60_000, brokerAlive: () => !crashed,
    ...extra,
  };
}

describe('malformed input (fixed-seed fuzz slice)', () => {
  it('ends only the malformed sessions, each with a protocol error, while a well-formed session beside them is unaffected', async () => {
    const control = await startControlSession(d, 'fuzz-pg', FUZZ_DATABASE);
    const stats = await runCampaign(options({}));
    while (control.answered < 5 && !control.failure) await new Promise((r) => setTimeout(r, 50));
    await control.stop();

    expect(crashed, 'the broker process is still running').toBe(false);
    expect(stats.findings, 'no hang, no malformed answer, no refused tunnel').toEqual([]);
    expect(stats.messages).toBeGreaterThanOrEqual(2000);
    expect(control.failure, 'the well-formed session got every answer right').toBeUndefined();
    expect(control.losses, 'and never lost its connection').toEqual([]);
    // Malformed PostgreSQL streams were told why, by the broker's own parser or by the server behind it.
    const pg = stats.protocols.postgres!;
    expect(pg.mutated).toBeGreaterThan(0);
    expect(Object.keys(pg.outcomes).some((k) => k.startsWith('broker 08P01: protocol violation'))).toBe(true);
    expect(Object.keys(pg.outcomes).some((k) => k.startsWith('server 08P01'))).toBe(true);
    // Broken WebSocket framing ends the tunnel with a close code; broken HTTP gets 400.
    expect(Object.keys(stats.protocols['tunnel-frames']!.outcomes).some((k) => /^websocket close 10(02|07|09)$/.test(k))).toBe(true);
    expect(stats.httpStatuses['400']).toBeGreaterThan(0);
    expect(stats.protocols.ssh!.sessions).toBeGreaterThan(0);
    const log = readFileSync(d.brokerLogPath, 'utf8');
    expect(log, 'client bytes are never a broker error').not.toMatch(/"level":(50|60)/);
  }, 300_000);

  it('refuses a simple Query sent inside an unfinished extended-protocol exchange instead of pairing results wrongly', async () => {
    // Found by the fuzzer: after a failed Parse the server discards everything up to Sync, a Query too, so the broker
    // paired later answers with the wrong statements (a SELECT's rows masked as another's, a denial on another error).
    const t = await tunnelTransport(d.brokerUrl, 'fuzz-pg', await d.token());
    let reply = Buffer.alloc(0);
    t.onData((b) => (reply = Buffer.concat([reply, b])));
    const closed = new Promise<void>((resolve) => t.onClose(resolve));
    t.write(Buffer.concat([startupMessage(FUZZ_DATABASE), createParse({ name: 's1', sql: 'selec 1' }), createQuery("select 'after' as v"), createSync()]));
    await closed;
    const text = reply.toString('latin1');
    expect(text).toContain('protocol violation: simple Query inside an unfinished extended-protocol exchange (send Sync first)');
    expect(text).not.toContain('after');
  }, 120_000);

  it('refuses a Sync or Flush that carries a body, after which the server would skip a Query the broker pairs results with', async () => {
    // Found by the fuzzer: PostgreSQL answers a Flush with a body by an error and then discards everything up to
    // Sync, a simple Query too; the broker paired the answers after it with the wrong statements (a marker SELECT's
    // row came back masked by another statement's plan).
    for (const code of ['H', 'S']) {
      const t = await tunnelTransport(d.brokerUrl, 'fuzz-pg', await d.token());
      let reply = Buffer.alloc(0);
      t.onData((b) => (reply = Buffer.concat([reply, b])));
      const closed = new Promise<void>((resolve) => t.onClose(resolve));
      const withBody = Buffer.from([code.charCodeAt(0), 0, 0, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8]);
      t.write(Buffer.concat([startupMessage(FUZZ_DATABASE), withBody, createQuery("select 'after' as v"), createSync()]));
      await closed;
      const text = reply.toString('latin1');
      expect(text).toContain(`protocol violation: ${code === 'H' ? 'Flush' : 'Sync'} message with a body of 8 bytes (it has none)`);
      expect(text).not.toContain('after');
    }
  }, 120_000);

  it("pairs answers after a COPY FROM STDIN sent the way libpq sends it (Sync with the Execute, another after CopyDone)", async () => {
    // Found by the fuzzer's stalled sessions: the server ignores a Sync while it takes COPY data, and the broker
    // waited for a ReadyForQuery that never came, so every later answer went to the wrong statement (a SELECT's rows
    // masked by another's plan, results recorded against the wrong statements).
    const t = await tunnelTransport(d.brokerUrl, 'fuzz-pg', await d.token());
    let reply = '';
    let wake = () => {};
    t.onData((b) => {
      reply += b.toString('latin1');
      wake();
    });
    const until = (text: string) => new Promise<void>((resolve) => {
      wake = () => reply.includes(text) && resolve();
      wake();
    });
    const frame = (code: string, body: string) => {
      const b = Buffer.alloc(5 + body.length);
      b[0] = code.charCodeAt(0);
      b.writeInt32BE(4 + body.length, 1);
      b.write(body, 5, 'latin1');
      return b;
    };
    t.write(Buffer.concat([startupMessage(FUZZ_DATABASE), createParse({ name: '', sql: 'copy fuzz_sink from stdin' }), createBind({ portal: '', statement: '', params: [] }), createDescribe('P', ''), createExecute({ portal: '', maxRows: 0 }), createSync()]));
    await until('G\u0000');
    t.write(Buffer.concat([frame('d', 'copied line\n'), frame('c', ''), createSync()]));
    await until('COPY 1');
    t.write(createQuery("select 'after-copy' as m, 'ada@example.com' as email"));
    await until('after-copy');
    t.write(createQuery("select 'second' as m"));
    await until('second');
    t.end();
    expect(reply).not.toContain('ada@example.com');
    expect(reply).toContain('[REDACTED]');
    expect(reply).not.toContain('protocol violation');
  }, 120_000);

  it('ends an HTTP session whose connection closed with pipelined responses still queued, and records those requests', async () => {
    // Found by `npm run fuzz` (the broker's memory grew): a response queued behind another on a keep-alive connection
    // never gets the socket, so it never closed when the connection went, and the session stayed open for good.
    const token = await d.token();
    const t = await tunnelTransport(d.brokerUrl, d.http, token);
    let reply = '';
    t.onData((b) => (reply += b.toString('latin1')));
    const closed = new Promise<void>((resolve) => t.onClose(resolve));
    // Three pipelined requests, then a request line no parser accepts: 400, and the connection closes while the
    // first three are still on their way to the backend.
    t.write(Buffer.from('GET /items HTTP/1.1\r\nHost: fuzz\r\n\r\n'.repeat(3) + 'G ET /items HTTP/1.1\r\nHost: fuzz\r\n\r\n'));
    await closed;
    expect(reply).toContain('HTTP/1.1 400 Bad Request');
    const auth = { authorization: `Bearer ${token}` };
    const { sessions } = (await (await fetch(`${d.brokerUrl}/api/v1/sessions?connection=${d.http}&limit=1`, { headers: auth })).json()) as { sessions: Array<{ id: string }> };
    // The session's live feed ends once the session is over (and never, were it left open).
    const feed = await (await fetch(`${d.brokerUrl}/api/v1/sessions/${sessions[0]!.id}/stream`, { headers: auth })).text();
    expect(feed).toContain('event: end\ndata: {"status":"closed"}');
    const events = [...feed.matchAll(/^data: (\{.*\})$/gm)].map((m) => JSON.parse(m[1]!) as { type?: string; data?: { seq?: number; status?: number } });
    const started = events.filter((e) => e.type === 'request-start').map((e) => e.data!.seq);
    const finished = events.filter((e) => e.type === 'request').map((e) => e.data!.seq);
    expect(started.length).toBeGreaterThan(0);
    expect(finished.sort()).toEqual(started.sort());
  }, 120_000);
});
