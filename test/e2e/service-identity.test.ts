import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientCredentialsLogin } from '../../src/auth/oidc.js';
import { loginAs, runCli, startStack, type Stack } from '../support/stack.js';

/**
 * Issue 10: a process that names a service identity in its environment runs as that identity or not at all.
 * The regression: on a laptop where a person had logged in, `HOOPCTL_CLIENT_ID=… HOOPCTL_CLIENT_SECRET=wrong`
 * ran as the person and exited 0.
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;

interface SessionJson {
  id: string;
  connection: string;
  identity: { subject: string; kind: string; clientId?: string };
}

beforeAll(async () => {
  stack = await startStack();
  alice = await loginAs(stack, 'alice');
}, 120_000);

afterAll(async () => {
  await stack?.stop();
});

async function sessions(): Promise<SessionJson[]> {
  const r = await runCli(['sessions', '-o', 'json', '-n', '200', '--connection', 'app-pg'], alice);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as SessionJson[];
}

describe('an identity named in the environment beats a stored human login', () => {
  it('a wrong client secret is "not authenticated" (exit 3) and never runs as the logged-in person', async () => {
    const before = await sessions();
    const wrong = { ...alice, HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'wrong' };
    const r = await runCli(['exec', 'app-pg', '-e', 'select current_user'], wrong);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toContain('ci-report');
    expect(r.stdout).toBe('');
    const who = await runCli(['whoami', '-o', 'json'], wrong);
    expect(who.code).toBe(3);
    expect(who.stdout).not.toContain('alice');
    // No session was opened for anybody: the broker never saw a token.
    expect((await sessions()).map((s) => s.id)).toEqual(before.map((s) => s.id));
  });

  it('the right client secret runs as the client, and the session records the client', async () => {
    const ci = { ...alice, HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'ci-report-secret' };
    const r = await runCli(['exec', 'app-pg', '-o', 'json', '-e', "select 'from ci' as who"], ci);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)[0].rows).toEqual([{ who: 'from ci' }]);
    const [newest] = await sessions();
    expect(newest!.identity).toMatchObject({ kind: 'service', clientId: 'ci-report' });
    expect(newest!.identity.subject).not.toBe('alice');

    const who = await runCli(['whoami', '-o', 'json'], ci);
    expect(who.code, who.stderr).toBe(0);
    expect(JSON.parse(who.stdout)).toMatchObject({
      kind: 'service',
      clientId: 'ci-report',
      source: { kind: 'client-credentials', clientId: 'ci-report', text: 'client credentials (HOOPCTL_CLIENT_ID=ci-report)' },
    });
    const text = await runCli(['whoami'], ci);
    expect(text.stdout).toMatch(/^source {3}client credentials \(HOOPCTL_CLIENT_ID=ci-report\)$/m);
    expect(text.stdout).not.toContain('ci-report-secret');
  });

  it('only half of the client pair is a usage error naming the missing variable', async () => {
    const noSecret = await runCli(['exec', 'app-pg', '-e', 'select 1'], { ...alice, HOOPCTL_CLIENT_ID: 'ci-report' });
    expect(noSecret.code).toBe(2);
    expect(noSecret.stderr).toContain('HOOPCTL_CLIENT_SECRET');
    const noId = await runCli(['exec', 'app-pg', '-e', 'select 1'], { ...alice, HOOPCTL_CLIENT_SECRET: 'ci-report-secret' });
    expect(noId.code).toBe(2);
    expect(noId.stderr).toContain('HOOPCTL_CLIENT_ID');
    expect(noId.stderr).not.toContain('ci-report-secret');
  });

  it('an empty HOOPCTL_TOKEN (a CI variable that did not resolve) is not authenticated, not the stored login', async () => {
    const r = await runCli(['whoami', '-o', 'json'], { ...alice, HOOPCTL_TOKEN: '' });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('HOOPCTL_TOKEN');
    expect(r.stdout).not.toContain('alice');
  });
});

describe('whoami says where the token came from', () => {
  it('names the stored login, HOOPCTL_TOKEN, or client credentials', async () => {
    const stored = await runCli(['whoami'], alice);
    expect(stored.code, stored.stderr).toBe(0);
    expect(stored.stdout).toMatch(/^source {3}stored login$/m);
    expect(JSON.parse((await runCli(['whoami', '-o', 'json'], alice)).stdout)).toMatchObject({ subject: 'alice', source: { kind: 'stored', text: 'stored login' } });

    const tokens = await clientCredentialsLogin({ issuer: stack.issuer.issuer, clientId: 'ci-other', clientSecret: 'ci-other-secret' });
    const fromEnv = await runCli(['whoami', '-o', 'json'], { ...alice, HOOPCTL_TOKEN: tokens.accessToken });
    expect(fromEnv.code, fromEnv.stderr).toBe(0);
    expect(JSON.parse(fromEnv.stdout)).toMatchObject({ clientId: 'ci-other', source: { kind: 'env', text: 'HOOPCTL_TOKEN' } });
    expect(fromEnv.stdout).not.toContain(tokens.accessToken);
  });
});
