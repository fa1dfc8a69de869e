import { spawn, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync, chmodSync, existsSync, readdirSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../lib/net.js';
import { UserError } from '../lib/errors.js';

/**
 * A throwaway PostgreSQL cluster from the local server binaries: initdb into a temp dir, start on a free
 * loopback port with its socket under /tmp. Used by the demo, the tests and the benchmarks.
 * initdb refuses to run as root, so as root the cluster runs as the `postgres` user.
 */
export interface PgCluster {
  host: string;
  port: number;
  superuser: string;
  password: string;
  dataDir: string;
  socketDir: string;
  binDir: string;
  /** A libpq URL for the superuser to a database (direct, not through the broker). */
  url(database?: string): string;
  psqlEnv(): NodeJS.ProcessEnv;
  /** Stops the server (`pg_ctl stop -m fast`: clients are disconnected) and keeps its data, for `resume`. */
  pause(): Promise<void>;
  /** Starts a paused server again, on the same port with the same settings. */
  resume(): Promise<void>;
  stop(): Promise<void>;
}

export interface PgClusterOptions {
  auth?: 'scram-sha-256' | 'md5' | 'trust';
  superuser?: string;
  password?: string;
  port?: number;
  settings?: Record<string, string>;
}

export function findPgBinDir(): string {
  const chosen = process.env.PG_BIN_DIR;
  if (chosen) {
    // Named by the user: used, or said to be wrong, never quietly replaced by another version.
    if (existsSync(join(chosen, 'initdb'))) return chosen;
    throw new UserError(`PG_BIN_DIR=${chosen} holds no initdb`, { code: 'PREREQUISITE_MISSING', hint: 'point PG_BIN_DIR at the directory of initdb and pg_ctl (e.g. /usr/lib/postgresql/15/bin), or unset it' });
  }
  const candidates = ['/usr/lib/postgresql/17/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/15/bin'];
  if (existsSync('/usr/lib/postgresql')) {
    for (const v of readdirSync('/usr/lib/postgresql').sort().reverse()) candidates.push(`/usr/lib/postgresql/${v}/bin`);
  }
  for (const c of candidates) if (c && existsSync(join(c, 'initdb'))) return c;
  throw new UserError('PostgreSQL server binaries (initdb, pg_ctl) not found', {
    code: 'PREREQUISITE_MISSING',
    hint: 'install them (apt-get install -y postgresql) or set PG_BIN_DIR to the directory that holds initdb',
  });
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

function asPgUser(cmd: string, args: string[]): [string, string[]] {
  return isRoot() ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

export async function startPgCluster(options: PgClusterOptions = {}): Promise<PgCluster> {
  const binDir = findPgBinDir();
  const auth = options.auth ?? 'scram-sha-256';
  const superuser = options.superuser ?? 'postgres';
  const password = options.password ?? `pw-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  const base = mkdtempSync(join(tmpdir(), 'hoop-pg-'));
  const dataDir = join(base, 'data');
  const socketDir = base;
  if (isRoot()) {
    execFileSync('chown', ['-R', 'postgres:postgres', base]);
  }
  chmodSync(base, 0o755);
  const template = clusterTemplate(binDir, superuser, auth);
  execFileSync('cp', ['-a', template.dataDir, dataDir]);
  const port = options.port ?? (await freePort());
  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    port: String(port),
    unix_socket_directories: socketDir,
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    max_connections: '200',
    ...options.settings,
  };
  const postgresArgs = Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`]);
  const [pcmd, pargs] = asPgUser(join(binDir, 'pg_ctl'), [
    '-D', dataDir, '-l', join(base, 'server.log'), '-w', '-t', '30', '-o', postgresArgs.map(shellQuote).join(' '), 'start',
  ]);
  await run(pcmd, pargs);
  const host = '127.0.0.1';
  // The copy still has the template's password: this cluster gets its own before anyone else may connect with it.
  if (auth !== 'trust') await setPassword({ host, port, user: superuser, password: template.password, database: 'postgres' }, superuser, password);
  return {
    host, port, superuser, password, dataDir, socketDir, binDir,
    url: (database = 'postgres') =>
      `postgresql://${encodeURIComponent(superuser)}:${encodeURIComponent(password)}@${host}:${port}/${database}`,
    psqlEnv: () => ({ PGHOST: host, PGPORT: String(port), PGUSER: superuser, PGPASSWORD: password, PGDATABASE: 'postgres' }),
    async pause() {
      const [scmd, sargs] = asPgUser(join(binDir, 'pg_ctl'), ['-D', dataDir, '-m', 'fast', '-w', 'stop']);
      await run(scmd, sargs);
    },
    resume: () => run(pcmd, pargs),
    async stop() {
      const [scmd, sargs] = asPgUser(join(binDir, 'pg_ctl'), ['-D', dataDir, '-m', 'immediate', '-w', 'stop']);
      await run(scmd, sargs).catch(() => undefined);
      rmSync(base, { recursive: true, force: true });
    },
  };
}

/**
 * initdb takes seconds on a busy 2-core machine, and what it writes is the same for every cluster of one server
 * version, superuser and auth method: it runs once into a template under the temp directory, which each cluster
 * copies (`cp -a` keeps the postgres owner) and then gives its own superuser password. Built aside and renamed into
 * place, so processes starting clusters at once never see half a template.
 */
function clusterTemplate(binDir: string, superuser: string, auth: string): { dataDir: string; password: string } {
  const key = createHash('sha256').update(`${binDir}\0${superuser}\0${auth}`).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), `hoop-pg-template-${key}`);
  const ready = () => ({ dataDir: join(dir, 'data'), password: readFileSync(join(dir, 'password'), 'utf8').trim() });
  if (existsSync(join(dir, 'password'))) return ready();
  const building = mkdtempSync(`${dir}.building-`);
  try {
    const password = randomBytes(18).toString('base64url');
    const pwfile = join(building, 'pwfile');
    writeFileSync(pwfile, `${password}\n`);
    if (isRoot()) execFileSync('chown', ['-R', 'postgres:postgres', building]);
    chmodSync(building, 0o755);
    const [cmd, args] = asPgUser(join(binDir, 'initdb'), [
      '-D', join(building, 'data'), '-U', superuser, `--auth=${auth}`, `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C', '--no-sync',
    ]);
    execFileSync(cmd, args, { stdio: 'pipe' });
    rmSync(pwfile, { force: true });
    // Last, so a template with a password file is a whole one.
    writeFileSync(join(building, 'password'), `${password}\n`, { mode: 0o600 });
    try {
      renameSync(building, dir);
    } catch (e) {
      // Another process made it first: use theirs.
      if (!existsSync(join(dir, 'password'))) throw e;
      rmSync(building, { recursive: true, force: true });
    }
  } catch (e) {
    rmSync(building, { recursive: true, force: true });
    throw e;
  }
  return ready();
}

async function setPassword(config: pg.ClientConfig, role: string, password: string): Promise<void> {
  const c = new pg.Client(config);
  await c.connect();
  try {
    await c.query(`ALTER ROLE ${c.escapeIdentifier(role)} PASSWORD ${c.escapeLiteral(password)}`);
  } finally {
    await c.end();
  }
}

function shellQuote(s: string): string {
  return /^[\w.,:/=-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${out}`))));
  });
}
