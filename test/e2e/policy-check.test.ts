import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../support/stack.js';

let config: string;
const env = { PATH: process.env.PATH, HOME: tmpdir() };

beforeAll(() => {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-policy-'));
  config = join(dir, 'broker.yaml');
  // The backend password comes from an env var that is not set: an offline dry run must not need it.
  writeFileSync(config, `
auth: { issuers: [{ issuer: "https://login.example.com", audience: "urn:x" }] }
connections:
  - name: pg-prod
    type: postgres
    target: { host: db.internal, database: app }
    credentials: { user: app, password: { env: PG_PROD_PASSWORD_NOT_SET } }
    access: { groups: [dba, analysts], claims: { repository: acme/* } }
    reviews: { groups: [dba-leads] }
    defaultAction: deny
    rules:
      - { name: no-drop, match: { statement: [DropStmt, TruncateStmt] }, action: deny }
      - { name: migrations-from-main, match: { statement: [CreateStmt], identity: { claims: { ref: refs/heads/main } } }, action: allow }
      - { name: unbounded-delete, match: { statement: [DeleteStmt, UpdateStmt], where: absent }, action: review }
      - { name: analysts-read, match: { identity: { groups: [analysts] }, category: [read] }, action: allow }
      - { name: dba-all, match: { identity: { groups: [dba] } }, action: allow }
      - { name: pii, match: { identity: { groups: [analysts] } }, mask: { columns: [email], detectors: [credit_card] } }
  - name: pg-jit
    type: postgres
    target: { host: db.internal, database: app }
    credentials: { user: app }
    access: { groups: [dba], approval: { groups: [dba-leads] } }
    rules:
      - { name: no-drop, match: { statement: [DropStmt] }, action: deny }
  - name: web-1
    type: ssh
    target: { host: web-1.internal, user: deploy, hostKey: "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU" }
    credentials: { privateKey: { env: DEPLOY_KEY_NOT_SET } }
    access: { groups: [sre], clientIds: [deploy-bot] }
    rules:
      - { name: no-rm-rf, match: { command: ["rm -rf *"] }, action: deny }
      - { name: no-shells-for-bots, match: { shell: true, identity: { kind: service } }, action: deny }
  - name: billing
    type: http
    target: { url: "https://billing.internal" }
    credentials: { bearer: { env: BILLING_TOKEN_NOT_SET } }
    access: { groups: [finance] }
    rules:
      - { name: no-admin, match: { path: "/admin/**" }, action: deny }
  - name: k8s
    type: kubernetes
    target: { url: "https://kube.internal:6443" }
    credentials: { bearer: { env: KUBE_TOKEN_NOT_SET } }
    access: { groups: [sre] }
    defaultAction: deny
    rules:
      - { name: read-only, match: { verb: [get, list, watch] }, action: allow }
`);
});

const check = (as: string[], sql: string, extra: string[] = []) =>
  runCli(['policy', 'check', '-c', config, '--connection', 'pg-prod', ...as.flatMap((a) => ['--as', a]), '-e', sql, ...extra], env);

