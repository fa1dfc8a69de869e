import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT, importJWK } from 'jose';
import { AUDIENCE, loginAs, runCli, startStack, type Stack } from '../support/stack.js';

/**
 * "Which job ran which statement": a CI platform's job token (shaped like GitHub Actions', signed by an issuer the
 * broker trusts) opens a connection that admits by repository and branch, and the session records the run. A job
 * of another repository or branch is refused; a rule can treat jobs off the main branch differently.
 */
let stack: Stack;
let alice: NodeJS.ProcessEnv;

beforeAll(async () => {
  stack = await startStack({
    extraConnections: [
      {
        name: 'deploy-pg',
        access: { claims: { repository: 'acme/deploy', ref: ['refs/heads/main', 'refs/heads/release/*'] } },
        rules: [{ name: 'ddl-from-main-only', match: { statement: ['CreateStmt', 'DropStmt'], identity: { claims: { ref: 'refs/heads/release/*' } } }, action: 'deny' }],
      },
    ],
  });
  alice = await loginAs(stack, 'alice');
}, 120_000);

afterAll(async () => {
  await stack?.stop();
});

/** A job token as GitHub Actions issues one: the subject names repo and ref; run, workflow and actor ride along. */
async function jobToken(repository: string, ref: string, runId: number): Promise<string> {
  const key = await importJWK(stack.issuer.signingKey, 'RS256');
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ repository, ref, run_id: runId, workflow: 'nightly-migrate', actor: 'octocat', event_name: 'schedule' })
    .setProtectedHeader({ alg: 'RS256', kid: stack.issuer.kid, typ: 'at+jwt' })
    .setIssuer(stack.issuer.issuer)
    .setAudience(AUDIENCE)
    .setSubject(`repo:${repository}:ref:${ref}`)
    .setIssuedAt(now)
    .setExpirationTime(now + 600)
    .sign(key);
}

const asJob = async (repository: string, ref: string, runId: number) =>
  stack.cliEnv({ HOOPCTL_TOKEN: await jobToken(repository, ref, runId), XDG_CONFIG_HOME: `${stack.dir}/config-job-${runId}` });

describe('CI job identities', () => {
  it('admits the repository and branches the connection names, records the run, and refuses other jobs', async () => {
    const main = await runCli(['exec', 'deploy-pg', '-o', 'json', '-e', "select 'migrated' as step"], await asJob('acme/deploy', 'refs/heads/main', 4242));
    expect(main.code, main.stderr).toBe(0);
    expect(JSON.parse(main.stdout)[0].rows).toEqual([{ step: 'migrated' }]);

    const fork = await runCli(['exec', 'deploy-pg', '-e', 'select 1'], await asJob('mallory/deploy', 'refs/heads/main', 5));
    expect(fork.code).toBe(4);
    expect(fork.stderr).toContain('service account repo:mallory/deploy:ref:refs/heads/main (groups: none) may not open connection deploy-pg');
    const branch = await runCli(['exec', 'deploy-pg', '-e', 'select 1'], await asJob('acme/deploy', 'refs/heads/try-things', 6));
    expect(branch.code).toBe(4);

    const sessions = JSON.parse((await runCli(['sessions', '-o', 'json', '--connection', 'deploy-pg', '-n', '20'], alice)).stdout) as Array<{ id: string; status: string }>;
    const transcripts = (await Promise.all(sessions.map(async (x) => (await runCli(['replay', x.id], alice)).stdout))).join('\n');
    expect(transcripts).toMatch(/claims  repository=acme\/deploy {2}workflow=nightly-migrate {2}ref=refs\/heads\/main {2}run_id=4242 {2}actor=octocat {2}event_name=schedule/);
    expect(transcripts).toContain("select 'migrated' as step");
    expect(transcripts).toMatch(/refused\s+service account repo:mallory\/deploy/);

    // An auditor asks what one run did.
    const run = JSON.parse((await runCli(['sessions', '--claim', 'run_id=4242', '--claim', 'repository=acme/deploy', '-o', 'json'], alice)).stdout) as Array<{ identity: { claims: Record<string, string> }; statementCount: number }>;
    expect(run).toHaveLength(1);
    expect(run[0]).toMatchObject({ identity: { claims: { run_id: '4242', workflow: 'nightly-migrate' } }, statementCount: 1 });
    const bad = await runCli(['sessions', '--claim', 'run-id'], alice);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('claim filter must be NAME=VALUE');
  });

  it('lets a rule tell jobs apart by their claims: DDL from a release branch is denied, from main allowed', async () => {
    const release = await runCli(['exec', 'deploy-pg', '-e', 'create table t_release (id int)'], await asJob('acme/deploy', 'refs/heads/release/2.1', 7));
    expect(release.code).toBe(1);
    expect(release.stderr).toContain('denied by rule "ddl-from-main-only"');
    const main = await runCli(['exec', 'deploy-pg', '-e', 'create table t_main (id int)'], await asJob('acme/deploy', 'refs/heads/main', 8));
    expect(main.code, main.stderr).toBe(0);
  });
});
