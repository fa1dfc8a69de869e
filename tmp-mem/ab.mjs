// A/B of broker memory: each variant = a fresh broker (env, node args), the same load, RSS after each step.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tmpdir, loadavg } from 'node:os';
import { stringify } from 'yaml';
import pg from 'pg';
const D = '/work/wt/memory/dist';
const { startPgCluster } = await import(`${D}/src/dev/pg-cluster.js`);
const { startDevIssuer } = await import(`${D}/src/dev/oidc-issuer.js`);
const { clientCredentialsLogin } = await import(`${D}/src/auth/oidc.js`);
const { freePort } = await import(`${D}/src/lib/net.js`);
const { waitForLine, rssMb, cpuSeconds } = await import(`${D}/scripts/bench/processes.js`);
const { sessionRate, openIdleSessions } = await import(`${D}/scripts/bench/session-load.js`);
const BIN = resolve('/work/wt/memory/bin/hoopctl');
const T = Number(process.env.T ?? 8);
const variants = JSON.parse(process.env.VARIANTS ?? '[{"name":"base"}]');
const steps = (process.env.STEPS ?? 'pgbench,big,sessions,idle,quiet').split(',');
const rounds = Number(process.env.ROUNDS ?? 1);
const dir = mkdtempSync(join(tmpdir(), 'hoop-ab-'));
const cluster = await startPgCluster({ auth: 'scram-sha-256', settings: { shared_buffers: '256MB', max_connections: '600' } });
execFileSync('pgbench', ['-i', '-s', '10', '-q'], { env: { ...process.env, ...cluster.psqlEnv() }, stdio: 'ignore' });
const issuer = await startDevIssuer({ audience: 'urn:b', accessTokenTtlSeconds: 3600, serviceClients: [{ clientId: 'bench', clientSecret: 's', groups: ['bench'] }] });
const { accessToken } = await clientCredentialsLogin({ issuer: issuer.issuer, clientId: 'bench', clientSecret: 's' });
const BIG = "select g as id, 'customer' || g || '@example.com' as email, md5(g::text) as note from generate_series(1, 1000000) g";
const results = [];
try {
for (let r = 0; r < rounds; r++) for (const v of variants) {
  const port = await freePort(), fd = await freePort();
  const cfg = { server: { listen: `127.0.0.1:${port}` }, postgres: { listen: `127.0.0.1:${fd}` }, store: { path: join(dir, `b-${v.name}-${r}.db`) }, logging: { level: 'warn' },
    auth: { issuers: [{ issuer: issuer.issuer, audience: 'urn:b', maxTokenLifetime: '2h' }] },
    connections: [{ name: 'bench', type: 'postgres', target: { host: cluster.host, port: cluster.port, database: 'postgres', sslmode: 'disable' }, credentials: { user: cluster.superuser, password: { value: cluster.password } }, access: { clientIds: ['bench'] } }] };
  writeFileSync(join(dir, 'b.yaml'), stringify(cfg));
  const broker = spawn(process.execPath, [...(v.args ?? []), v.bin ?? BIN, 'broker', 'start', '--config', join(dir, 'b.yaml')], { env: { ...process.env, ...(v.env ?? {}) }, stdio: ['ignore', 'ignore', 'pipe'] });
  await waitForLine(broker, 'stderr', /broker listening on/);
  const row = { name: v.name, start: rssMb(broker.pid) };
  let setupPeak = 0; const sampler = setInterval(() => (setupPeak = Math.max(setupPeak, rssMb(broker.pid))), 10);
  const env = { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: join(dir, 'cfg'), HOOPCTL_TOKEN: accessToken, HOOPCTL_BROKER: `http://127.0.0.1:${port}` };
  const conn = spawn(process.execPath, [...JSON.parse(process.env.CONNECT_ARGS ?? '[]'), BIN, 'connect', 'bench', '-o', 'json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const ready = JSON.parse((await waitForLine(conn, 'stdout', /\{.*\}\n/))[0]);
  const tunnel = { host: '127.0.0.1', port: ready.port, user: 'bench', database: 'postgres', password: decodeURIComponent(new URL(ready.url).password) };
  const tenv = { PGHOST: '127.0.0.1', PGPORT: String(ready.port), PGUSER: 'bench', PGDATABASE: 'postgres', PGPASSWORD: tunnel.password, PGSSLMODE: 'disable' };
  const fenv = { PGHOST: '127.0.0.1', PGPORT: String(fd), PGUSER: 'bench', PGDATABASE: 'bench', PGPASSWORD: accessToken, PGSSLMODE: 'disable' };
  await new Promise((r) => setTimeout(r, 500)); clearInterval(sampler); row.setupPeak = Math.round(setupPeak); row.afterSetup = Math.round(rssMb(broker.pid));
  const cpu0 = cpuSeconds(broker.pid);
  const pgb = (e) => { const out = execFileSync('pgbench', ['-S', '-n', '-c', '8', '-j', '2', '-T', String(T)], { env: { ...process.env, ...e }, encoding: 'utf8' }); return Number(/tps = ([\d.]+)/.exec(out)[1]); };
  for (const [si, s0] of steps.entries()) { const s = s0; const key = steps.indexOf(s0) === si ? s0 : `${s0}${si}`;
    const t0 = Date.now(); const c0 = cpuSeconds(broker.pid);
    if (s === 'pgbench') { row.tpsTunnel = Math.round(pgb(tenv)); row.tpsFront = Math.round(pgb(fenv)); }
    if (s === 'big') { for (const e of [tenv, fenv]) execFileSync('psql', ['-X', '-w', '-q', '-At', '-c', BIG], { env: { ...process.env, ...e }, stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 30 }); }
    if (s === 'sessions') { row.sessPerS = Math.round((await sessionRate(tunnel, 8, T)).perSecond); }
    if (s === 'idle') { const before = rssMb(broker.pid); const idle = await openIdleSessions(tunnel, Number(process.env.IDLE ?? 1000)); row.idleHeld = rssMb(broker.pid); row.idleKb = Math.round((row.idleHeld - before) * 1024 / idle.opened); await idle.close(); await new Promise((r) => setTimeout(r, 1000)); }
    if (s === 'quiet') await new Promise((r) => setTimeout(r, 10000));
    row[`${key}Cpu`] = +(cpuSeconds(broker.pid) - c0).toFixed(2);
    row[key] = rssMb(broker.pid);
    if (process.env.WINCH) { broker.kill('SIGWINCH'); await new Promise((r) => setTimeout(r, 300)); }
  }
  row.hwm = rssMb(broker.pid, 'VmHWM');
  row.cpu = +(cpuSeconds(broker.pid) - cpu0).toFixed(1);
  row.connect = rssMb(conn.pid); row.connectHwm = rssMb(conn.pid, 'VmHWM');
  row.load = +loadavg()[0].toFixed(1);
  for (const k of Object.keys(row)) if (typeof row[k] === 'number' && !Number.isInteger(row[k]) && !k.endsWith('Cpu') && k !== 'cpu' && k !== 'load') row[k] = Math.round(row[k]);
  console.log(JSON.stringify(row)); results.push(row);
  conn.kill('SIGTERM'); broker.kill('SIGTERM');
  await new Promise((r) => broker.once('exit', r));
}
} finally { await issuer.stop(); await cluster.stop(); }
