import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import { accessToken, resolveBroker } from './context.js';
import { describeConnection } from './connections.js';
import { connectPgOverTunnel } from '../tunnel/pg-over-tunnel.js';
import { queryForExec, type ExecResult } from '../tunnel/pg-exec-query.js';
import { HoopError, UserError } from '../lib/errors.js';
import { execOverTunnel, remoteCommand } from '../tunnel/ssh-over-tunnel.js';
import { openTunnel } from '../tunnel/ws-transport.js';

type Format = 'table' | 'csv' | 'json';

/** SQLSTATE the broker uses for a statement held for review when the client asked not to wait. */
const HELD_FOR_REVIEW = 'RV001';
/** SQLSTATE query_canceled: the server's answer to a cancel (kept here: commands do not import the broker). */
const QUERY_CANCELED = '57014';
/** How long Ctrl-C waits for the server to confirm that it stopped the statement. */
const CANCEL_CONFIRM_MS = 5_000;
/** The shell's status for a process stopped by SIGINT (128 + 2), so scripts see an interrupt. */
const EXIT_INTERRUPTED = 130;

export function register(program: Command): void {
  program
    .command('exec <connection> [command...]')
    .description('Run SQL (postgres) or a command (ssh, after --) through the broker without a local listener (for CI and scripts)')
    .option('-e, --execute <sql>', 'SQL to run (several statements allowed)')
    .option('-f, --file <file>', 'read SQL from a file')
    .option('-o, --output <format>', 'table, csv or json', 'table')
    .option('--database <name>', 'postgres: the database to run in, where the connection serves several (target.databases); default: its default')
    .option('--broker <url>', 'broker URL')
    .option('-t, --tty', 'ssh: run the command in a terminal')
    .option('-d, --data <body>', 'http: request body (@FILE reads a file)')
    .option('-H, --header <header>', 'http: extra request header "Name: value"; repeatable', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--no-wait', 'when a statement or command is held for review, print the review id and exit 5 instead of waiting; run the same SQL or command again once approved')
    .addHelpText(
      'after',
      '\nSQL comes from -e, -f, or standard input.\nExamples:\n  hoopctl exec pg-prod -e "select count(*) from orders"\n  HOOPCTL_TOKEN=$CI_OIDC_TOKEN hoopctl exec pg-prod -f report.sql -o json\n  hoopctl exec web-1 -- uptime\n  hoopctl exec api -- GET /v1/orders?limit=5\n  hoopctl exec api -- POST /v1/orders -d @order.json -H "content-type: application/json"\n  hoopctl exec web-1 -- sh -c \'systemctl status nginx | head\'\n\nSSH commands: one word after -- is sent as written (it may hold a whole shell line); several are quoted word by word.\nStandard input is passed to the command unless it is a terminal. The exit status is the command\'s own.\nCtrl-C cancels the running statement on the server and waits up to 5 s for it to stop; Ctrl-C again quits at once.\n\nExit status: 0 ok, 1 SQL or other error (a rejected review too), 3 not authenticated, 4 access denied, 5 held for review (--no-wait), 130 interrupted.',
    )
    .action(async (name: string, command: string[], opts: CommandOptions) => {
      if (command.length > 0) return execCommand(name, command, opts);
      const format = opts.output as Format;
      if (!['table', 'csv', 'json'].includes(format)) throw new UserError(`unknown output format "${opts.output}" (use table, csv or json)`, { code: 'USAGE' });
      const sql = readSql(opts);
      const broker = resolveBroker(opts.broker);
      const token = await accessToken(broker);
      const connection = await describeConnection(broker, name, token);
      if (connection.type !== 'postgres') throw new UserError(`${name} is a ${connection.type} connection, not SQL`, { code: 'USAGE', hint: `pass the command after --: hoopctl exec ${name} -- uptime` });
      const tunnel = await connectPgOverTunnel(broker, name, token, { detachReviews: !opts.wait, ...(opts.database ? { database: opts.database } : {}) });
      const { client } = tunnel;
      client.on('error', () => undefined);
      client.on('notice', (n) => process.stderr.write(`${n.severity ?? 'NOTICE'}: ${n.message}\n`));
      const ctrlC = cancelOnCtrlC(tunnel.cancel);
      try {
        const outcome = await queryForExec(client, sql).then(
          (result) => ({ result }),
          (error: pg.DatabaseError) => ({ error }),
        );
        if (ctrlC.requested) {
          ctrlC.report('error' in outcome ? outcome.error : undefined);
          process.exitCode = EXIT_INTERRUPTED;
          return;
        }
        if ('error' in outcome) {
          const e = outcome.error;
          if (e.code === HELD_FOR_REVIEW) {
            const review = /review (rev_[0-9a-f]+)/.exec(e.message)?.[1];
            if (format === 'json') process.stdout.write(JSON.stringify({ status: 'held', review, message: e.message }) + '\n');
            throw new HoopError(e.message, { code: 'HELD_FOR_REVIEW' });
          }
          throw new HoopError(`${e.severity ?? 'ERROR'}: ${e.message}${e.code ? ` (SQLSTATE ${e.code})` : ''}`, { code: 'SQL_ERROR' });
        }
        process.stdout.write(render(outcome.result, format));
      } finally {
        ctrlC.stop();
        await client.end().catch(() => undefined);
      }
    });
}

/**
 * Ctrl-C while a statement runs: the first asks the server to cancel it and waits (briefly) for the answer, so the
 * user learns whether it stopped and the recording says cancelled; a second Ctrl-C or no answer in time exits at
 * once, saying the cancel was not confirmed. Outside a statement Ctrl-C keeps its usual meaning.
 */
function cancelOnCtrlC(cancel: () => Promise<void>) {
  let requested = false;
  let answered = false;
  let timer: NodeJS.Timeout | undefined;
  const giveUp = (why: string): void => {
    // The server answered first: a late failure of the cancel connection changes nothing.
    if (answered) return;
    process.stderr.write(`hoopctl: interrupted; the cancel was not confirmed (${why}); the statement may still be running on the server\n`);
    process.exit(EXIT_INTERRUPTED);
  };
  const onSigint = () => {
    if (requested) return giveUp('Ctrl-C again');
    requested = true;
    process.stderr.write('hoopctl: cancelling the statement (Ctrl-C again to quit without waiting)\n');
    timer = setTimeout(() => giveUp(`no answer from the server in ${CANCEL_CONFIRM_MS / 1000} s`), CANCEL_CONFIRM_MS);
    cancel().catch((e: Error) => giveUp(`the cancel request failed: ${e.message}`));
  };
  // While the statement runs, Ctrl-C is ours alone: the token store's file writer (conf → atomically → when-exit)
  // listens for SIGINT and raises it again on itself, which would read as a second Ctrl-C. Its hook comes back after.
  const others = process.rawListeners('SIGINT') as Array<(...args: unknown[]) => void>;
  process.removeAllListeners('SIGINT');
  process.on('SIGINT', onSigint);
  return {
    get requested() {
      return requested;
    },
    /** The statement ended after a cancel was asked for: `error` says how; none when it finished first. */
    report(error?: pg.DatabaseError): void {
      answered = true;
      clearTimeout(timer);
      // A statement held for review never reached the server: the cancel withdrew its review.
      if (error?.code === QUERY_CANCELED && /review \S+ withdrawn/.test(error.message)) process.stderr.write(`hoopctl: cancelled; ${/review \S+ withdrawn/.exec(error.message)![0]}, nothing ran\n`);
      else if (error?.code === QUERY_CANCELED) process.stderr.write('hoopctl: cancelled; the server stopped the statement\n');
      else if (error) process.stderr.write(`hoopctl: interrupted; the statement failed: ${error.message}${error.code ? ` (SQLSTATE ${error.code})` : ''}\n`);
      else process.stderr.write('hoopctl: interrupted; the statement had already finished on the server (its result is not shown)\n');
    },
    stop() {
      clearTimeout(timer);
      process.off('SIGINT', onSigint);
      for (const listener of others) process.on('SIGINT', listener);
    },
  };
}

interface CommandOptions {
  broker?: string;
  database?: string;
  tty?: boolean;
  execute?: string;
  file?: string;
  wait: boolean;
  output: string;
  data?: string;
  header: string[];
}

/** Words after `--`: a command for ssh connections, `METHOD /path` for http and kubernetes ones. */
async function execCommand(name: string, words: string[], opts: CommandOptions): Promise<void> {
  if (opts.execute !== undefined || opts.file !== undefined) throw new UserError('-e and -f are for SQL; pass a command after --', { code: 'USAGE' });
  const broker = resolveBroker(opts.broker);
  const token = await accessToken(broker);
  const connection = await describeConnection(broker, name, token);
  if (connection.type === 'http' || connection.type === 'kubernetes') return execHttp(broker, name, token, words, opts);
  return execSsh(broker, name, token, connection, words, opts);
}

/**
 * `hoopctl exec api -- GET /path`: one HTTP request over a tunnel. The body goes to stdout; a status outside
 * 2xx exits 1 with the status line on stderr (like `curl --fail-with-body`); `-o json` prints status, headers, body.
 */
async function execHttp(broker: string, name: string, token: string, words: string[], opts: CommandOptions): Promise<void> {
  const [method, path, ...rest] = words;
  if (!method || !path || rest.length > 0 || !/^[A-Za-z]+$/.test(method) || !path.startsWith('/')) {
    throw new UserError('expected METHOD /path after --', { code: 'USAGE', hint: `hoopctl exec ${name} -- GET /health` });
  }
  const headers: Record<string, string> = {};
  for (const h of opts.header) {
    const i = h.indexOf(':');
    if (i <= 0) throw new UserError(`header must be "Name: value", got "${h}"`, { code: 'USAGE' });
    headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
  }
  const body = opts.data === undefined ? undefined : opts.data.startsWith('@') ? readFileSync(opts.data.slice(1)) : Buffer.from(opts.data);
  const stream = (await openTunnel(broker, name, token, 'hoopctl-exec')) as import('node:stream').Duplex & Record<string, unknown>;
  // node:http treats the tunnel as its socket and calls a few socket methods on it.
  stream.setNoDelay = () => stream;
  stream.setKeepAlive = () => stream;
  stream.setTimeout = () => stream;
  stream.ref = () => stream;
  stream.unref = () => stream;
  const { request } = await import('node:http');
  const response = await new Promise<{ status: number; statusText: string; headers: Record<string, unknown>; body: Buffer }>((resolve, reject) => {
    const req = request(
      { method: method.toUpperCase(), path, host: 'hoopctl', headers: { ...headers, ...(body ? { 'content-length': String(body.length) } : {}) }, createConnection: () => stream as never },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', (e) => reject(new UserError(`request through the broker failed: ${e.message}`, { code: 'HTTP_ERROR' })));
    req.end(body);
  }).finally(() => stream.destroy());
  if (opts.output === 'json') {
    const text = response.body.toString('utf8');
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    process.stdout.write(JSON.stringify({ status: response.status, headers: response.headers, body: parsed }, null, 2) + '\n');
  } else process.stdout.write(response.body);
  if (response.status < 200 || response.status > 299) {
    throw new HoopError(`HTTP ${response.status} ${response.statusText}`, { code: 'HTTP_ERROR' });
  }
}

/** `hoopctl exec ssh-host -- command…`: runs it through the broker and exits with its status. */
async function execSsh(broker: string, name: string, token: string, connection: { type: string; hostKeyFingerprint?: string }, words: string[], opts: CommandOptions): Promise<void> {
  if (connection.type !== 'ssh') throw new UserError(`${name} is a ${connection.type} connection; commands after -- are for ssh connections`, { code: 'USAGE', hint: `hoopctl exec ${name} -e "SQL"` });
  let held: string | undefined;
  const status = await execOverTunnel({
    broker, connection: name, token, hostKeyFingerprint: connection.hostKeyFingerprint, command: remoteCommand(words),
    detachReviews: !opts.wait, onHeld: (id) => (held = id),
    stdin: process.stdin.isTTY ? null : process.stdin, stdout: process.stdout, stderr: process.stderr,
    ...(opts.tty ? { pty: { cols: process.stdout.columns ?? 80, rows: process.stdout.rows ?? 24, term: process.env.TERM ?? 'xterm' } } : {}),
  });
  // The command is over: stop reading our input so the process can exit.
  if (!process.stdin.isTTY) process.stdin.destroy();
  if (held && !opts.wait && status === 5) {
    if (opts.output === 'json') process.stdout.write(JSON.stringify({ status: 'held', review: held }) + '\n');
    throw new HoopError(`command held for review ${held}; run it again once approved`, { code: 'HELD_FOR_REVIEW' });
  }
  process.exitCode = status;
}

function readSql(opts: { execute?: string; file?: string }): string {
  if (opts.execute !== undefined && opts.file !== undefined) throw new UserError('use either -e or -f, not both', { code: 'USAGE' });
  if (opts.execute !== undefined) return opts.execute;
  if (opts.file !== undefined) {
    try {
      return readFileSync(opts.file, 'utf8');
    } catch (e) {
      throw new UserError(`cannot read ${opts.file}: ${(e as NodeJS.ErrnoException).code}`, { code: 'USAGE' });
    }
  }
  if (process.stdin.isTTY) throw noSqlGiven('');
  const sql = readFileSync(0, 'utf8');
  // An empty pipe (a heredoc that expanded to nothing, `< /dev/null`) is a mistake, not a statement to send.
  if (sql.trim() === '') throw noSqlGiven(' (standard input was empty)');
  return sql;
}

function noSqlGiven(detail: string): UserError {
  return new UserError(`no SQL given${detail}`, { code: 'USAGE', hint: 'pass -e "SQL", -f FILE, or pipe SQL on standard input' });
}

function cellText(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (v instanceof Date) return v.toISOString();
  if (Buffer.isBuffer(v)) return `\\x${v.toString('hex')}`;
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function render(results: ExecResult[], format: Format): string {
  if (format === 'json') {
    const out = results.map((r) => ({
      command: r.command,
      rowCount: r.rowCount,
      columns: r.fields.map((f) => f.name),
      rows: r.rows.map((row) => Object.fromEntries(r.fields.map((f, i) => [f.name, row[i] ?? null]))),
      ...(r.copyOut !== undefined ? { copy: r.copyOut } : {}),
    }));
    return JSON.stringify(out, null, 2) + "\n";
  }
  const parts: string[] = [];
  for (const r of results) {
    // COPY … TO STDOUT data is already text or CSV, in the format the statement asked for: printed as it came.
    if (r.copyOut !== undefined) parts.push(r.copyOut + (format === 'table' ? `${r.command} ${r.rowCount ?? 0}\n` : ''));
    if (r.fields.length === 0) {
      if (r.copyOut !== undefined) continue;
      if (format === 'table') parts.push(`${r.command}${r.rowCount !== null ? ` ${r.rowCount}` : ''}\n`);
      continue;
    }
    const header = r.fields.map((f) => f.name);
    const rows = r.rows.map((row) => row.map(cellText));
    if (format === 'csv') {
      parts.push([header, ...rows].map((cells) => cells.map(csvCell).join(',')).join('\n') + '\n');
    } else {
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
      const line = (cells: string[]) => ' ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ');
      parts.push(
        [line(header), '-' + widths.map((w) => '-'.repeat(w)).join('-+-') + '-', ...rows.map(line), `(${r.rows.length} row${r.rows.length === 1 ? '' : 's'})`]
          .map((l) => l.trimEnd())
          .join('\n') + '\n',
      );
    }
  }
  return parts.join('\n');
}

function csvCell(v: string): string {
  return /[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}
