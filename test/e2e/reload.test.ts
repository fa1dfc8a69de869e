import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import pg from 'pg';
import { parse, stringify } from 'yaml';
import { CliProcess, loginAs, readText, runCli, startStack, type Stack } from '../support/stack.js';

/**
 * Changing rules without a restart: the broker process re-reads its config on SIGHUP. New sessions follow the new
 * connections; a session already running keeps the rules it started with; a broken file changes nothing.
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;

beforeAll(async () => {
  stack = await startStack();
  alice = await loginAs(stack, 'alice');
}, 120_000);

afterAll(async () => {
  await stack?.stop();
});

async function hup(expectLine: RegExp): Promise<void> {
  const before = readText(stack.brokerLogPath).length;
  stack.broker.kill('SIGHUP');
  for (let i = 0; i < 600 && !expectLine.test(readText(stack.brokerLogPath).slice(before)); i++) await new Promise((r) => setTimeout(r, 50));
  expect(readText(stack.brokerLogPath).slice(before)).toMatch(expectLine);
}

describe('config reload (SIGHUP)', () => {
  it('applies new rules to new sessions, leaves a running session its own, and keeps the running config when the file is broken', async () => {
    const tunnel = new CliProcess(['connect', 'app-pg', '-o', 'json'], alice);
    try {
      const ready = JSON.parse((await tunnel.waitFor(/\{.*"port".*\}\n/))[0]!) as { port: number; url: string };
      const { port } = ready;
      const password = decodeURIComponent(new URL(ready.url).password);
      const running = new pg.Client({ host: '127.0.0.1', port, user: 'x', database: 'app', password });
      await running.connect();

      const original = readFileSync(stack.configPath, 'utf8');
      const doc = parse(original) as { connections: Array<Record<string, unknown>>; server: Record<string, unknown> };
      doc.connections[0]!.rules = [{ name: 'no-reads-today', match: { category: ['read'] }, action: 'deny', message: 'maintenance window' }];
      doc.server.listen = '127.0.0.1:1'; // not applied without a restart, and said so
      writeFileSync(stack.configPath, stringify(doc));
      await hup(/config reloaded: \d+ connection\(s\); server changed and take effect after a restart/);

      const denied = await runCli(['exec', 'app-pg', '-e', 'select 1'], alice);
      expect(denied.code).toBe(1);
      expect(denied.stderr).toContain('denied by rule "no-reads-today": maintenance window');
      expect((await running.query('select 2 as still')).rows).toEqual([{ still: 2 }]);
      await running.end();

      writeFileSync(stack.configPath, original.replace('connections:', 'connections: [unclosed'));
      await hup(/config not reloaded, the running one stays: .*not valid YAML/);
      const stillDenied = await runCli(['exec', 'app-pg', '-e', 'select 1'], alice);
      expect(stillDenied.stderr).toContain('no-reads-today');

      writeFileSync(stack.configPath, original);
      await hup(/config reloaded: \d+ connection\(s\)\n/);
      const allowed = await runCli(['exec', 'app-pg', '-e', 'select 1'], alice);
      expect(allowed.code, allowed.stderr).toBe(0);
    } finally {
      await tunnel.stop();
    }
  });
});
