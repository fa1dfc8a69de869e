import { describe, expect, it } from 'vitest';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { connect as tlsConnect, TLSSocket } from 'node:tls';
import { makeLoopbackCertificate } from '../../../src/tunnel/loopback-certificate.js';

describe('the local listener\'s certificate', () => {
  it('is a valid self-signed X.509 certificate for 127.0.0.1 and localhost, not a CA', () => {
    const made = makeLoopbackCertificate(new Date('2026-11-28T12:00:00Z'));
    const cert = new X509Certificate(made.cert);
    expect(cert.subject).toBe('CN=hoopctl local listener');
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(cert.ca).toBe(false);
    expect(new Date(cert.validFrom) < new Date('2026-11-28T12:00:00Z')).toBe(true);
    expect(new Date(cert.validTo) > new Date('2027-11-01T00:00:00Z')).toBe(true);
  });

  it('carries a TLS handshake, and a client that trusts it verifies the name 127.0.0.1', async () => {
    const made = makeLoopbackCertificate();
    const server = createServer((raw) => {
      const secure = new TLSSocket(raw, { isServer: true, secureContext: made.secureContext });
      secure.on('data', (d) => secure.end(Buffer.concat([Buffer.from('echo:'), d])));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const client = tlsConnect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, ca: made.cert });
      await once(client, 'secureConnect');
      client.end('hi');
      const chunks: Buffer[] = [];
      for await (const c of client) chunks.push(c as Buffer);
      expect(Buffer.concat(chunks).toString()).toBe('echo:hi');
    } finally {
      server.close();
    }
  });
});
