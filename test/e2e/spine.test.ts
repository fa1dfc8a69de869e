import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as netConnect } from 'node:net';
import { once } from 'node:events';
import pg from 'pg';
import { SignJWT, importJWK } from 'jose';
import { freePort } from '../../src/lib/net.js';
import { interruptPsql, isQueryActive } from '../support/pg-activity.js';
import { APP_PASSWORD, AUDIENCE, CliProcess, loginAs as stackLoginAs, mapLimit, readText, runCli, runProcess, startStack, type Stack } from '../support/stack.js';

/**
 * The spine, end to end with real parts only: device-flow login against oidc-provider, `hoopctl connect`
 * as a process, real psql and pg through the tunnel, the broker as a process in front of a SCRAM-only
 * PostgreSQL, then `sessions` and `replay` reading back what was recorded.
 */
let stack: Stack;
let aliceEnv: NodeJS.ProcessEnv;
let tunnel: CliProcess;
let tunnelPort: number;
/** The tunnel's own password (clients present it on TCP) and its Unix socket (no password). */
let tunnelPassword: string;
let tunnelSocket: string;
const outputs: string[] = [];
let metricsPort: number;

function psqlEnv(port: number): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'whoever', PGDATABASE: 'app', PGCONNECT_TIMEOUT: '10', PGPASSWORD: tunnelPassword };
}

async function psql(args: string[], input?: string) {
  const r = await runProcess('psql', ['-X', '-w', '-v', 'ON_ERROR_STOP=1', ...args], psqlEnv(tunnelPort), input);
  outputs.push(r.stdout, r.stderr);
  return r;
}

async function cli(args: string[], env: NodeJS.ProcessEnv, input?: string) {
  const r = await runCli(args, env, input);
  outputs.push(r.stdout, r.stderr);
  return r;
}

/** The CLI's device login as `user` (its output joins what the password must never appear in). */
async function loginAs(user: string): Promise<NodeJS.ProcessEnv> {
  const seen: string[] = [];
  const env = await stackLoginAs(stack, user, seen);
  outputs.push(...seen);
  expect(seen[0]).toContain(`as ${user === 'alice' ? 'alice@example.com' : user}`);
  return env;
}

beforeAll(async () => {
  // Every event also goes to a JSON-lines file, as a SIEM would collect it (relative to the config's directory).
  metricsPort = await freePort();
  stack = await startStack({
    extraConfig: {
      metrics: { listen: `127.0.0.1:${metricsPort}` },
      export: [{ name: 'archive', type: 'file', path: 'siem/events.jsonl', batchSize: 200 }],
      audit: { groups: ['auditors'], checkpointSeconds: 1 },
    },
  });
  aliceEnv = await loginAs('alice');
  tunnel = new CliProcess(['connect', 'app-pg', '-o', 'json'], aliceEnv);
  const [line] = await tunnel.waitFor(/\{.*"port".*\}\n/);
  const ready = JSON.parse(line!) as { port: number; url: string; socketPath: string };
  tunnelPort = ready.port;
  tunnelPassword = decodeURIComponent(new URL(ready.url).password);
  tunnelSocket = ready.socketPath;
}, 120_000);

afterAll(async () => {
  await tunnel?.stop().catch(() => undefined);
  await stack?.stop();
});

