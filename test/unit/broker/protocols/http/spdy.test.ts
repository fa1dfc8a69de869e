import { describe, expect, it } from 'vitest';
import {
  createDataFrame, createPing, createRstStream, createSynReply, createSynStream, encodeNameValueBlock, HeaderBlockDeflater, HeaderBlockInflater,
  headerBlockOf, parseNameValueBlock, SPDY3_DICTIONARY, SpdyFlag, SpdyFrameReader, SpdyProtocolError, SpdyRst, SpdyType, type SpdyFrame,
} from '../../../../../src/broker/protocols/http/spdy.js';
import { KubePortForwardRecording } from '../../../../../src/broker/protocols/http/kube-portforward-recording.js';
import { MemoryRecorder, type RecordedEvent } from '../../../../support/memory-recorder.js';

describe('SPDY/3.1 frames', () => {
  it('has the 1423-byte header dictionary of SPDY/3, starting with "options" and ending with "enq=0."', () => {
    expect(SPDY3_DICTIONARY.length).toBe(1423);
    expect(SPDY3_DICTIONARY.subarray(0, 11)).toEqual(Buffer.from('\0\0\0\x07options', 'latin1'));
    expect(SPDY3_DICTIONARY.subarray(-6).toString('latin1')).toBe('enq=0.');
  });

  it('splits a stream into the same frames however it is cut', () => {
    const wire = Buffer.concat([
      createSynStream(1, Buffer.from('block-one')),
      createDataFrame(1, Buffer.from('hello')),
      createPing(7),
      createDataFrame(1, Buffer.alloc(0), SpdyFlag.Fin),
      createRstStream(1, SpdyRst.Cancel),
    ]);
    const whole = new SpdyFrameReader().push(wire);
    expect(whole.map((f) => (f.control ? `c${f.type}` : `d${f.streamId}:${f.payload.toString()}:${f.flags}`))).toEqual(['c1', 'd1:hello:0', 'c6', 'd1::1', 'c3']);
    for (let cut = 1; cut < wire.length; cut++) {
      const r = new SpdyFrameReader();
      expect([...r.push(wire.subarray(0, cut)), ...r.push(wire.subarray(cut))]).toEqual(whole);
    }
    for (let step = 1; step <= 3; step++) {
      const r = new SpdyFrameReader();
      const frames: SpdyFrame[] = [];
      for (let i = 0; i < wire.length; i += step) frames.push(...r.push(wire.subarray(i, i + step)));
      expect(frames).toEqual(whole);
    }
  });

  it('stops at a control frame of another version, with the reason', () => {
    const v2 = createPing(1);
    v2.writeUInt16BE(0x8002, 0);
    const r = new SpdyFrameReader();
    expect(r.push(Buffer.concat([createPing(3), v2, createPing(5)]))).toHaveLength(1);
    expect(r.broken).toBeInstanceOf(SpdyProtocolError);
    expect(r.broken?.message).toMatch(/version 2/);
    expect(r.push(createPing(9))).toEqual([]);
  });

  it('compresses header blocks as one zlib stream per direction: each block reads only after the ones before it', async () => {
    const out = new HeaderBlockDeflater();
    const inn = new HeaderBlockInflater();
    const blocks = [
      await out.deflate({ streamType: 'error', port: '5432', requestID: '0' }),
      await out.deflate({ streamType: 'data', port: '5432', requestID: '0' }),
      await out.deflate({ multi: ['a', 'b'] }),
    ];
    const read = [];
    for (const b of blocks) read.push(Object.fromEntries(await inn.inflate(b)));
    expect(read).toEqual([
      { streamtype: ['error'], port: ['5432'], requestid: ['0'] },
      { streamtype: ['data'], port: ['5432'], requestid: ['0'] },
      { multi: ['a', 'b'] },
    ]);
    // The second block alone is not readable: it refers back into the first.
    await expect(new HeaderBlockInflater().inflate(blocks[1])).rejects.toThrow();
    out.close();
    inn.close();
  });

  it('refuses a truncated name/value block', () => {
    const block = encodeNameValueBlock({ port: '8080' });
    expect(parseNameValueBlock(block).get('port')).toEqual(['8080']);
    expect(() => parseNameValueBlock(block.subarray(0, block.length - 2))).toThrow(SpdyProtocolError);
    expect(() => parseNameValueBlock(Buffer.from([0, 0]))).toThrow(/truncated/);
  });

  it('finds the header block of SYN_STREAM and SYN_REPLY', () => {
    const [syn] = new SpdyFrameReader().push(createSynStream(3, Buffer.from('abc')));
    const [reply] = new SpdyFrameReader().push(createSynReply(3, Buffer.from('xyz')));
    expect(syn.control && headerBlockOf(syn)?.toString()).toBe('abc');
    expect(reply.control && headerBlockOf(reply)?.toString()).toBe('xyz');
    expect(syn.control && syn.type).toBe(SpdyType.SynStream);
  });
});

