import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { runCli } from '../support/stack.js';
import { DENY_POLICY, attempts } from '../support/policy-attempts.js';

/**
 * `hoopctl policy check` (the CLI as a process, reading a broker config) must decide every attempt of the live
 * suite the way the broker's proxy does there: the same action by the same rule.
 */
let config: string;

beforeAll(() => {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-parity-'));
  config = join(dir, 'broker.yaml');
  writeFileSync(config, stringify({
    auth: { issuers: [{ issuer: 'https://login.example.com', audience: 'urn:x' }] },
    connections: [{
      name: 'pg', type: 'postgres', target: { host: 'db', database: 'app' }, credentials: { user: 'app' }, access: { groups: ['developers'] },
      reviews: { groups: ['leads'] },
      ...DENY_POLICY,
    }],
  }));
});

describe('policy check agrees with the live proxy', () => {
  it('on every attempt of the bypass suite', async () => {
    const results: Array<{ sql: string; rule?: string; action: string; expected: string }> = [];
    for (let i = 0; i < attempts.length; i += 6) {
      const batch = attempts.slice(i, i + 6);
      const runs = await Promise.all(batch.map((a) =>
        runCli(['policy', 'check', '-c', config, '--connection', 'pg', '--as', 'group=developers', '-e', a.sql, '-o', 'json'], { PATH: process.env.PATH, HOME: tmpdir() })));
      runs.forEach((r, j) => {
        const verdict = JSON.parse(r.stdout).verdict as { action: string; rule?: string };
        results.push({ sql: batch[j]!.sql, rule: verdict.rule, action: verdict.action, expected: batch[j]!.rule });
      });
    }
    expect(results).toHaveLength(attempts.length);
    for (const r of results) {
      expect({ sql: r.sql, rule: r.rule }).toEqual({ sql: r.sql, rule: r.expected });
      expect(r.action).toBe(r.expected === 'grants-need-review' ? 'review' : 'deny');
    }
  }, 120_000);
});
