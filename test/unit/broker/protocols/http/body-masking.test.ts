import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { bodyMode, LineMasker, type BodyMask } from '../../../../../src/broker/protocols/http/body-masking.js';
import { parseJsonPath } from '../../../../../src/policy/http-json-mask.js';

const mask: BodyMask = { paths: [parseJsonPath('$.object.data.*')], detectors: ['email'], strategy: 'redact', key: 'k', maxBytes: 1024 };

describe('body masking', () => {
  it('chooses a mode from the content type and whether the request watches', () => {
    expect(bodyMode('application/json', false, mask)).toBe('json');
    expect(bodyMode('application/json;stream=watch', false, mask)).toBe('json-lines');
    expect(bodyMode('application/json', true, mask)).toBe('json-lines');
    expect(bodyMode('application/vnd.kubernetes.protobuf', false, mask)).toBe('pass');
    expect(bodyMode('text/plain', false, mask)).toBe('text-lines');
    expect(bodyMode('application/json', false, undefined)).toBe('pass');
  });

  it('masks a watch stream event by event, whatever the chunking', async () => {
    const events = [
      { type: 'ADDED', object: { kind: 'Secret', data: { password: 'hunter2' } } },
      { type: 'MODIFIED', object: { kind: 'ConfigMap', metadata: { annotations: { owner: 'ops@example.com' } } } },
    ];
    const wire = Buffer.from(events.map((e) => JSON.stringify(e)).join('\n') + '\n');
    const chunks = [];
    for (let i = 0; i < wire.length; i += 7) chunks.push(wire.subarray(i, i + 7));
    const out = await text(Readable.from(chunks).pipe(new LineMasker(mask, true)));
    const lines = out.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0].object.data.password).toBe('[REDACTED]');
    expect(lines[1].object.metadata.annotations.owner).toBe('[REDACTED:email]');
    expect(out).not.toMatch(/hunter2|ops@example\.com/);
  });
});