/** kubectl's side and the kubelet's side of one forwarded connection, as WebSocket messages. */
async function forwardedConnection(o: { requestId: string; port: number; sent: string; received: string; error?: string }) {
  const client = new HeaderBlockDeflater();
  const pod = new HeaderBlockDeflater();
  const errorId = Number(o.requestId) * 4 + 1;
  const dataId = errorId + 2;
  const fromClient = [
    createSynStream(errorId, await client.deflate({ streamtype: 'error', port: String(o.port), requestid: o.requestId })),
    createDataFrame(errorId, Buffer.alloc(0), SpdyFlag.Fin),
    createSynStream(dataId, await client.deflate({ streamtype: 'data', port: String(o.port), requestid: o.requestId })),
    createDataFrame(dataId, Buffer.from(o.sent)),
    createDataFrame(dataId, Buffer.alloc(0), SpdyFlag.Fin),
  ];
  const fromPod = [
    createSynReply(errorId, await pod.deflate({})),
    createSynReply(dataId, await pod.deflate({})),
    ...(o.error ? [createDataFrame(errorId, Buffer.from(o.error))] : []),
    createDataFrame(dataId, Buffer.from(o.received)),
    createDataFrame(dataId, Buffer.alloc(0), SpdyFlag.Fin),
    createDataFrame(errorId, Buffer.alloc(0), SpdyFlag.Fin),
  ];
  return { fromClient, fromPod };
}

