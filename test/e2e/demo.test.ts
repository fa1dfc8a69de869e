import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CliProcess, runCli } from '../support/stack.js';
import { freePort } from '../../src/lib/net.js';

/**
 * The README's first command: `hoopctl demo` on embedded defaults (a throwaway cluster, the development issuer, a
 * SQLite broker), driven the way its banner says, then stopped with Ctrl-C.
 */
const dir = mkdtempSync(join(tmpdir(), 'hoop-demo-'));
let demo: CliProcess | undefined;

afterAll(async () => {
  await demo?.stop().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

describe('hoopctl demo', () => {
  it('runs on embedded defaults: its CI line works, PII comes back masked, DDL is denied, Ctrl-C stops it cleanly', async () => {
    const [port, issuerPort] = [await freePort(), await freePort()];
    demo = new CliProcess(['demo', '--port', String(port), '--issuer-port', String(issuerPort), '--data-dir', join(dir, 'state')], {
      PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: join(dir, 'config'),
    });
    await demo.waitFor(/Press Ctrl-C to stop/, 60_000);
    expect(demo.stdout).toContain(`hoopctl demo is running: broker http://127.0.0.1:${port}`);
    const ci = {
      PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: join(dir, 'ci'),
      HOOPCTL_BROKER: `http://127.0.0.1:${port}`, HOOPCTL_CLIENT_ID: 'demo-ci', HOOPCTL_CLIENT_SECRET: 'demo-ci-secret',
    };
    const rows = await runCli(['exec', 'demo-pg', '-o', 'json', '-e', 'select name, email, card from customers order by id limit 2'], ci);
    expect(rows.code, rows.stderr).toBe(0);
    const [result] = JSON.parse(rows.stdout) as Array<{ rows: Array<{ name: string; email: string; card: string }> }>;
    expect(result!.rows[0]!.name).toBe('customer 1');
    expect(result!.rows[0]!.email).not.toBe('customer1@example.com');
    expect(result!.rows[0]!.email).toMatch(/\*/);
    expect(result!.rows[0]!.card).toBe('**** **** **** 0001');
    const drop = await runCli(['exec', 'demo-pg', '-e', 'drop table customers'], ci);
    expect(drop.code).toBe(1);
    expect(drop.stderr).toContain('denied by rule "no-ddl": schema changes go through migrations');
    demo.child.kill('SIGINT');
    expect(await demo.exit(30_000)).toBe(0);
  }, 120_000);
});