describe('login', () => {
  it('stores the device-flow tokens in a 0600 file when no keychain is reachable, and whoami uses them', async () => {
    const dir = join(aliceEnv.XDG_CONFIG_HOME!, 'hoopctl');
    const files = readdirSync(dir).filter((f) => f.startsWith('credentials'));
    expect(files).toHaveLength(1);
    expect(statSync(join(dir, files[0]!)).mode & 0o777).toBe(0o600);
    const who = await cli(['whoami', '-o', 'json'], aliceEnv);
    expect(who.code).toBe(0);
    const identity = JSON.parse(who.stdout);
    expect(identity).toMatchObject({ subject: 'alice', kind: 'human', groups: ['dba', 'auditors'], broker: stack.brokerUrl });
  });

  it('logs a service account in with client credentials from the environment', async () => {
    const env = stack.cliEnv({ XDG_CONFIG_HOME: join(stack.dir, 'config-ci'), HOOPCTL_CLIENT_ID: 'ci-report', HOOPCTL_CLIENT_SECRET: 'ci-report-secret' });
    const r = await cli(['login', '--client-credentials'], env);
    expect(r.code, r.stderr).toBe(0);
    const who = JSON.parse((await cli(['whoami', '-o', 'json'], { ...env, HOOPCTL_CLIENT_SECRET: '' })).stdout);
    expect(who).toMatchObject({ kind: 'service', clientId: 'ci-report' });
  });
});

describe('hoopctl connect', () => {
  it('prints a ready-to-paste psql line and closes cleanly on Ctrl-C', async () => {
    const p = new CliProcess(['connect', 'app-pg'], aliceEnv);
    const [, line] = await p.waitFor(/^\s+psql "(postgresql:\/\/[^"]+)"$/m);
    const r = await runProcess('psql', ['-X', '-w', '-At', '-c', 'select 1', line!], { PATH: process.env.PATH });
    expect(r.stdout.trim()).toBe('1');
    expect(await p.stop()).toBe(0);
    expect(p.stdout).toContain('tunnel closed');
    // stderr is not a terminal here: the one thing connect waited for, as a plain line, and (the suite's other
    // tunnel to app-pg still holds the port this one had last) the note that it took another port; nothing else.
    expect(p.stderr).toMatch(new RegExp(`^asking the broker at ${stack.brokerUrl} about app-pg…\\n(port \\d+ \\(this connection's last\\) is taken now; listening on a free one instead\\n)?$`));
  });
});

describe('logout', () => {
  it('forgets the stored tokens; later commands say to log in again', async () => {
    const env = await loginAs('carol');
    expect((await cli(['whoami'], env)).code).toBe(0);
    const out = await cli(['logout'], env);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain(`Logged out of ${stack.brokerUrl}`);
    const after = await cli(['whoami'], env);
    expect(after.code).toBe(3);
    expect(after.stderr).toContain('hoopctl login');
  });
});