describe('hoopctl policy check', () => {
  it('names the rule that denies a statement hidden in a multi-statement text', async () => {
    const r = await check(['group=dba'], 'select 1; dRoP /* sneaky */ TABLE users');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^DENY by rule "no-drop"/);
    expect(r.stdout).toMatch(/allow\s+SelectStmt\s+select 1/);
  });

  it('shows review, allow and the default action per identity', async () => {
    expect((await check(['group=dba'], 'delete from orders')).stdout).toMatch(/^REVIEW by rule "unbounded-delete"/);
    expect((await check(['group=analysts'], 'select * from orders')).stdout).toMatch(/^ALLOW by rule "analysts-read"/);
    expect((await check(['group=analysts'], 'insert into orders values (1)')).stdout).toMatch(/^DENY \(default action\)/);
    expect((await check(['group=analysts'], 'select 1')).stdout).toContain('masking for this identity: redact; columns email; detectors credit_card');
  });

  it('judges a CI job by its token claims (claim.NAME=VALUE)', async () => {
    expect((await check(['kind=service', 'claim.repository=acme/deploy', 'claim.ref=refs/heads/main'], 'create table t (id int)')).stdout).toMatch(/^ALLOW by rule "migrations-from-main"/);
    expect((await check(['kind=service', 'claim.repository=acme/deploy', 'claim.ref=refs/heads/feature'], 'create table t (id int)')).stdout).toMatch(/^DENY \(default action\)/);
    const bad = await check(['claim.=x'], 'select 1');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('claim.NAME');
  });

  it('gives json and an exit status scripts can test with --expect', async () => {
    const r = await check(['group=analysts'], 'insert into orders values (1)', ['-o', 'json', '--expect', 'deny']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).verdict).toMatchObject({ action: 'deny', stage: 'rules' });
    expect((await check(['group=dba'], 'select 1', ['--expect', 'deny'])).code).toBe(1);
  });

  it('refuses, as the broker does, an identity the connection does not admit, whatever the rules say', async () => {
    // "select 1" is allowed to dba by rule dba-all; group=nobody never gets to the rules.
    const r = await check(['group=nobody'], 'select 1');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('DENY (access): identity policy-check (groups: nobody) may not open connection pg-prod (access.groups: dba, analysts; access.claims: repository=acme/*)\n');
    expect((await check(['group=nobody'], 'select 1', ['--expect', 'deny'])).code).toBe(0);
    expect((await check(['group=nobody'], 'select 1', ['--expect', 'allow'])).code).toBe(1);
    const json = JSON.parse((await check(['group=nobody'], 'select 1', ['-o', 'json'])).stdout);
    expect(json).toMatchObject({ verdict: { action: 'deny', stage: 'access' }, access: { admitted: false }, statements: [] });
    // A service account's client id, a human's never; a CI job by its claims.
    expect((await check(['clientId=nightly'], 'select 1')).stdout).toMatch(/^DENY \(access\): service account policy-check \(groups: none\) may not open connection pg-prod/);
    expect((await check(['kind=service', 'claim.repository=evil/deploy'], 'select 1')).stdout).toMatch(/^DENY \(access\)/);
    expect((await check(['kind=service', 'claim.repository=acme/deploy', 'claim.ref=refs/heads/main'], 'create table t (id int)')).stdout).toMatch(/^ALLOW by rule "migrations-from-main"/);
    const ssh = await runCli(['policy', 'check', '-c', config, '--connection', 'web-1', '--as', 'group=dba', '-e', 'uptime'], env);
    expect(ssh.stdout).toMatch(/^DENY \(access\): identity policy-check \(groups: dba\) may not open connection web-1 \(access.groups: sre; access.clientIds: deploy-bot\)/);
  });

  it('says a just-in-time connection needs an approved access request, and what the rules decide once granted', async () => {
    const jit = (as: string[], sql: string, extra: string[] = []) =>
      runCli(['policy', 'check', '-c', config, '--connection', 'pg-jit', ...as.flatMap((a) => ['--as', a]), '-e', sql, ...extra], env);
    const r = await jit(['group=dba'], 'select 1');
    expect(r.stdout).toMatch(/^REVIEW \(access\): connection pg-jit needs an approved access request \(approvers: dba-leads\)\nonce granted: ALLOW \(default action\)/);
    expect((await jit(['group=dba'], 'select 1', ['--expect', 'allow'])).code).toBe(1);
    expect((await jit(['group=dba'], 'drop table t')).stdout).toMatch(/^DENY by rule "no-drop"/);
    expect((await jit(['group=analysts'], 'select 1')).stdout).toMatch(/^DENY \(access\)/);
  });

  it('fails closed on SQL it cannot parse and explains bad identity flags', async () => {
    expect((await check(['group=dba'], 'selec from where')).stdout).toMatch(/^DENY by rule "unparseable"/);
    const bad = await check(['team=dba'], 'select 1');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--as: unknown attribute "team"');
  });

  it('judges ssh commands and shells, http requests and Kubernetes requests the way their proxies do', async () => {
    const run = (connection: string, as: string[], extra: string[]) =>
      runCli(['policy', 'check', '-c', config, '--connection', connection, ...as.flatMap((a) => ['--as', a]), ...extra], env);
    expect((await run('web-1', ['group=sre'], ['-e', 'echo hi && "rm" -fr /'])).stdout).toMatch(/^DENY by rule "no-rm-rf"/);
    expect((await run('web-1', ['group=sre'], ['-e', 'uptime'])).stdout).toMatch(/^ALLOW \(default action\)/);
    expect((await run('web-1', ['client=deploy-bot'], ['--shell'])).stdout).toMatch(/^DENY by rule "no-shells-for-bots"/);
    expect((await run('billing', ['group=finance'], ['-e', 'GET /admin/users'])).stdout).toMatch(/^DENY by rule "no-admin"/);
    expect((await run('k8s', ['group=sre'], ['-e', 'GET /api/v1/namespaces/default/pods'])).stdout).toMatch(/^ALLOW by rule "read-only"/);
    const del = await run('k8s', ['group=sre'], ['-e', 'DELETE /api/v1/namespaces/prod', '--expect', 'deny']);
    expect(del.code).toBe(0);
    expect(del.stdout).toMatch(/^DENY \(default action\)/);
  });
});
