import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APP_PASSWORD, CliProcess, loginAs, readText, runCli, runProcess, startStack, type Stack } from '../support/stack.js';

/**
 * Issue 18: a connection's password printed by a credential helper (as `vault kv get -field=password` would),
 * with the real broker, PostgreSQL, psql and the CLI as processes. A helper that works lets sessions in and is not
 * run again within `cacheFor`; one that fails, hangs or prints nothing refuses the session with a clear reason,
 * recorded, and its stderr stays in the broker log.
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;
let helpers: string;
const STDERR_MARK = 'vault: permission denied for token hvs.NOT-FOR-CLIENTS';

const script = (name: string, body: string) => {
  const path = join(helpers, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
};

beforeAll(async () => {
  helpers = mkdtempSync(join(tmpdir(), 'hoop-helpers-'));
  const runs = join(helpers, 'runs');
  const ok = script('vault-ok', `echo run >> ${runs}; printf '%s\\n' '${APP_PASSWORD}'`);
  const fails = script('vault-fails', `echo '${STDERR_MARK}' >&2; exit 2`);
  const hangs = script('vault-hangs', 'exec sleep 600');
  const empty = script('vault-empty', 'echo "no secret at that path" >&2');
  const conn = (name: string, password: Record<string, unknown>) => ({ name, credentials: { user: 'app_rw', password } });
  stack = await startStack({
    extraConnections: [
      conn('pg-helper', { command: [ok, 'secret/data/app', '--field=password'], cacheFor: '10m' }),
      conn('pg-helper-fails', { command: [fails] }),
      conn('pg-helper-hangs', { command: [hangs], timeout: '1s' }),
      conn('pg-helper-empty', { command: [empty] }),
    ],
  });
  alice = await loginAs(stack, 'alice');
}, 120_000);

afterAll(async () => {
  await stack?.stop();
  rmSync(helpers, { recursive: true, force: true });
});

describe('credential helpers', () => {
  it('the password a helper prints opens sessions, and within cacheFor the helper is not run again', async () => {
    for (let i = 0; i < 2; i++) {
      const r = await runCli(['exec', 'pg-helper', '-o', 'json', '-e', 'select current_user as who'], alice);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)[0].rows).toEqual([{ who: 'app_rw' }]);
    }
    expect(readFileSync(join(helpers, 'runs'), 'utf8').trim().split('\n')).toEqual(['run']);
  });

  it.each([
    ['pg-helper-fails', 'the credential helper exited with status 2'],
    ['pg-helper-hangs', 'the credential helper did not finish within 1000 ms'],
    ['pg-helper-empty', 'the credential helper printed nothing'],
  ])('%s refuses the session with the reason, recorded; the helper\'s stderr reaches only the broker log', async (name, reason) => {
    const r = await runCli(['exec', name, '-e', 'select 1'], alice);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`the broker could not get the credential of "${name}" (credentials.password): ${reason}`);
    expect(r.stderr).not.toContain('vault:');
    expect(r.stderr).not.toContain('no secret at that path');
    const list = await runCli(['sessions', '-o', 'json', '--connection', name], alice);
    const [session] = JSON.parse(list.stdout) as Array<{ id: string; status: string }>;
    expect(session!.status).toBe('refused');
    const replay = await runCli(['replay', session!.id, '-o', 'json'], alice);
    expect(replay.stdout).toContain(reason);
    expect(replay.stdout).not.toContain('vault:');
  });

  it('psql through the tunnel prints the refusal as a FATAL', async () => {
    const connect = new CliProcess(['connect', 'pg-helper-fails', '--port', '0'], alice);
    try {
      const [, encoded, port] = await connect.waitFor(/postgresql:\/\/[^:\s]+:([^@\s]+)@127\.0\.0\.1:(\d+)\//);
      const psql = await runProcess('psql', ['-X', '-h', '127.0.0.1', '-p', port!, '-U', 'x', '-d', 'app', '-c', 'select 1'], {
        PATH: process.env.PATH, PGCONNECT_TIMEOUT: '30', PGPASSWORD: decodeURIComponent(encoded!),
      });
      expect(psql.code).not.toBe(0);
      expect(psql.stderr).toMatch(/FATAL: {2}hoopctl: the broker could not get the credential of "pg-helper-fails" \(credentials\.password\): the credential helper exited with status 2/);
      expect(psql.stderr).not.toContain('vault:');
    } finally {
      await connect.stop();
    }
  });

  it('the broker log has the helper\'s stderr, trimmed, and never the password', () => {
    const log = readText(stack.brokerLogPath);
    expect(log).toContain(STDERR_MARK);
    expect(log).toContain('no secret at that path');
    expect(log).not.toContain(APP_PASSWORD);
  });
});
