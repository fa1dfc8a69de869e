import { describe, expect, it } from 'vitest';
import { BearerGate } from '../../../src/tunnel/http-bearer-gate.js';

const SECRET = 'tunnel-secret-123';

/** Feeds `text` cut at `cut` (and whole when cut is 0); returns what the gate lets through. */
function through(text: string, cut = 0): string {
  const gate = new BearerGate(SECRET);
  const b = Buffer.from(text, 'latin1');
  const parts = cut > 0 ? [b.subarray(0, cut), b.subarray(cut)] : [b];
  return Buffer.concat(parts.flatMap((p) => gate.feed(p))).toString('latin1');
}

const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${SECRET}\r\n${extra}\r\n`;

describe('the HTTP tunnel bearer', () => {
  it('takes the bearer out of every request of a keep-alive stream, cut at any byte', () => {
    const post = `POST /a HTTP/1.1\r\nauthorization: bearer ${SECRET}\r\nContent-Length: 27\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n`;
    const chunked = `PUT /c HTTP/1.1\r\nAuthorization: Bearer ${SECRET}\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n`;
    const stream = get('/one') + post + chunked + get('/two');
    const expected = stream.replace(/authorization: bearer \S+\r\n/gi, '');
    for (let cut = 0; cut < stream.length; cut++) expect(through(stream, cut)).toBe(expected);
    expect(expected).not.toContain(SECRET);
    // The body that looks like a request is body: it passes as is, without needing a bearer.
    expect(expected).toContain('GET /smuggled');
  });

  it('refuses a request without the bearer, or with another one, even after good ones', () => {
    expect(() => through('GET / HTTP/1.1\r\nHost: x\r\n\r\n')).toThrow(/wrong or no bearer/);
    expect(() => through('GET / HTTP/1.1\r\nAuthorization: Bearer guessed\r\n\r\n')).toThrow(/wrong or no bearer/);
    expect(() => through(get('/ok') + 'GET /next HTTP/1.1\r\nHost: x\r\n\r\n')).toThrow(/wrong or no bearer/);
    expect(() => through(get('/twice', `Authorization: Bearer ${SECRET}\r\n`))).toThrow(/wrong or no bearer/);
  });

  it('refuses what it cannot frame for certain', () => {
    expect(() => through(get('/', 'Content-Length: 3\r\nTransfer-Encoding: chunked\r\n'))).toThrow(/both Content-Length/);
    expect(() => through(get('/', 'Content-Length: 3\r\nContent-Length: 4\r\n'))).toThrow(/Content-Length/);
    expect(() => through(get('/', 'Transfer-Encoding: gzip\r\n'))).toThrow(/Transfer-Encoding/);
    expect(() => through('\x16\x03\x01 tls hello\r\n\r\n')).toThrow(/not an HTTP/);
    expect(() => through('GET / HTTP/1.1\r\n' + 'X: y\r\n'.repeat(20_000))).toThrow(/too large/);
  });

  it('passes everything after an upgrade as it is (kubectl exec, port-forward)', () => {
    const up = get('/api/v1/namespaces/d/pods/p/exec', 'Connection: Upgrade\r\nUpgrade: websocket\r\n');
    const frames = '\x82\x05hello GET / HTTP/1.1\r\n\r\n';
    expect(through(up + frames)).toBe(up.replace(`Authorization: Bearer ${SECRET}\r\n`, '') + frames);
  });
});
