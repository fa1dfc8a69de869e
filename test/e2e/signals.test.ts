import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import pg from 'pg';
import { parse, stringify } from 'yaml';
import { startConnectTunnel, type RunningTunnel } from '../../scripts/support/tunnel-client.js';
import { CliProcess, loginAs, readText, runCli, startStack, type Stack } from '../support/stack.js';

/**
 * The broker process and its signals, on one stack.
 *
 * Changing rules without a restart: the broker process re-reads its config on SIGHUP. New sessions follow the new
 * connections; a session already running keeps the rules it started with; a broken file changes nothing.
 *
 * SIGTERM drains a broker the way a load balancer needs: /readyz turns 503 at once (/healthz stays 200), new tunnels
 * are refused with 503 and the reason, a running psql session goes on working, and the process exits cleanly as soon
 * as the last session is done; a session still running when the grace period is over is ended with a reason its
 * client reads. Each case waits on events (the exit, the client's error), never on the grace period's length: the
 * first has a grace far longer than the test, the second one so short nothing is checked inside it.
 */
let stack: Stack;
let tunnel: RunningTunnel | undefined;
let ci: NodeJS.ProcessEnv;
let alice: NodeJS.ProcessEnv;

beforeAll(async () => {
  stack = await startStack({ drainGrace: '10m' });
  ci = stack.cliEnv({ HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'ci-report-secret' });
  tunnel = await startConnectTunnel('app-pg', ci);
  alice = await loginAs(stack, 'alice');
}, 120_000);

afterAll(async () => {
  await tunnel?.stop();
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

// Last: each case ends with the broker process gone.
describe('SIGTERM drain', () => {
  it('stops being ready, refuses new tunnels, lets the running session go on, and exits once it has ended', async () => {
    expect((await fetch(`${stack.brokerUrl}/readyz`)).status).toBe(200);
    const client = new pg.Client(tunnel!.pgClientConfig('app'));
    await client.connect();
    expect((await client.query('select 1 as n')).rows).toEqual([{ n: 1 }]);

    const exited = once(stack.broker, 'exit');
    stack.broker.kill('SIGTERM');
    // Not ready as soon as the signal is handled: wait on that condition.
    let ready: Response;
    do ready = await fetch(`${stack.brokerUrl}/readyz`);
    while (ready.status === 200);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({ ready: false, reason: 'draining' });
    expect((await fetch(`${stack.brokerUrl}/healthz`)).status).toBe(200);

    const refused = await runCli(['exec', 'app-pg', '-e', 'select 1'], ci);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('the broker is draining (shutting down): it takes no new sessions');

    // The session opened before the signal still works while the broker drains.
    expect((await client.query('select 2 as n')).rows).toEqual([{ n: 2 }]);
    // Its end is the broker's cue: with ten minutes of grace left, it exits now.
    await client.end();
    const [code] = (await exited) as [number | null];
    expect(code).toBe(0);
  });

  it('ends a session still running when the grace period is over, with a reason its client reads', async () => {
    const config = parse(readFileSync(stack.configPath, 'utf8')) as { server: Record<string, unknown> };
    config.server.drainGrace = '1s';
    writeFileSync(stack.configPath, stringify(config));
    await stack.restartBroker();
    const client = new pg.Client(tunnel!.pgClientConfig('app'));
    const ended = new Promise<string>((resolve) => client.on('error', (e) => resolve(e.message)));
    await client.connect();
    expect((await client.query('select 1 as n')).rows).toEqual([{ n: 1 }]);

    const exited = once(stack.broker, 'exit');
    stack.broker.kill('SIGTERM');
    expect(await ended).toMatch(/drain period is over/);
    const [code] = (await exited) as [number | null];
    expect(code).toBe(0);
  });
});
