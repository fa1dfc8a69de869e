import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import pg from 'pg';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { importJWK, SignJWT } from 'jose';
import { accessToken } from '../../src/commands/context.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { resolve } from 'node:path';
import { AUDIENCE, BIN, loginAs, runCli, startStack, type Stack } from '../support/stack.js';
import { startSshd, type TestSshd } from '../../src/dev/sshd.js';
import { startHttpBackend, type HttpBackend } from '../support/http-backend.js';
import type { Review } from '../../src/api/review.js';
import type { SessionRow } from '../../src/api/session.js';

/**
 * An AI agent through the gate (issue 16): the MCP SDK's own Client launches `hoopctl mcp` as an agent host does,
 * with the agent's client credentials and nothing else, against a real broker, PostgreSQL, sshd and HTTP backend.
 * Masking, a deny naming its rule, a DELETE held until a second identity approves it with `hoopctl approve`, caps,
 * bad input; every call a session `hoopctl sessions --via mcp` lists and `hoopctl audit verify` accepts.
 */
let stack: Stack;
let sshd: TestSshd;
let backend: HttpBackend;
let alice: NodeJS.ProcessEnv;
let bob: NodeJS.ProcessEnv;
let agentEnv: NodeJS.ProcessEnv;
let agent: Client;

const AGENT = { name: 'hoopctl-e2e-agent', version: '1.2.3' };

async function call(name: string, args: Record<string, unknown>, onprogress?: (p: { progress: number; message?: string }) => void): Promise<CallToolResult> {
  return (await agent.callTool({ name, arguments: args }, undefined, { timeout: 120_000, ...(onprogress ? { onprogress, resetTimeoutOnProgress: true } : {}) })) as CallToolResult;
}

const text = (r: CallToolResult) => r.content.map((c) => (c.type === 'text' ? c.text : '')).join('\n');

async function directCount(where: string): Promise<number> {
  const c = new pg.Client({ connectionString: stack.cluster.url('app') });
  await c.connect();
  const { rows } = await c.query(`select count(*)::int as n from customers where ${where}`);
  await c.end();
  return rows[0].n;
}

beforeAll(async () => {
  [sshd, backend] = await Promise.all([startSshd(), startHttpBackend()]);
  stack = await startStack({
    appPgPolicy: {
      rules: [
        { name: 'no-ddl', match: { effects: ['schema'] }, action: 'deny', message: 'schema changes go through migrations' },
        { name: 'held-deletes', match: { statement: ['DeleteStmt'] }, action: 'review' },
        { name: 'pii', mask: { columns: ['email', 'card'] } },
      ],
    },
    appPg: { reviews: { groups: ['leads'], timeout: '10m' }, mcp: { maxRows: 3, maxBytes: 65536 }, description: 'the application database' },
    extraConnections: [
      { name: 'secret-pg', access: { groups: ['dba'] } },
      {
        name: 'ssh-host', type: 'ssh', target: { host: sshd.host, port: sshd.port, user: sshd.user, hostKey: sshd.hostPublicKey },
        credentials: { privateKey: { file: sshd.clientKeyPath } }, access: { clientIds: ['ci-report'] },
        rules: [{ name: 'no-sudo', match: { command: 'sudo *' }, action: 'deny' }],
      },
      {
        name: 'api', type: 'http', target: { url: backend.url }, credentials: { bearer: { value: 'api-token' } }, access: { clientIds: ['ci-report'] },
        rules: [{ name: 'no-admin', match: { path: '/admin/**' }, action: 'deny' }], mask: { jsonPaths: ['$.users[*].email'] },
      },
    ],
  });
  [alice, bob] = await Promise.all([loginAs(stack, 'alice'), loginAs(stack, 'bob')]);
  const admin = new pg.Client({ connectionString: stack.cluster.url('app') });
  await admin.connect();
  await admin.query('set role app_rw');
  await admin.query('create table customers (id int primary key, name text, email text, card text)');
  await admin.query(`insert into customers select g, 'name ' || g, 'user' || g || '@example.com', '4111 1111 1111 111' || g from generate_series(1, 5) g`);
  await admin.end();
  // The agent holds its own client credentials and a broker URL: no database password anywhere.
  agentEnv = stack.cliEnv({ HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'ci-report-secret', XDG_CONFIG_HOME: `${stack.dir}/config-agent` });
  agent = new Client(AGENT);
  await agent.connect(new StdioClientTransport({ command: process.execPath, args: [BIN, 'mcp'], env: agentEnv as Record<string, string>, stderr: 'pipe' }));
}, 120_000);