describe('psql through hoopctl connect', () => {
  it('runs queries as the injected backend role without asking the client for a password', async () => {
    const r = await psql(['-At', '-c', 'select current_user, 6 * 7']);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('app_rw|42');
  });

  it('carries COPY FROM STDIN and COPY TO STDOUT', async () => {
    await psql(['-c', 'create table items (id int primary key, label text)']);
    const rows = Array.from({ length: 500 }, (_, i) => `${i}\titem ${i}`).join('\n') + '\n';
    const copyIn = await psql(['-c', 'copy items from stdin'], rows);
    expect(copyIn.stdout.trim()).toBe('COPY 500');
    const copyOut = await psql(['-c', 'copy (select * from items order by id) to stdout']);
    expect(copyOut.stdout).toBe(rows);
  });

  it('cancels a running query on the backend when psql is interrupted: the cancel is part of that session, not one of its own', async () => {
    const sql = 'select pg_sleep(600) as interrupted_psql';
    const listed = async () => JSON.parse((await cli(['sessions', '-o', 'json', '-n', '1000'], aliceEnv)).stdout) as Array<{ id: string; status: string }>;
    const before = new Set((await listed()).map((s) => s.id));
    const { code, stderr } = await interruptPsql('psql', ['-X', '-w'], psqlEnv(tunnelPort), stack.cluster.url(), sql);
    // psql exits once the server gave the statement up; a lost cancel would leave it waiting out the 600 s sleep.
    expect(code).not.toBe(0);
    expect(stderr).toContain('canceling statement due to user request');
    expect(await isQueryActive(stack.cluster.url(), sql)).toBe(false);
    // One new session, psql's: its Ctrl-C (a CancelRequest on a connection of its own) opened none.
    const added = (await listed()).filter((s) => !before.has(s.id));
    expect(added).toHaveLength(1);
    const replay = await cli(['replay', added[0]!.id], aliceEnv);
    expect(replay.stdout).toMatch(/cancel +requested by alice from 127\.0\.0\.1:\d+: the server was asked to stop the running statement/);
    expect(replay.stdout).toMatch(/✗ cancelled .*57014/);
  });

  it('records a cancel whose key matches no session as an audit event, with no session', async () => {
    const listed = async () => JSON.parse((await cli(['sessions', '-o', 'json', '-n', '1000'], aliceEnv)).stdout) as Array<{ id: string }>;
    const before = (await listed()).length;
    // What psql sends on Ctrl-C, with a key the broker never handed out; the tunnel asks no password of a cancel.
    const cancel = Buffer.alloc(16);
    cancel.writeInt32BE(16, 0);
    cancel.writeInt32BE(80877102, 4);
    cancel.writeInt32BE(12345, 8);
    cancel.writeInt32BE(67890, 12);
    // As psql does: send, then wait for the other side to close (a cancel gets no answer).
    const sock = netConnect(tunnelPort, '127.0.0.1');
    sock.on('error', () => undefined);
    sock.write(cancel);
    await once(sock, 'close');
    const found = async () => {
      const out = await cli(['audit', 'events', '--type', 'cancel-request-unmatched', '-o', 'json'], aliceEnv);
      return (JSON.parse(out.stdout) as Array<{ data: Record<string, unknown> }>).find((e) => e.data.subject === 'alice');
    };
    let event = await found();
    for (let i = 0; !event && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 100));
      event = await found();
    }
    expect(event?.data).toMatchObject({ via: 'tunnel', connection: 'app-pg', subject: 'alice' });
    expect((await listed()).length).toBe(before);
  });

  it('serves the extended protocol with parameters, prepared statements and transactions to pg', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: tunnelPort, user: 'x', database: 'app', password: tunnelPassword });
    await client.connect();
    expect((await client.query('select $1::int + $2::int as sum', [20, 22])).rows).toEqual([{ sum: 42 }]);
    const named = { name: 'by-id', text: 'select label from items where id = $1', values: [7] };
    expect((await client.query(named)).rows).toEqual([{ label: 'item 7' }]);
    expect((await client.query({ ...named, values: [8] })).rows).toEqual([{ label: 'item 8' }]);
    await client.query('begin');
    await client.query('insert into items values ($1, $2)', [1000, 'in tx']);
    await client.query('rollback');
    expect((await client.query('select count(*)::int as n from items where id = 1000')).rows).toEqual([{ n: 0 }]);
    await expect(client.query('select * from no_such_table where id = $1', [1])).rejects.toThrow(/no_such_table/);
    expect((await client.query('select 1 as still_ok')).rows).toEqual([{ still_ok: 1 }]);
    await client.end();
  });

  it('ends only the session that sent a malformed frame, with a protocol error, and keeps serving others', async () => {
    const other = new pg.Client({ host: '127.0.0.1', port: tunnelPort, user: 'x', database: 'app', password: tunnelPassword });
    await other.connect();
    const reply = await new Promise<Buffer>((resolve, reject) => {
      // The Unix socket asks for no password: the raw bytes below are the whole conversation.
      const sock = netConnect(tunnelSocket);
      let handshake = Buffer.alloc(0);
      const chunks: Buffer[] = [];
      let sentBad = false;
      sock.on('data', (d) => {
        if (sentBad) return void chunks.push(d);
        handshake = Buffer.concat([handshake, d]);
        // After the handshake (ends with ReadyForQuery), send a Query whose length field is impossible.
        if (handshake.includes(Buffer.from([0x5a, 0, 0, 0, 5, 0x49]))) {
          sentBad = true;
          sock.write(Buffer.from([0x51, 0, 0, 0, 2]));
        }
      });
      sock.on('close', () => resolve(Buffer.concat(chunks)));
      sock.on('error', reject);
      const params = Buffer.from('user\0x\0database\0app\0\0');
      const startup = Buffer.alloc(8);
      startup.writeInt32BE(8 + params.length, 0);
      startup.writeInt32BE(196608, 4);
      sock.write(Buffer.concat([startup, params]));
    });
    expect(reply[0]).toBe(0x45); // 'E' ErrorResponse
    expect(reply.toString('latin1')).toContain('08P01');
    expect((await other.query('select 2 as alive')).rows).toEqual([{ alive: 2 }]);
    await other.end();
  });
});

