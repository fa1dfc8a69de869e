/**
 * One HTTP fuzz session through an `http` connection's tunnel: keep-alive requests — well-formed, and mangled at the
 * byte level or in the ways request smuggling and parser bugs are made of (conflicting lengths, bad chunk sizes,
 * bare LF, oversized headers, odd versions and targets) — each batch followed by a sentinel request whose echoed
 * marker proves the session still serves. The broker's parser answers 4xx and closes, or serves on.
 */
import { rng, type Rng } from './rng.js';
import { Progress, type Transport } from './transport.js';
import type { SessionOutcome } from './pg-dialogue.js';

export interface HttpDialogueOptions {
  seed: number;
  messages: number;
  chunk: number;
  mutationRate: number;
  stallMs: number;
  hangMs: number;
}

const PATHS = ['/items', '/items?q=1', '/echo', '/admin/users', '/%2e%2e/etc/passwd', '/items#frag', '/a/../b', '/'];

function wellFormedRequest(r: Rng): string {
  const path = r.pick(PATHS);
  const headers = `Host: fuzz\r\nUser-Agent: hoopctl-fuzz\r\nAccept: application/json\r\n${r.chance(0.3) ? 'Authorization: Bearer client-token\r\n' : ''}`;
  switch (r.int(5)) {
    case 0: {
      const body = JSON.stringify({ email: 'ada@example.com', n: r.int(1000) });
      return `POST ${path} HTTP/1.1\r\n${headers}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    }
    case 1: {
      const body = 'hello=' + 'x'.repeat(r.int(100));
      return `PUT ${path} HTTP/1.1\r\n${headers}Transfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
    }
    case 2:
      return `${r.pick(['HEAD', 'OPTIONS', 'DELETE'])} ${path} HTTP/1.1\r\n${headers}\r\n`;
    default:
      return `GET ${path} HTTP/1.1\r\n${headers}\r\n`;
  }
}

/** Structural attacks on one request, or byte-level damage. */
function mangle(r: Rng, req: string): { bytes: Buffer; kind: string } {
  const kinds = ['cl-te', 'bad-chunk', 'bare-lf', 'big-header', 'version', 'target', 'method', 'header-name', 'obs-fold', 'dup-cl', 'nul', 'bytes', 'truncate'] as const;
  const kind = r.pick(kinds);
  switch (kind) {
    case 'cl-te':
      return { kind, bytes: Buffer.from(`POST /echo HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: fuzz\r\n\r\n`) };
    case 'bad-chunk':
      return { kind, bytes: Buffer.from(`POST /echo HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n${r.pick(['zz', '-1', 'ffffffffffffffff1', '1;\x00', ' 5'])}\r\nhello\r\n0\r\n\r\n`) };
    case 'bare-lf':
      return { kind, bytes: Buffer.from(req.replace(/\r\n/g, r.chance(0.5) ? '\n' : '\r')) };
    case 'big-header':
      return { kind, bytes: Buffer.from(req.replace('\r\n\r\n', `\r\nX-Big: ${'a'.repeat(r.pick([8_000, 17_000, 70_000]))}\r\n\r\n`)) };
    case 'version':
      return { kind, bytes: Buffer.from(req.replace('HTTP/1.1', r.pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/9.9', 'HTTP/1.1x', 'HTTP/', 'http/1.1', '']))) };
    case 'target':
      return { kind, bytes: Buffer.from(req.replace(/ \S+ HTTP/, ` ${r.pick(['http://evil.example/x', '*', '//evil/x', '/a b', '/\x7f', '/%00', '/' + '%'.repeat(3), 'x'.repeat(20_000)])} HTTP`)) };
    case 'method':
      return { kind, bytes: Buffer.from(req.replace(/^\S+/, r.pick(['G ET', 'CONNECT', 'PRI', 'TRACE', '', 'GET\x00', 'ÄÖ', 'M-SEARCH']))) };
    case 'header-name':
      return { kind, bytes: Buffer.from(req.replace('\r\n\r\n', `\r\n${r.pick(['Bad Header', ':', 'X\x00Y', 'Content-Length', 'Host', 'Transfer-Encoding'])}: ${r.pick(['1', 'chunked, identity', '-5', '', 'x\ry'])}\r\n\r\n`)) };
    case 'obs-fold':
      return { kind, bytes: Buffer.from(req.replace('\r\n\r\n', '\r\nX-Fold: a\r\n  folded\r\n\r\n')) };
    case 'dup-cl':
      return { kind, bytes: Buffer.from(`POST /echo HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc`) };
    case 'nul':
      return { kind, bytes: Buffer.from(req.replace('\r\n\r\n', '\r\nX: a\x00b\r\n\r\n')) };
    case 'truncate':
      return { kind, bytes: Buffer.from(req).subarray(0, r.int(req.length)) };
    case 'bytes': {
      const b = Buffer.from(req);
      for (let i = 0, n = 1 + r.int(4); i < n; i++) b[r.int(b.length)] = r.int(256);
      return { kind, bytes: b };
    }
  }
}

export async function runHttpDialogue(t: Transport, o: HttpDialogueOptions): Promise<SessionOutcome & { statuses: Record<string, number> }> {
  const r = rng(o.seed);
  const progress = new Progress();
  let received = '';
  let closed = false;
  t.onData((b) => {
    received += b.toString('latin1');
    progress.notify();
  });
  t.onClose(() => {
    closed = true;
    progress.notify();
  });
  const mutations: Record<string, number> = {};
  let messages = 0;
  let gaveUp = false;
  let hung = false;
  const wait = async (done: () => boolean) => {
    if (await progress.until(() => closed || done(), o.stallMs)) return;
    gaveUp = true;
    t.end();
    if (!(await progress.until(() => closed, o.hangMs))) hung = true;
  };
  let chunkNo = 0;
  while (!closed && !gaveUp && messages < o.messages) {
    const parts: Buffer[] = [];
    for (let i = 0; i < o.chunk; i++) {
      const req = wellFormedRequest(r);
      if (r.chance(o.mutationRate)) {
        const m = mangle(r, req);
        mutations[m.kind] = (mutations[m.kind] ?? 0) + 1;
        parts.push(m.bytes);
      } else parts.push(Buffer.from(req));
    }
    messages += o.chunk;
    const marker = `hoopctl-fuzz-${o.seed}-${chunkNo++}`;
    parts.push(Buffer.from(`GET /sentinel/${marker} HTTP/1.1\r\nHost: fuzz\r\n\r\n`));
    t.write(Buffer.concat(parts));
    await wait(() => received.includes(`"/sentinel/${marker}"`));
  }
  if (!closed && !gaveUp) {
    t.end();
    await wait(() => false);
  }
  if (!closed) t.destroy();
  const statuses: Record<string, number> = {};
  for (const m of received.matchAll(/HTTP\/1\.1 (\d{3}) /g)) statuses[m[1]!] = (statuses[m[1]!] ?? 0) + 1;
  const last = [...received.matchAll(/HTTP\/1\.1 (\d{3}) /g)].pop()?.[1];
  const base = { messages, mutations, errors: {}, statuses };
  if (hung) return { ...base, kind: 'hang', finding: `no close ${o.hangMs} ms after the client ended its side (seed ${o.seed})` };
  if (!gaveUp && !closed) return { ...base, kind: 'ok' };
  if (gaveUp) return { ...base, kind: 'client gave up waiting (a request left incomplete), then the broker closed' };
  if (last && Number(last) >= 400) return { ...base, kind: `http ${last}, then closed` };
  return { ...base, kind: last ? 'ok' : 'closed without an answer' };
}
