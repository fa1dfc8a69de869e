import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CredentialHelperError, runCredentialHelper } from '../../../src/lib/credential-helper.js';
import { FetchedSecret } from '../../../src/lib/secret.js';

/** Credential helpers run as real processes: scripts in a temp dir stand in for vault, aws, op. */
let dir: string;
const script = (name: string, body: string) => {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
};

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'hoop-helper-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const failure = async (p: Promise<unknown>) => {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(CredentialHelperError);
  return e as CredentialHelperError;
};

describe('runCredentialHelper', () => {
  it('returns what the helper printed, without its trailing line break', async () => {
    const helper = script('ok', 'printf "s3cret value\\n"');
    expect(await runCredentialHelper([helper], { timeoutMs: 20_000 })).toBe('s3cret value');
  });

  it('passes arguments as they are: no shell expands them', async () => {
    const marker = join(dir, 'expanded');
    const helper = script('args', 'printf "%s|%s" "$1" "$2"');
    const value = await runCredentialHelper([helper, `$(touch ${marker})`, 'a b;c'], { timeoutMs: 20_000 });
    expect(value).toBe(`$(touch ${marker})|a b;c`);
    expect(existsSync(marker)).toBe(false);
  });

  it('a non-zero exit is a failure naming the status; stderr is only in the detail, with the secret cut out', async () => {
    const helper = script('fails', 'printf "hunter22"; echo "vault: permission denied near hunter22" >&2; exit 3');
    const e = await failure(runCredentialHelper([helper], { timeoutMs: 20_000 }));
    expect(e.message).toBe('the credential helper exited with status 3');
    expect(e.message).not.toContain('permission denied');
    expect(e.detail).toBe('vault: permission denied near [redacted]');
    expect(e.code).toBe('CREDENTIAL_UNAVAILABLE');
  });

  it('a helper that prints nothing (or only a line break) is a failure', async () => {
    const e = await failure(runCredentialHelper([script('empty', 'echo')], { timeoutMs: 20_000 }));
    expect(e.message).toBe('the credential helper printed nothing');
  });

  it('a helper that hangs is killed with what it started at the timeout', async () => {
    const pidFile = join(dir, 'child.pid');
    // The helper starts a child that would keep its output open: the whole process group goes.
    const helper = script('hangs', `sleep 600 & echo $! > ${pidFile}; wait`);
    const e = await failure(runCredentialHelper([helper], { timeoutMs: 1500 }));
    expect(e.message).toBe('the credential helper did not finish within 1500 ms');
    // Had the machine been too slow for the helper to start its child before the timeout, there is none to outlive it.
    if (!existsSync(pidFile)) return;
    const pid = Number(readFileSync(pidFile, 'utf8'));
    await expect.poll(() => {
      try {
        process.kill(pid, 0);
        return 'alive';
      } catch {
        return 'gone';
      }
    }, { timeout: 20_000 }).toBe('gone');
  });

  it('a program that does not exist is a failure naming it', async () => {
    const e = await failure(runCredentialHelper([join(dir, 'missing')], { timeoutMs: 20_000 }));
    expect(e.message).toContain('could not be run: ENOENT');
  });

  it('more output than a secret can be is a failure', async () => {
    const e = await failure(runCredentialHelper([script('floods', 'head -c 200000 /dev/zero')], { timeoutMs: 20_000 }));
    expect(e.message).toContain('printed more than');
  });
});

describe('FetchedSecret', () => {
  it('runs its helper once within cacheFor, again after, and shares one run between concurrent callers', async () => {
    let runs = 0;
    const secret = new FetchedSecret(async () => `v${++runs}`, 60_000);
    expect(secret.known).toBe(false);
    await Promise.all([secret.refresh(), secret.refresh()]);
    expect(secret.reveal()).toBe('v1');
    await secret.refresh();
    expect(runs).toBe(1);
    await secret.refresh(Date.now() + 61_000);
    expect(secret.reveal()).toBe('v2');
    expect(JSON.stringify({ secret })).toBe('{"secret":"[redacted]"}');
  });
});