describe('the tunnel', () => {
  it('answers a small query in one WebSocket message (a reply split into several frames stalled 40 ms per round trip)', async () => {
    const { WebSocket } = await import('ws');
    const token = await aliceToken();
    const ws = new WebSocket(`${stack.brokerUrl.replace('http', 'ws')}/api/v1/tunnel/app-pg`, { headers: { authorization: `Bearer ${token}` } });
    const messages: Buffer[] = [];
    let onMessage = () => undefined as void;
    ws.on('message', (d: Buffer) => {
      messages.push(d);
      onMessage();
    });
    await new Promise((r) => ws.once('open', r));
    const readyForQuery = () =>
      new Promise<void>((resolve) => {
        onMessage = () => Buffer.concat(messages).includes(Buffer.from([0x5a, 0, 0, 0, 5])) && resolve();
        onMessage();
      });
    const params = Buffer.from('user\0x\0database\0app\0\0');
    const startup = Buffer.alloc(8);
    startup.writeInt32BE(8 + params.length, 0);
    startup.writeInt32BE(196608, 4);
    ws.send(Buffer.concat([startup, params]));
    await readyForQuery();
    messages.length = 0;
    const sql = Buffer.from('select 1 as one\0');
    const query = Buffer.alloc(5);
    query.write('Q');
    query.writeInt32BE(4 + sql.length, 1);
    ws.send(Buffer.concat([query, sql]));
    await readyForQuery();
    expect(messages).toHaveLength(1);
    ws.close();
  });
});

describe('access and tokens', () => {
  it('refuses an identity outside the allowed groups at connect, with a clear message', async () => {
    const malloryEnv = await loginAs('mallory');
    const r = await cli(['connect', 'app-pg'], malloryEnv);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('mallory (groups: contractors) may not open connection app-pg');
    const viaExec = await cli(['exec', 'app-pg', '-e', 'select 1'], malloryEnv);
    expect(viaExec.code).toBe(4);
  });

  it('rejects forged and stale tokens with a clear reason and records each rejection', async () => {
    const key = await importJWK(stack.issuer.signingKey, 'RS256');
    const now = Math.floor(Date.now() / 1000);
    const sign = (claims: Record<string, unknown>, iss = stack.issuer.issuer, aud = AUDIENCE) =>
      new SignJWT({ groups: ['dba'], client_id: 'hoopctl-cli', ...claims })
        .setProtectedHeader({ alg: 'RS256', kid: stack.issuer.kid, typ: 'at+jwt' })
        .setIssuer(iss)
        .setAudience(aud)
        .setSubject('forger')
        .sign(key);
    const otherKey = (await import('jose')).generateKeyPair('RS256').then((k) => k.privateKey);
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const cases: Array<[string, string, RegExp]> = [
      ['expired', await sign({ iat: now - 3600, exp: now - 1800 }), /expired/i],
      ['wrong audience', await sign({ iat: now, exp: now + 300 }, stack.issuer.issuer, 'someone-else'), /audience/i],
      ['wrong issuer', await sign({ iat: now, exp: now + 300 }, 'https://evil.example.com'), /issuer/i],
      [
        'bad signature',
        await new SignJWT({ groups: ['dba'] }).setProtectedHeader({ alg: 'RS256', kid: stack.issuer.kid }).setIssuer(stack.issuer.issuer)
          .setAudience(AUDIENCE).setSubject('forger').setIssuedAt().setExpirationTime('5m').sign(await otherKey),
        /signature/i,
      ],
      ['alg none', `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: stack.issuer.issuer, aud: AUDIENCE, sub: 'forger', groups: ['dba'], iat: now, exp: now + 300 })}.`, /alg/i],
    ];
    for (const [, token, reason] of cases) {
      const r = await cli(['exec', 'app-pg', '-e', 'select 1'], stack.cliEnv({ HOOPCTL_TOKEN: token }));
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toMatch(reason);
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    }
    const audit = JSON.parse((await cli(['audit', 'events', '-o', 'json'], aliceEnv)).stdout) as Array<{ type: string; data: { code: string } }>;
    const codes = audit.filter((e) => e.type === 'token-rejected').map((e) => e.data.code);
    for (const code of ['TOKEN_EXPIRED', 'TOKEN_WRONG_AUDIENCE', 'TOKEN_UNKNOWN_ISSUER', 'TOKEN_BAD_SIGNATURE', 'TOKEN_ALG_NOT_ALLOWED']) {
      expect(codes).toContain(code);
    }
  });
});