describe('port-forward recording', () => {
  it('records each forwarded connection: the pod port when it opens, the bytes each way and the kubelet error when it ends', async () => {
    const events: RecordedEvent[] = [];
    const unreadable: string[] = [];
    const rec = new KubePortForwardRecording(new MemoryRecorder('ses_pf', events), { namespace: 'default', pod: 'web' }, (r) => unreadable.push(r));
    const a = await forwardedConnection({ requestId: '0', port: 5432, sent: 'SELECT 1', received: 'one row' });
    // One byte per WebSocket message: the SPDY stream is read across message boundaries.
    for (const b of Buffer.concat(a.fromClient)) rec.fromClient(Buffer.from([b]));
    for (const f of a.fromPod) rec.fromServer(f);
    await rec.close();
    expect(unreadable).toEqual([]);
    expect(events.map((e) => e.data)).toEqual([
      { action: 'open', port: 5432, requestId: '0', namespace: 'default', pod: 'web' },
      expect.objectContaining({ action: 'close', port: 5432, requestId: '0', bytesToPod: 8, bytesFromPod: 7 }),
    ]);
  });

  it('keeps the error the kubelet reports, and closes what is still open when the connection ends', async () => {
    const events: RecordedEvent[] = [];
    const rec = new KubePortForwardRecording(new MemoryRecorder('ses_pf', events), { namespace: 'prod', pod: 'db' }, () => undefined);
    const a = await forwardedConnection({ requestId: '0', port: 9999, sent: 'x', received: '', error: 'error forwarding port 9999: connection refused' });
    for (const f of a.fromClient.slice(0, 3)) rec.fromClient(f);
    for (const f of a.fromPod) rec.fromServer(f);
    await rec.close();
    expect(events.map((e) => e.data)).toEqual([
      { action: 'open', port: 9999, requestId: '0', namespace: 'prod', pod: 'db' },
      expect.objectContaining({ action: 'close', port: 9999, bytesToPod: 0, bytesFromPod: 0, error: 'error forwarding port 9999: connection refused' }),
    ]);
  });

  it('reports a stream that is not SPDY/3 so the proxy can end the connection, and records why', async () => {
    const events: RecordedEvent[] = [];
    const unreadable: string[] = [];
    const rec = new KubePortForwardRecording(new MemoryRecorder('ses_pf', events), {}, (r) => unreadable.push(r));
    rec.fromClient(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    await rec.close();
    expect(unreadable).toHaveLength(1);
    expect(unreadable[0]).toMatch(/not SPDY\/3\.1: the stream does not start with a control frame/);
    expect(events).toEqual([expect.objectContaining({ type: 'port-forward', data: { action: 'unreadable', error: unreadable[0] } })]);
  });

  it('reports data for a stream no SYN_STREAM opened', async () => {
    const unreadable: string[] = [];
    const rec = new KubePortForwardRecording(new MemoryRecorder('ses_pf', []), {}, (r) => unreadable.push(r));
    const open = await forwardedConnection({ requestId: '0', port: 80, sent: '', received: '' });
    rec.fromClient(Buffer.concat([open.fromClient[0], createDataFrame(99, Buffer.from('smuggled'))]));
    await rec.close();
    expect(unreadable).toEqual(['port-forward data for stream 99, which was never opened']);
  });

  it('refuses a header block that inflates to more than 256 KiB (a zlib bomb), and an oversized control frame', async () => {
    const bomb = await new HeaderBlockDeflater().deflate({ streamtype: 'data', padding: 'x'.repeat(4 * 1024 * 1024) });
    expect(bomb.length).toBeLessThan(64 * 1024);
    const unreadable: string[] = [];
    const rec = new KubePortForwardRecording(new MemoryRecorder('ses_pf', []), {}, (r) => unreadable.push(r));
    rec.fromClient(createSynStream(1, bomb));
    await rec.close();
    expect(unreadable).toEqual([expect.stringMatching(/inflates to more than 262144 bytes/)]);
    const big = new SpdyFrameReader();
    expect(big.push(createSynStream(1, Buffer.alloc(70 * 1024)))).toEqual([]);
    expect(big.broken?.message).toMatch(/a control frame of \d+ bytes/);
  });

  it('cuts a stream that opens more forwarded connections at once than any kubectl would', async () => {
    const { MAX_OPEN_FORWARDS } = await import('../../../../../src/broker/protocols/http/kube-portforward-recording.js');
    const client = new HeaderBlockDeflater();
    const unreadable: string[] = [];
    const rec = new KubePortForwardRecording(new MemoryRecorder('ses_pf', []), {}, (r) => unreadable.push(r));
    for (let i = 0; i <= MAX_OPEN_FORWARDS; i++) {
      rec.fromClient(createSynStream(2 * i + 1, await client.deflate({ streamtype: 'data', port: '80', requestid: String(i) })));
    }
    await rec.close();
    expect(unreadable).toEqual([`more than ${MAX_OPEN_FORWARDS} forwarded connections open at once`]);
  });

  it('reports a header block that does not inflate (compressed without the SPDY dictionary)', async () => {
    const { deflateSync } = await import('node:zlib');
    const unreadable: string[] = [];
    const rec = new KubePortForwardRecording(new MemoryRecorder('ses_pf', []), {}, (r) => unreadable.push(r));
    rec.fromClient(createSynStream(1, deflateSync(encodeNameValueBlock({ streamtype: 'data' }), { dictionary: Buffer.from('another dictionary') })));
    await rec.close();
    expect(unreadable).toEqual([expect.stringMatching(/does not inflate/)]);
  });
});