afterAll(async () => {
  await agent?.close().catch(() => undefined);
  await stack?.stop();
  await sshd?.stop();
  await backend?.close();
});

describe('hoopctl mcp, driven by the MCP SDK client', () => {
  it('offers the tools of the connection types this identity may use, and only its connections', async () => {
    const { tools } = await agent.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(['http_request', 'list_connections', 'postgres_describe', 'postgres_query', 'ssh_command']);
    const list = await call('list_connections', {});
    expect(list.structuredContent).toEqual({
      connections: [
        { name: 'app-pg', type: 'postgres', description: 'the application database' },
        { name: 'ssh-host', type: 'ssh' },
        { name: 'api', type: 'http' },
      ],
    });
  });

  it('runs a query with bound parameters; email and card come back masked as psql would see them', async () => {
    const r = await call('postgres_query', { connection: 'app-pg', sql: 'select id, name, email, card from customers where id = $1', params: [2] });
    expect(r.isError).toBeFalsy();
    expect(r.structuredContent).toMatchObject({
      truncated: false,
      results: [{ command: 'SELECT', rowCount: 1, columns: ['id', 'name', 'email', 'card'], rows: [{ id: 2, name: 'name 2', email: '[REDACTED]', card: '[REDACTED]' }] }],
    });
    expect(text(r)).not.toContain('user2@example.com');
  });

  it('caps rows at the connection\'s mcp.maxRows and says the result was truncated', async () => {
    const r = await call('postgres_query', { connection: 'app-pg', sql: 'select id from customers order by id' });
    expect(r.structuredContent).toMatchObject({ truncated: true, results: [{ rowCount: 5, rows: [{ id: 1 }, { id: 2 }, { id: 3 }], truncated: true }] });
  });

  it('describes the schema through the gate', async () => {
    const r = await call('postgres_describe', { connection: 'app-pg', schema: 'public' });
    expect(r.structuredContent).toEqual({
      truncated: false,
      tables: [{ schema: 'public', name: 'customers', columns: [
        { name: 'id', type: 'integer', nullable: false }, { name: 'name', type: 'text', nullable: true },
        { name: 'email', type: 'text', nullable: true }, { name: 'card', type: 'text', nullable: true },
      ] }],
    });
  });

  it('answers a denied statement with a tool error naming the rule and its message', async () => {
    const r = await call('postgres_query', { connection: 'app-pg', sql: 'drop table customers' });
    expect(r.isError).toBe(true);
    expect(r.structuredContent).toMatchObject({ status: 'denied', rule: 'no-ddl' });
    expect(text(r)).toContain('statement denied by rule "no-ddl": schema changes go through migrations');
    expect(await directCount('true')).toBe(5);
  });

  it('holds a DELETE: the agent sees progress, a second identity approves with hoopctl approve, the result comes back', async () => {
    const progress: string[] = [];
    let heard!: () => void;
    const firstProgress = new Promise<void>((resolve) => (heard = resolve));
    const pending = call('postgres_query', { connection: 'app-pg', sql: 'delete from customers where id = 5', reason: 'remove the test customer' }, (p) => {
      progress.push(p.message ?? '');
      heard();
    });
    await firstProgress;
    const id = /held for review (rev_[0-9a-f]+)/.exec(progress[0]!)?.[1];
    expect(id, progress[0]).toBeDefined();
    expect(await directCount('id = 5')).toBe(1);
    // The approver sees that an agent asks: its identity, its MCP client and the reason it stated.
    const reviews = JSON.parse((await runCli(['reviews', '-o', 'json'], bob)).stdout) as Review[];
    expect(reviews.find((r) => r.id === id)).toMatchObject({
      rule: 'held-deletes', statement: 'delete from customers where id = 5', reason: 'remove the test customer',
      requester: { clientId: 'ci-report', kind: 'service', via: 'mcp', mcpClient: AGENT },
    });
    const listing = await runCli(['reviews'], bob);
    expect(listing.stdout).toContain('(hoopctl-e2e-agent 1.2.3 via mcp)');
    const approve = await runCli(['approve', id!, '--reason', 'ok for the test'], bob);
    expect(approve.code, approve.stderr).toBe(0);
    const r = await pending;
    expect(r.isError, text(r)).toBeFalsy();
    expect(r.structuredContent).toMatchObject({ results: [{ command: 'DELETE', rowCount: 1 }] });
    expect(progress.some((m) => m.includes(`review ${id} approved by bob`))).toBe(true);
    expect(await directCount('id = 5')).toBe(0);
  });

  it('runs an ssh command against sshd and an HTTP request against the backend, masked and judged the same way', async () => {
    const ssh = await call('ssh_command', { connection: 'ssh-host', command: 'echo hello; echo oops >&2; exit 3' });
    expect(ssh.structuredContent).toEqual({ exitStatus: 3, stdout: 'hello\n', stderr: 'oops\n', truncated: false });
    const sudo = await call('ssh_command', { connection: 'ssh-host', command: 'sudo id' });
    expect(sudo.isError).toBe(true);
    expect(sudo.structuredContent).toMatchObject({ status: 'denied', rule: 'no-sudo' });
    const http = await call('http_request', { connection: 'api', method: 'GET', path: '/users' });
    expect(http.structuredContent).toMatchObject({ status: 200, truncated: false, body: { total: 2 } });
    const users = (http.structuredContent as { body: { users: Array<{ email: string }> } }).body.users;
    expect(users.map((u) => u.email)).not.toContain('ada@example.com');
    const admin = await call('http_request', { connection: 'api', method: 'GET', path: '/admin/keys' });
    expect(admin.isError).toBe(true);
    expect(admin.structuredContent).toMatchObject({ status: 'denied', rule: 'no-admin' });
    expect(backend.seen.some((s) => s.url.startsWith('/admin'))).toBe(false);
  });

  it('gives bad input a clear tool error and keeps serving', async () => {
    const unknown = await call('postgres_query', { connection: 'nope', sql: 'select 1' });
    expect(unknown.isError).toBe(true);
    expect(unknown.structuredContent).toMatchObject({ status: 'refused', code: 'NOT_FOUND' });
    expect(text(unknown)).toMatch(/nope.*Connections you may use: app-pg, ssh-host, api$/);
    const forbidden = await call('postgres_query', { connection: 'secret-pg', sql: 'select 1' });
    expect(forbidden.isError).toBe(true);
    expect(forbidden.structuredContent).toMatchObject({ status: 'refused', code: 'ACCESS_DENIED' });
    expect(text(forbidden)).toMatch(/secret-pg.*Connections you may use: app-pg, ssh-host, api$/);
    const missing = await call('postgres_query', { connection: 'app-pg' });
    expect(missing.isError).toBe(true);
    expect(text(missing)).toMatch(/sql/);
    const long = await call('postgres_query', { connection: 'app-pg', sql: `select '${'x'.repeat(100_001)}'` });
    expect(long.isError).toBe(true);
    expect(text(long)).toContain('at most 100000 are taken');
    const wrongType = await call('ssh_command', { connection: 'app-pg', command: 'id' });
    expect(text(wrongType)).toBe('app-pg is a postgres connection, not ssh');
    expect((await call('list_connections', {})).isError).toBeFalsy();
  });

  it('records every call as a session via mcp with the MCP client, which sessions --via mcp lists and audit verify accepts', async () => {
    const r = await runCli(['sessions', '--via', 'mcp', '-n', '100', '-o', 'json'], alice);
    expect(r.code, r.stderr).toBe(0);
    const sessions = JSON.parse(r.stdout) as SessionRow[];
    // The refused calls are recorded too (the unknown name and the connection this identity may not use).
    expect(new Set(sessions.map((s) => s.connection))).toEqual(new Set(['app-pg', 'ssh-host', 'api', 'secret-pg', 'nope']));
    expect(sessions.filter((s) => s.connection === 'secret-pg' || s.connection === 'nope').map((s) => s.status)).toEqual(['refused', 'refused']);
    for (const s of sessions) expect(s.identity).toMatchObject({ clientId: 'ci-report', via: 'mcp', mcpClient: AGENT });
    const deleted = sessions.find((s) => s.connection === 'app-pg' && s.statementCount > 0 && s.status === 'closed')!;
    const verify = await runCli(['audit', 'verify', deleted.id], alice);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    const replay = await runCli(['replay', deleted.id], alice);
    expect(replay.stdout).toContain('agent   hoopctl-e2e-agent 1.2.3 via mcp');
    const bad = await runCli(['sessions', '--via', 'carrier-pigeon'], alice);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('via must be mcp');
  });
});

