import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { httpConnectionSchema, kubernetesConnectionSchema, resolveWebConnection } from '../../../../../src/broker/protocols/http/config.js';

const secrets = (s: { env?: string; value?: string; file?: string }, field: string) => ({ reveal: () => `${field}=${s.value ?? s.env ?? s.file}` });

describe('http connection config', () => {
  it('parses a full http connection and resolves each credential kind through the broker’s resolver', () => {
    const base = { name: 'api', type: 'http', target: { url: 'https://api.internal:8443/v2' }, access: { groups: ['dev'] } };
    const bearer = resolveWebConnection(httpConnectionSchema.parse({ ...base, credentials: { bearer: { env: 'TOKEN' } } }), secrets, { field: 'connections[1]' });
    expect(bearer.credentials && 'bearer' in bearer.credentials && bearer.credentials.bearer.reveal()).toBe('connections[1].credentials.bearer=TOKEN');
    const basic = resolveWebConnection(httpConnectionSchema.parse({ ...base, credentials: { basic: { user: 'svc', password: { value: 'pw' } } } }), secrets);
    expect(basic.credentials).toMatchObject({ basic: { user: 'svc' } });
    const header = resolveWebConnection(httpConnectionSchema.parse({ ...base, credentials: { header: { name: 'X-Api-Key', value: { file: 'k' } } } }), secrets);
    expect(header.credentials && 'header' in header.credentials && header.credentials.header.value.reveal()).toBe('connection.credentials.header.value=k');
    const parsed = httpConnectionSchema.parse({ ...base, mask: { jsonPaths: '$.a', detectors: ['aws_key'] } });
    expect(parsed).toMatchObject({ defaultAction: 'allow', rules: [], mask: { jsonPaths: ['$.a'], detectors: ['aws_access_key'], strategy: 'redact' } });
  });

  it('names the field of a bad value', () => {
    const r = httpConnectionSchema.safeParse({ name: 'api', type: 'http', target: { url: 'ftp://x' }, access: {}, mask: { jsonPaths: ['users.email'] } });
    expect(r.success).toBe(false);
    const paths = r.error!.issues.map((i) => i.path.join('.'));
    expect(paths).toContain('target.url');
    expect(paths).toContain('mask.jsonPaths.0');
  });

  it('kubernetes: bearer or client certificate; inline CA read as PEM', () => {
    const k = resolveWebConnection(
      kubernetesConnectionSchema.parse({
        name: 'k8s',
        type: 'kubernetes',
        target: { url: 'https://10.0.0.1:6443', ca: '-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n' },
        credentials: { clientCert: { cert: { value: 'c' }, key: { value: 'k' } } },
        access: {},
        rules: [{ name: 'ro', match: { verb: ['get', 'list'] }, action: 'allow' }],
      }),
      secrets,
    );
    expect(k.target.caPem).toContain('BEGIN CERTIFICATE');
    expect('clientCert' in k.credentials && k.credentials.clientCert.key.reveal()).toBe('connection.credentials.clientCert.key=k');
    expect(kubernetesConnectionSchema.safeParse({ name: 'k', type: 'kubernetes', target: { url: 'https://x' }, access: {} }).success).toBe(false);
  });

});