describe('hoopctl exec', () => {
  it('runs SQL for a CI job holding only its platform token, with json output', async () => {
    const { clientCredentialsLogin } = await import('../../src/auth/oidc.js');
    const tokens = await clientCredentialsLogin({ issuer: stack.issuer.issuer, clientId: 'ci-report', clientSecret: 'ci-report-secret' });
    const env = stack.cliEnv({ XDG_CONFIG_HOME: join(stack.dir, 'config-empty'), HOOPCTL_TOKEN: tokens.accessToken });
    const r = await cli(['exec', 'app-pg', '-e', 'select id, label from items where id < 3 order by id', '-o', 'json'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([
      { command: 'SELECT', rowCount: 3, columns: ['id', 'label'], rows: [{ id: 0, label: 'item 0' }, { id: 1, label: 'item 1' }, { id: 2, label: 'item 2' }] },
    ]);
  });

  it('reads SQL from a file and from stdin, and prints csv', async () => {
    const file = join(stack.dir, 'q.sql');
    writeFileSync(file, "select 'a,b' as x, 2 as y");
    const fromFile = await cli(['exec', 'app-pg', '-f', file, '-o', 'csv'], aliceEnv);
    expect(fromFile.stdout).toBe('x,y\n"a,b",2\n');
    const fromStdin = await cli(['exec', 'app-pg'], aliceEnv, 'select 5 as five');
    expect(fromStdin.stdout).toContain('five');
    expect(fromStdin.stdout).toContain('(1 row)');
  });

  it('exits non-zero with the server message on an SQL error', async () => {
    const r = await cli(['exec', 'app-pg', '-e', 'select * from missing_table'], aliceEnv);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('relation "missing_table" does not exist');
  });
});

describe('sessions and replay', () => {
  it('lists the sessions with who, connection and outcome, refusals included', async () => {
    const r = await cli(['sessions', '-o', 'json', '-n', '200'], aliceEnv);
    const sessions = JSON.parse(r.stdout) as Array<{ id: string; status: string; identity: { subject: string }; connection: string }>;
    expect(sessions.some((s) => s.identity.subject === 'mallory' && s.status === 'refused')).toBe(true);
    expect(sessions.some((s) => s.identity.subject === 'alice' && s.status === 'closed')).toBe(true);
    const text = await cli(['sessions'], aliceEnv);
    expect(text.stdout).toMatch(/ID\s+STARTED\s+WHO\s+CONNECTION\s+STATUS/);
  });

  it('replays a session as a timed transcript with statements, parameters and outcomes', async () => {
    const sessions = JSON.parse((await cli(['sessions', '-o', 'json', '-n', '200'], aliceEnv)).stdout) as Array<{ id: string; statementCount: number }>;
    const transcripts = await mapLimit(sessions, 4, (s) => cli(['replay', s.id], aliceEnv));
    const all = transcripts.map((t) => t.stdout).join('\n');
    expect(all).toMatch(/\+\d+\.\d{3}s\s+query\s+select current_user, 6 \* 7/);
    expect(all).toMatch(/→ SELECT 1/);
    expect(all).toContain('params: ["20","22"]');
    expect(all).toMatch(/✗ 42P01 relation "missing_table" does not exist/);
    expect(all).toMatch(/copy items from stdin[\s\S]*→ COPY 500/);
    expect(all).toMatch(/refused\s+identity mallory/);
    expect(all).toContain('canceling statement due to user request');
    const verify = await cli(['audit', 'verify', sessions[0]!.id], aliceEnv);
    expect(verify.stdout).toMatch(/chain intact/);
  });

  it('exports every event to the SIEM file as JSON lines, with the session owner, each stream in order', async () => {
    const path = join(stack.dir, 'siem', 'events.jsonl');
    let events: Array<{ stream: string; seq: number; type: string; data: Record<string, unknown>; session?: { subject: string; connection: string } }> = [];
    for (let i = 0; i < 50; i++) {
      events = readText(path).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
      if (events.some((e) => e.type === 'statement' && /6 \* 7/.test(String(e.data.sql)))) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(events.find((e) => e.type === 'statement' && /6 \* 7/.test(String(e.data.sql)))?.session).toMatchObject({ subject: 'alice', connection: 'app-pg' });
    expect(events.some((e) => e.type === 'access-denied' && e.session?.subject === 'mallory')).toBe(true);
    const byStream = new Map<string, number[]>();
    for (const e of events) byStream.set(e.stream, [...(byStream.get(e.stream) ?? []), e.seq]);
    for (const seqs of byStream.values()) expect(seqs).toEqual(seqs.map((_, i) => i + 1));
  });

  it('serves Prometheus metrics without a token on their own loopback port: sessions by outcome, rejections, export lag', async () => {
    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    expect(res.headers.get('content-type')).toContain('text/plain; version=0.0.4');
    const text = await res.text();
    const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    expect(value(/^hoopctl_sessions_total\{connection="app-pg",type="postgres",outcome="closed"\} (\d+)$/m)).toBeGreaterThan(3);
    expect(value(/^hoopctl_sessions_total\{connection="app-pg",type="postgres",outcome="refused"\} (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^hoopctl_session_statements_total\{connection="app-pg",type="postgres"\} (\d+)$/m)).toBeGreaterThan(5);
    expect(value(/^hoopctl_token_rejections_total\{code="TOKEN_[A-Z_]+"\} (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^hoopctl_export_lag_events\{export="archive"\} (\d+)$/m)).toBeGreaterThanOrEqual(0);
    expect(value(/^hoopctl_process_resident_memory_bytes (\d+)$/m)).toBeGreaterThan(10_000_000);
    expect(text).toMatch(/^# TYPE hoopctl_reviews_pending gauge\nhoopctl_reviews_pending 0$/m);
    expect((await fetch(`http://127.0.0.1:${metricsPort}/api/v1/sessions`)).status).toBe(404);
  });

  it('seals each session with a signed checkpoint; a rewrite of the store that recomputes the chain is still caught', async () => {
    const sessions = JSON.parse((await cli(['sessions', '-o', 'json', '-n', '200'], aliceEnv)).stdout) as Array<{ id: string; status: string; statementCount: number }>;
    const target = sessions.find((x) => x.status === 'closed' && x.statementCount > 0)!;
    const keyFile = join(stack.dir, 'broker-audit.pub');
    const key = await cli(['audit', 'key'], aliceEnv);
    expect(key.stdout).toMatch(/^# ed25519 SHA256:\S+\n-----BEGIN PUBLIC KEY-----/);
    writeFileSync(keyFile, key.stdout.split('\n').slice(1).join('\n'));
    const ok = await cli(['audit', 'verify', target.id, '--public-key', keyFile], aliceEnv);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/chain intact[\s\S]*\nsigned through event \d+ by SHA256:/);

    // Someone with write access to broker.db edits a statement and recomputes every hash after it.
    const { default: Database } = await import('better-sqlite3');
    const { hashEvent } = await import('../../src/broker/recording/event-chain.js');
    const db = new Database(join(stack.dir, 'broker.db'));
    try {
      db.exec('DROP TRIGGER events_append_only_update');
      type Row = { stream: string; seq: number; at: number; type: string; data: string; prev_hash: string; hash: string };
      const rows = db.prepare('SELECT * FROM events WHERE stream = ? ORDER BY seq').all(target.id) as Row[];
      const victim = rows.find((r) => r.type === 'statement')!;
      let prev = '0'.repeat(64);
      const update = db.prepare('UPDATE events SET data = ?, prev_hash = ?, hash = ? WHERE stream = ? AND seq = ?');
      for (const r of rows) {
        const data = r.seq === victim.seq ? { ...JSON.parse(r.data), sql: 'select 1 -- nothing happened here' } : JSON.parse(r.data);
        const hash = hashEvent({ stream: r.stream, seq: r.seq, at: r.at, type: r.type, data, prevHash: prev });
        update.run(JSON.stringify(data), prev, hash, r.stream, r.seq);
        prev = hash;
      }
      db.exec("CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END");
    } finally {
      db.close();
    }
    const stream = await cli(['audit', 'verify', 'audit', '--public-key', keyFile], aliceEnv);
    expect(stream.code, stream.stderr).toBe(0);
    expect(stream.stdout).toMatch(/^audit stream: \d+ events, chain intact[\s\S]*\nsigned through event \d+ by SHA256:/);
    const caught = await cli(['audit', 'verify', target.id, '--public-key', keyFile], aliceEnv);
    expect(caught.code).not.toBe(0);
    expect(caught.stderr).toMatch(/checkpoint at event \d+ is not valid: the checkpoint does not sign the event before it/);
    expect(caught.stdout).not.toContain('chain intact');
  });

  it('never lets the backend password reach the client side, the API or the broker log', async () => {
    const api = await Promise.all(
      ['/api/v1/connections', '/api/v1/sessions?limit=500', '/api/v1/whoami', '/api/v1/audit'].map((p) =>
        cli(['sessions', '-o', 'json'], aliceEnv).then(() => fetchWithAlice(p)),
      ),
    );
    // Every file hoopctl keeps, the tunnel's own pgpass and service files (under pg/) included.
    const clientFiles = readdirSync(join(aliceEnv.XDG_CONFIG_HOME!, 'hoopctl'), { recursive: true, withFileTypes: true })
      .filter((f) => f.isFile())
      .map((f) => readFileSync(join(f.parentPath, f.name), 'utf8'));
    const exported = readText(join(stack.dir, 'siem', 'events.jsonl'));
    const haystack = [...outputs, ...api, ...clientFiles, exported, tunnel.stdout, tunnel.stderr].join('\n');
    expect(haystack.length).toBeGreaterThan(1000);
    expect(haystack).not.toContain(APP_PASSWORD);
    const log = readText(stack.brokerLogPath);
    expect(log).toContain('session opened');
    expect(log).not.toContain(APP_PASSWORD);
  });
});

async function aliceToken(): Promise<string> {
  const creds = readdirSync(join(aliceEnv.XDG_CONFIG_HOME!, 'hoopctl')).find((f) => f.startsWith('credentials'))!;
  const stored = JSON.parse(readFileSync(join(aliceEnv.XDG_CONFIG_HOME!, 'hoopctl', creds), 'utf8'));
  return JSON.stringify(stored).match(/"accessToken":"([^"]+)"/)![1]!;
}

async function fetchWithAlice(path: string): Promise<string> {
  const token = await aliceToken();
  const res = await fetch(new URL(path, stack.brokerUrl), { headers: { authorization: `Bearer ${token}` } });
  expect(res.status).toBe(200);
  return res.text();
}