describe('hoopctl mcp, driven by the MCP Inspector\'s CLI mode (a client nobody here wrote)', () => {
  // @modelcontextprotocol/inspector itself needs Node 22; its CLI mode ships as @modelcontextprotocol/inspector-cli,
  // which runs on Node 20: `mcp-inspector-cli --cli <server command> --method …` is `npx @modelcontextprotocol/inspector --cli …`.
  const INSPECTOR_BUILD = resolve(import.meta.dirname, '../../node_modules/@modelcontextprotocol/inspector-cli/build');
  const inspector = (args: string[]) => {
    // The inspector starts the server with only the variables it is given (-e), as an agent host's config does.
    const env = ['HOOPCTL_BROKER', 'HOOPCTL_CLIENT_ID', 'HOOPCTL_CLIENT_SECRET', 'HOOPCTL_TOKEN_STORE', 'XDG_CONFIG_HOME', 'XDG_STATE_HOME']
      .flatMap((k) => ['-e', `${k}=${agentEnv[k]}`]);
    const child = spawn(process.execPath, ['cli.js', '--cli', ...env, process.execPath, BIN, 'mcp', ...args], {
      // inspector-cli 1.0.3 finds its own package.json relative to the working directory: run it from its build folder.
      cwd: INSPECTOR_BUILD, env: { PATH: process.env.PATH, HOME: stack.dir }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    return new Promise<{ code: number; stdout: string; stderr: string }>((done) => child.on('close', (code) => done({ code: code ?? -1, stdout, stderr })));
  };

  it('lists the tools and runs the query tool, masked', async () => {
    const list = await inspector(['--method', 'tools/list']);
    expect(list.code, list.stdout + list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as { tools: Array<{ name: string }> }).tools.map((t) => t.name)).toContain('postgres_query');
    const q = await inspector(['--method', 'tools/call', '--tool-name', 'postgres_query', '--tool-arg', 'connection=app-pg', 'sql=select id, email from customers where id = 1']);
    expect(q.code, q.stdout + q.stderr).toBe(0);
    const result = JSON.parse(q.stdout) as CallToolResult;
    expect(result.isError).toBeFalsy();
    expect(result.structuredContent).toMatchObject({ results: [{ rows: [{ id: 1, email: '[REDACTED]' }] }] });
  });
});

describe('hoopctl mcp without an identity', () => {
  it('prints one line on stderr and exits 3 before any MCP handshake', async () => {
    const child = spawn(process.execPath, [BIN, 'mcp'], { env: stack.cliEnv({ XDG_CONFIG_HOME: `${stack.dir}/config-nobody` }), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? -1)));
    expect(code).toBe(3);
    expect(stdout).toBe('');
    expect(stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(stderr).toMatch(/^error: hoopctl mcp: .*hoopctl login/);
  });
});

describe("the broker's /mcp (Streamable HTTP), driven by the MCP SDK client", () => {
  let remote: Client;
  let token: string;
  /** The bearer token each request carries: a test swaps it for an expired one mid-conversation. */
  let bearer: string;

  beforeAll(async () => {
    const saved = { ...process.env };
    Object.assign(process.env, agentEnv);
    try {
      token = await accessToken(stack.brokerUrl);
    } finally {
      process.env = saved;
    }
    bearer = token;
    remote = new Client({ name: 'remote-agent', version: '9.9' });
    await remote.connect(new StreamableHTTPClientTransport(new URL('/mcp', stack.brokerUrl), {
      fetch: (url, init) => fetch(url, { ...init, headers: { ...Object.fromEntries(new Headers(init?.headers).entries()), authorization: `Bearer ${bearer}` } }),
    }));
  });

  afterAll(async () => {
    await remote?.close().catch(() => undefined);
  });

  const remoteCall = async (name: string, args: Record<string, unknown>, onprogress?: (p: { progress: number; message?: string }) => void) =>
    (await remote.callTool({ name, arguments: args }, undefined, { timeout: 120_000, ...(onprogress ? { onprogress, resetTimeoutOnProgress: true } : {}) })) as CallToolResult;

  it('serves the same tools with the same outcomes: masked rows, a deny naming its rule', async () => {
    const { tools } = await remote.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(['http_request', 'list_connections', 'postgres_describe', 'postgres_query', 'ssh_command']);
    const rows = await remoteCall('postgres_query', { connection: 'app-pg', sql: 'select id, email, card from customers where id = $1', params: [1] });
    expect(rows.structuredContent).toMatchObject({ results: [{ rows: [{ id: 1, email: '[REDACTED]', card: '[REDACTED]' }] }], truncated: false });
    const denied = await remoteCall('postgres_query', { connection: 'app-pg', sql: 'alter table customers add column x int' });
    expect(denied.isError).toBe(true);
    expect(denied.structuredContent).toMatchObject({ status: 'denied', rule: 'no-ddl' });
    const ssh = await remoteCall('ssh_command', { connection: 'ssh-host', command: 'echo remote' });
    expect(ssh.structuredContent).toMatchObject({ exitStatus: 0, stdout: 'remote\n' });
    const http = await remoteCall('http_request', { connection: 'api', method: 'GET', path: '/users' });
    expect(http.structuredContent).toMatchObject({ status: 200, body: { total: 2 } });
    expect(JSON.stringify(http.structuredContent)).not.toContain('ada@example.com');
    const forbidden = await remoteCall('postgres_query', { connection: 'secret-pg', sql: 'select 1' });
    expect(forbidden.isError).toBe(true);
  });

  it('holds a DELETE with progress over the HTTP stream until bob approves it, then returns the result', async () => {
    let heard!: (m: string) => void;
    const first = new Promise<string>((resolve) => (heard = resolve));
    const pending = remoteCall('postgres_query', { connection: 'app-pg', sql: 'delete from customers where id = 4', reason: 'remote cleanup' }, (p) => heard(p.message ?? ''));
    const id = /held for review (rev_[0-9a-f]+)/.exec(await first)?.[1];
    expect(id).toBeDefined();
    const reviews = JSON.parse((await runCli(['reviews', '-o', 'json'], bob)).stdout) as Review[];
    expect(reviews.find((r) => r.id === id)).toMatchObject({ reason: 'remote cleanup', requester: { via: 'mcp', mcpClient: { name: 'remote-agent', version: '9.9' } } });
    expect((await runCli(['approve', id!, '--reason', 'fine'], bob)).code).toBe(0);
    expect((await pending).structuredContent).toMatchObject({ results: [{ command: 'DELETE', rowCount: 1 }] });
    expect(await directCount('id = 4')).toBe(0);
  });

  it('records the remote calls as sessions via mcp that verify', async () => {
    const sessions = JSON.parse((await runCli(['sessions', '--via', 'mcp', '-n', '200', '-o', 'json'], alice)).stdout) as SessionRow[];
    const remoteOnes = sessions.filter((s) => s.identity.mcpClient?.name === 'remote-agent');
    expect(remoteOnes.every((s) => s.identity.via === 'mcp' && s.identity.clientId === 'ci-report')).toBe(true);
    expect(new Set(remoteOnes.map((s) => s.connection))).toEqual(new Set(['app-pg', 'ssh-host', 'api', 'secret-pg']));
    expect(remoteOnes.filter((s) => s.connection === 'secret-pg').map((s) => s.status)).toEqual(['refused']);
    const closed = remoteOnes.find((s) => s.connection === 'app-pg' && s.status === 'closed')!;
    const verify = await runCli(['audit', 'verify', closed.id], alice);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
  });

  it('answers no token, and a token that expired mid-conversation, with 401 pointing at the protected resource metadata', async () => {
    const none = await fetch(new URL('/mcp', stack.brokerUrl), { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' });
    expect(none.status).toBe(401);
    const metadataUrl = `${stack.brokerUrl}/.well-known/oauth-protected-resource/mcp`;
    expect(none.headers.get('www-authenticate')).toBe(`Bearer resource_metadata="${metadataUrl}"`);
    const metadata = await (await fetch(metadataUrl)).json();
    expect(metadata).toMatchObject({ resource: `${stack.brokerUrl}/mcp`, authorization_servers: [stack.issuer.issuer], bearer_methods_supported: ['header'] });

    const key = await importJWK(stack.issuer.signingKey, 'RS256');
    const now = Math.floor(Date.now() / 1000);
    const sub = (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { sub: string }).sub;
    bearer = await new SignJWT({ iss: stack.issuer.issuer, aud: AUDIENCE, sub, client_id: 'ci-report', iat: now - 600, exp: now - 60 })
      .setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: stack.issuer.kid }).sign(key);
    try {
      await expect(remote.callTool({ name: 'list_connections', arguments: {} })).rejects.toThrow(/TOKEN_EXPIRED/);
    } finally {
      bearer = token;
    }
    // The conversation goes on with a valid token again: nothing crashed.
    expect((await remoteCall('list_connections', {})).isError).toBeFalsy();
  });
});
