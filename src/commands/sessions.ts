import type { Command } from 'commander';
import { accessToken, brokerClient, brokerGet, brokerPost, parseOutput, resolveBroker } from './context.js';
import { serverSentEvents } from './review-stream.js';
import { formatDuration, formatTime, printJson, renderTable } from './render.js';
import type { SessionRow, StoredEvent } from '../api/session.js';
import { verifyChain } from '../broker/recording/event-chain.js';
import { CHECKPOINT_EVENT, verifyCheckpoints } from '../broker/recording/checkpoints.js';
import { AUDIT_STREAM } from '../api/session.js';
import { UserError } from '../lib/errors.js';
import { describeAgent } from '../api/agent-headers.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { castOutput, castsFromEvents, playCast, toAsciicast, type Cast } from './replay-player.js';

export function register(program: Command): void {
  const sessionsCommand = program
    .command('sessions')
    .description('List recorded sessions (yours, or everyone\'s for members of the audit groups)')
    .option('--connection <name>', 'only this connection')
    .option('--subject <sub>', 'only this identity (auditors)')
    .option('--status <status>', 'only open (running), closed, refused or failed sessions')
    .option('--via <door>', 'only sessions that came through this front door: mcp (AI agents\' tool calls)')
    .option('--claim <name=value>', 'only sessions whose token carried this claim (a CI run: run_id=4242); repeatable', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--grep <text>', 'only sessions whose recording contains this text (a statement, command, request; any case)')
    .option('--verdict <action>', 'only sessions with a statement, command or request judged allow, review or deny')
    .option('--client <application>', 'only sessions from this client application (psql, pg_dump, an application_name)')
    .option('-n, --limit <n>', 'how many, newest first (searched among these)', '50')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExamples:\n  hoopctl sessions --connection pg-prod -o json\n  hoopctl sessions --status open   # what is running now (then: sessions watch / sessions end)\n  hoopctl sessions --grep customers --verdict deny --client psql')
    .action(async (opts: { connection?: string; subject?: string; status?: string; via?: string; claim: string[]; grep?: string; verdict?: string; client?: string; limit: string; output: string; broker?: string }) => {
      const format = parseOutput(opts.output);
      if (opts.verdict !== undefined && !['allow', 'review', 'deny'].includes(opts.verdict)) {
        throw new UserError(`unknown verdict "${opts.verdict}" (use allow, review or deny)`, { code: 'USAGE' });
      }
      const broker = resolveBroker(opts.broker);
      const q = new URLSearchParams({ limit: opts.limit });
      if (opts.connection) q.set('connection', opts.connection);
      if (opts.subject) q.set('subject', opts.subject);
      if (opts.status) q.set('status', opts.status);
      if (opts.via) q.set('via', opts.via);
      for (const c of opts.claim) q.append('claim', c);
      const { sessions: listed } = await brokerGet<{ sessions: SessionRow[] }>(broker, `/api/v1/sessions?${q}`);
      const searching = opts.grep !== undefined || opts.verdict !== undefined || opts.client !== undefined;
      // The recordings are read only when they are needed: to search them, or to name each session's client.
      const details = searching || format === 'text' ? await sessionClients(broker, listed) : undefined;
      const sessions = searching ? listed.filter((s) => details!.get(s.id)!.matches(opts)) : listed;
      if (format === 'json') return printJson(sessions);
      if (sessions.length === 0) return void process.stdout.write(searching ? 'no sessions match\n' : 'no sessions\n');
      process.stdout.write(
        renderTable(
          ['ID', 'STARTED', 'WHO', 'CONNECTION', 'STATUS', 'STATEMENTS', 'ERRORS', 'DURATION', 'CLIENT'],
          sessions.map((s) => [
            s.id, formatTime(s.startedAt), whoWithAgent(s.identity), s.connection, s.status, String(s.statementCount), String(s.errorCount),
            s.endedAt ? formatDuration(s.endedAt - s.startedAt) : 'running', details!.get(s.id)!.client,
          ]),
        ),
      );
    });

  program
    .command('replay <session>')
    .description('Print a session as a timed transcript: who, when, what, outcome; play its recorded terminals')
    .option('-o, --output <format>', 'text or json (the raw events)', 'text')
    .option('--format <format>', 'asciicast: write the terminal recording as an asciicast v2 file (asciinema plays it)')
    .option('--out <file>', 'with --format asciicast: write to this file instead of standard output')
    .option('--channel <n>', 'which terminal of the session (default: the first)')
    .option('--speed <n>', 'playback speed', '1')
    .option('--skip-idle [seconds]', 'shorten pauses longer than this (default 1 s)')
    .option('--broker <url>', 'broker URL')
    .addHelpText(
      'after',
      '\nTerminals (SSH shells and PTY commands) play with their original timing when standard output is a terminal:\n' +
        '  space pause · ←/→ seek 5 s · +/- speed · q quit\n' +
        'Otherwise their output is printed at once after the transcript.\n\nExamples:\n  hoopctl replay ses_mabc123\n  hoopctl replay ses_mabc123 --speed 2 --skip-idle\n  hoopctl replay ses_mabc123 --format asciicast --out session.cast && asciinema play session.cast',
    )
    .action(async (id: string, opts: { output: string; broker?: string; format?: string; out?: string; channel?: string; speed: string; skipIdle?: string | boolean }) => {
      const format = parseOutput(opts.output);
      const speed = Number(opts.speed);
      if (!(speed > 0)) throw new UserError(`invalid --speed ${opts.speed}`, { code: 'USAGE' });
      const maxIdle = opts.skipIdle === undefined ? undefined : opts.skipIdle === true ? 1 : Number(opts.skipIdle);
      if (maxIdle !== undefined && !(maxIdle >= 0)) throw new UserError(`invalid --skip-idle ${String(opts.skipIdle)}`, { code: 'USAGE' });
      if (opts.format !== undefined && opts.format !== 'asciicast') throw new UserError(`unknown --format ${opts.format} (use asciicast)`, { code: 'USAGE' });
      const data = await brokerGet<{ session: SessionRow; events: StoredEvent[] }>(resolveBroker(opts.broker), `/api/v1/sessions/${encodeURIComponent(id)}`);
      const casts = castsFromEvents(data.events, `${data.session.identity.name} on ${data.session.connection}`);
      const chosen = opts.channel === undefined ? casts[0] : casts.find((c) => String(c.channel) === opts.channel);
      if (opts.format === 'asciicast') {
        if (!chosen) throw new UserError(`session ${id} has no recorded terminal${opts.channel ? ` on channel ${opts.channel}` : ''}`, { code: 'NO_TERMINAL', hint: casts.length ? `channels: ${casts.map((c) => c.channel).join(', ')}` : undefined });
        const cast: Cast = maxIdle === undefined ? chosen.cast : { ...chosen.cast, header: { ...chosen.cast.header, idle_time_limit: maxIdle } as Cast['header'] };
        if (opts.out) writeFileSync(opts.out, toAsciicast(cast));
        else process.stdout.write(toAsciicast(cast));
        return;
      }
      if (format === 'json') return printJson(data);
      process.stdout.write(renderTranscript(data.session, data.events));
      if (casts.length === 0) return;
      if (!process.stdout.isTTY) {
        for (const c of chosen ? [chosen] : casts) process.stdout.write(`\n--- terminal, channel ${c.channel} ---\n${castOutput(c.cast)}\n--- end of terminal ---\n`);
        return;
      }
      await playInTerminal(chosen!.cast, { speed, maxIdle });
    });

  sessionsCommand
    .command('end <session>')
    .description('End a live session now; its client is told why (admin groups)')
    .requiredOption('--reason <text>', 'why (shown to the client and recorded)')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExample:\n  hoopctl sessions end ses_… --reason "runaway query on pg-prod"')
    .action(async (id: string, opts: { reason: string; broker?: string }) => {
      await brokerPost(resolveBroker(opts.broker), `/api/v1/sessions/${encodeURIComponent(id)}/end`, { reason: opts.reason });
      process.stdout.write(`session ${id} ended\n`);
    });

  sessionsCommand
    .command('watch <session>')
    .description('Follow a session as it happens: statements and verdicts, results, requests, terminal output (auditors, or your own)')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExample:\n  hoopctl sessions watch ses_…   # Ctrl-C stops watching; the session goes on')
    .action(async (id: string, opts: { broker?: string }) => {
      const broker = resolveBroker(opts.broker);
      const { session, events } = await brokerGet<{ session: SessionRow; events: StoredEvent[] }>(broker, `/api/v1/sessions/${encodeURIComponent(id)}`);
      process.stdout.write(renderTranscript(session, events));
      if (session.status !== 'open') return;
      process.stdout.write(`--- live: ${session.identity.name} on ${session.connection} ---\n`);
      const live = await brokerClient(broker).stream(`/api/v1/sessions/${encodeURIComponent(id)}/stream?after=${events.at(-1)?.seq ?? 0}`);
      const t0 = events[0]?.at ?? session.startedAt;
      for await (const { event, data } of serverSentEvents(live)) {
        if (event === 'end') {
          process.stdout.write(`--- session ${(JSON.parse(data) as { status: string }).status} ---\n`);
          return;
        }
        if (event !== 'event') continue;
        const e = JSON.parse(data) as StoredEvent;
        // Terminal output is shown as the terminal showed it; everything else as transcript lines.
        if (e.type === 'cast') {
          const out = ((e.data.events ?? []) as Array<[number, string, string]>).filter(([, k]) => k === 'o').map(([, , d]) => d).join('');
          if (out) process.stdout.write(out);
        } else for (const line of eventLines(session, e, t0)) process.stdout.write(`${line}\n`);
      }
    });

  const audit = program.command('audit').description('Audit trail: broker-wide events and integrity checks');
  audit
    .command('events')
    .description('List broker-wide audit events such as rejected tokens and credential rotations (audit groups only)')
    .option('--type <type>', 'only events of this type, over the whole stream (e.g. credential.rotated)')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExample:\n  hoopctl audit events --type credential.rotated   # when was each credential last rotated')
    .action(async (opts: { output: string; broker?: string; type?: string }) => {
      const format = parseOutput(opts.output);
      const broker = resolveBroker(opts.broker);
      const events = opts.type
        ? (await allAuditEvents(broker)).filter((e) => e.type === opts.type)
        : (await brokerGet<{ events: StoredEvent[] }>(broker, '/api/v1/audit')).events;
      if (format === 'json') return printJson(events);
      process.stdout.write(renderTable(['SEQ', 'AT', 'TYPE', 'DETAIL'], events.map((e) => [String(e.seq), formatTime(e.at), e.type, detail(e)])));
    });
  audit
    .command('key')
    .description('Print the broker\'s checkpoint-signing public key (pin it: audit verify --public-key)')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--broker <url>', 'broker URL')
    .action(async (opts: { output: string; broker?: string }) => {
      const key = await brokerGet<{ algorithm: string; keyId: string; publicKey: string }>(resolveBroker(opts.broker), '/api/v1/audit/key');
      if (parseOutput(opts.output) === 'json') return printJson(key);
      process.stdout.write(`# ${key.algorithm} ${key.keyId}\n${key.publicKey}`);
    });
  audit
    .command('verify <session>')
    .description('Check a session\'s hash chain and signed checkpoints (or the broker-wide stream: `audit`): proves no event was changed, reordered or dropped')
    .option('--public-key <file>', 'the broker\'s public key (PEM) to check signatures against; default: the key the broker advertises')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExamples:\n  hoopctl audit key > broker-audit.pub   # once, kept apart from the broker\n  hoopctl audit verify ses_… --public-key broker-audit.pub\n  hoopctl audit verify audit --public-key broker-audit.pub   # the broker-wide stream (audit groups)\n')
    .action(async (id: string, opts: { publicKey?: string; broker?: string }) => {
      const broker = resolveBroker(opts.broker);
      const { events, status } = id === AUDIT_STREAM ? { events: await allAuditEvents(broker), status: 'open' } : await sessionEvents(broker, id);
      const what = id === AUDIT_STREAM ? 'audit stream' : `session ${id}`;
      const check = verifyChain(events);
      if (!check.ok) throw new UserError(`${what}: chain broken at event ${check.brokenAt}: ${check.reason}`, { code: 'CHAIN_BROKEN' });
      const pinned = opts.publicKey !== undefined;
      const publicKey = pinned ? readPublicKeyFile(opts.publicKey!) : (await brokerGet<{ publicKey: string }>(broker, '/api/v1/audit/key')).publicKey;
      const signed = verifyCheckpoints(events, publicKey);
      if (!signed.ok) throw new UserError(`${what}: checkpoint at event ${signed.brokenAt} is not valid: ${signed.reason}`, { code: 'CHECKPOINT_INVALID' });
      const ended = status !== 'open';
      if (ended && signed.unsignedTail > 0 && status !== 'failed') {
        throw new UserError(`${what}: it ended, but its last ${signed.unsignedTail} event(s) are not covered by a signed checkpoint`, {
          code: 'CHECKPOINT_MISSING',
          hint: 'a broker seals every stream it closes; events after the seal were added by something else',
        });
      }
      const last = events.at(-1);
      const lines = [
        `${what}: ${events.length} events, chain intact${last ? ` (head ${last.hash.slice(0, 16)}…)` : ''}`,
        signed.checkpoints > 0
          ? `signed through event ${signed.signedThrough} by ${signed.keyIds.join(', ')}${pinned ? '' : ' (the key the broker advertises: pin it with --public-key)'}`
          : 'no signed checkpoint yet',
        ...(signed.unsignedTail > 0 ? [`${signed.unsignedTail} event(s) after the last checkpoint${ended ? ' (the broker stopped before sealing the session)' : ' (the stream is still growing)'}`] : []),
      ];
      process.stdout.write(lines.join('\n') + '\n');
    });
}

async function sessionEvents(broker: string, id: string): Promise<{ events: StoredEvent[]; status: string }> {
  const data = await brokerGet<{ session: SessionRow; events: StoredEvent[] }>(broker, `/api/v1/sessions/${encodeURIComponent(id)}`);
  return { events: data.events, status: data.session.status };
}

/** The whole audit stream, page by page (the API hands out 1000 events at a time). */
async function allAuditEvents(broker: string): Promise<StoredEvent[]> {
  const all: StoredEvent[] = [];
  for (;;) {
    const { events } = await brokerGet<{ events: StoredEvent[] }>(broker, `/api/v1/audit?after=${all.at(-1)?.seq ?? 0}`);
    all.push(...events);
    if (events.length < 1000) return all;
  }
}

function readPublicKeyFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new UserError(`cannot read public key ${path}: ${(e as NodeJS.ErrnoException).code ?? e}`, { code: 'USAGE' });
  }
}

/** Plays a terminal in this TTY, reading keys in raw mode; the terminal is restored however it ends. */
async function playInTerminal(cast: Cast, o: { speed: number; maxIdle?: number }): Promise<void> {
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  process.stdout.write('\n(space pause · ←/→ seek · +/- speed · q quit)\n');
  if (raw) {
    stdin.setRawMode(true);
    stdin.resume();
  }
  try {
    const how = await playCast(cast, { speed: o.speed, maxIdle: o.maxIdle, out: process.stdout, keys: raw ? stdin : undefined });
    process.stdout.write(`\x1b[0m\n(replay ${how === 'quit' ? 'stopped' : 'ended'})\n`);
  } finally {
    if (raw) {
      stdin.setRawMode(false);
      stdin.pause();
    }
  }
}

function detail(e: StoredEvent): string {
  const d = e.data as Record<string, unknown>;
  // A review row says which review, whose, and what it was about, so it can be looked up (hoopctl reviews) and read.
  if (e.type.startsWith('review-') && d.review) {
    const what = d.kind === 'access' ? `access to ${String(d.connection)}` : `${String(d.connection)}${d.statement ? `: ${oneLine(String(d.statement), 80)}` : ''}`;
    const requested = `requested by ${String(d.requester ?? '?')}`;
    const by = d.by && d.by !== d.requester ? `  by ${String(d.by)}` : '';
    return `${String(d.review)}  ${requested}  ${what}${by}${d.reason ? `  (${oneLine(String(d.reason), 120)})` : ''}`;
  }
  // Credential events name their connection, who acted (a subject or `schedule`) and, failed, why.
  return [d.code, d.reason, d.connection, d.by ? `by ${String(d.by)}` : undefined, d.role, d.error, d.clientAddr].filter(Boolean).join('  ');
}

function oneLine(sql: string, max = 400): string {
  const s = sql.replace(/\s+/g, ' ').trim();
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/** SQLSTATE query_canceled; older recordings carry only the code, newer ones also `cancelled: true`. */
const QUERY_CANCELED = '57014';

/** One statement's outcome: rows or tags, an error, cancelled, or unfinished — never "ok" unless the server said so. */
function resultText(d: Record<string, any>): string {
  const took = typeof d.durationMs === 'number' ? formatDuration(d.durationMs) : undefined;
  if (d.cancelled || d.error?.code === QUERY_CANCELED) {
    return `✗ cancelled${took ? ` after ${took}` : ''}: ${d.error?.code ?? QUERY_CANCELED} ${d.error?.message ?? ''}`.trimEnd();
  }
  if (d.error) return `✗ ${d.error.code ?? ''} ${d.error.message}`;
  const tags = (d.tags as string[] | undefined)?.join(', ');
  // The session ended while the statement ran (the client left, or the session was ended): how it ended is unknown.
  if (d.incomplete && !tags) return `→ unfinished: the session ended before the server answered${took ? ` (after ${took})` : ''}`;
  return `→ ${tags || (d.skipped ? 'skipped (earlier error in the batch)' : 'ok')}${took ? ` in ${took}` : ''}${d.incomplete ? ' (the session ended before the server finished)' : ''}`;
}

/** A session's identity in a listing: an agent's tool calls name their MCP client too. */
function whoWithAgent(identity: SessionRow['identity']): string {
  const agent = describeAgent(identity);
  return agent ? `${identity.name} (${agent})` : identity.name;
}

/** The transcript `replay` prints; exported for tests of its shape. */
export function renderTranscript(session: SessionRow, events: StoredEvent[]): string {
  const id = session.identity;
  const out: string[] = [
    `session ${session.id}  ${session.connection} (${session.connectionType})`,
    `who     ${id.name} [${id.kind}${id.clientId ? `, client ${id.clientId}` : ''}; groups: ${id.groups.join(', ') || 'none'}] via ${id.issuer}`,
    ...(id.via ? [`agent   ${describeAgent(id)}`] : []),
    ...(id.claims ? [`claims  ${Object.entries(id.claims).map(([k, v]) => `${k}=${v}`).join('  ')}`] : []),
    `when    ${formatTime(session.startedAt)}${session.endedAt ? ` for ${formatDuration(session.endedAt - session.startedAt)}` : ' (running)'}  from ${session.clientAddr}`,
    `outcome ${session.status}: ${session.statementCount} ${session.connectionType === 'ssh' ? 'request(s)' : 'statement(s)'}, ${session.errorCount} error(s)`,
    '',
  ];
  const t0 = events[0]?.at ?? session.startedAt;
  for (const e of events) out.push(...eventLines(session, e, t0));
  return out.join('\n') + '\n';
}

const VERDICT_VERB: Record<string, string> = { deny: 'denied', review: 'held for review', allow: 'allowed' };

/**
 * A verdict as a sentence: "denied by rule no-ddl: schema changes go through migrations". The rule's own message is
 * added when it says more than the default text that only names the rule again.
 */
export function verdictSentence(action: string, rule?: string, message?: string): string {
  const verb = VERDICT_VERB[action] ?? action;
  const said = message && !(rule && message.includes(`policy rule "${rule}"`)) ? oneLine(message, 200) : '';
  if (!rule) return said && said !== `${verb} by default` ? `${verb}: ${said}` : `${verb} (the connection's default)`;
  return `${verb} by rule ${rule}${said ? `: ${said}` : ''}`;
}

/**
 * A review event as a sentence: "held for review rev_…", "rev_… approved by bob at 12:03:05: looks right". The time is
 * the wall clock of the decision (the transcript's offsets are from the session's start).
 */
export function reviewSentence(transition: string, d: Record<string, any>, at: number): string {
  const reason = d.reason ? `: ${oneLine(String(d.reason), 200)}` : '';
  const when = new Date(at).toISOString().slice(11, 19);
  switch (transition) {
    case 'requested':
      return `held for review ${d.review}${d.requester ? ` (requested by ${d.requester})` : ''}${reason}`;
    case 'approved':
    case 'rejected':
    case 'revoked':
    case 'withdrawn':
      return `${d.review} ${transition}${d.by ? ` by ${d.by}` : ''} at ${when}${reason}`;
    case 'expired':
      return `${d.review} expired at ${when}: nobody decided in time`;
    case 'approval':
      return `${d.review} approved by ${d.by ?? 'someone'} at ${when}${reason}; more approvals needed`;
    case 'orphaned':
      return `${d.review} dropped at ${when}${reason}`;
    case 'grant-ended':
      return `${d.review}: the approved window ended at ${when}`;
    case 'consumed':
      return `${d.review} used: the approved statement ran`;
    default:
      return `${d.review} ${transition}${d.by ? ` by ${d.by}` : ''}${reason}`;
  }
}

const CANCEL_OUTCOMES: Record<string, string> = {
  forwarded: 'the server was asked to stop the running statement',
  intercepted: 'the statement held for review was withdrawn',
  'unknown-key': 'its key matched no session of this broker',
  failed: 'the server could not be reached to cancel',
};

/** A client's cancel (psql's Ctrl-C): who sent it, from where, through what, and what became of it. */
function cancelSentence(d: Record<string, any>): string {
  const who = d.by?.subject ? `by ${d.by.subject}` : d.via === 'pg-front-door' ? 'with the key alone (front door: no token)' : 'by the client';
  const from = d.clientAddr ? ` from ${d.clientAddr}` : '';
  const via = d.via === 'pg-front-door' ? ' through the PostgreSQL front door' : '';
  const what = d.outcome === 'refused' ? `refused: ${d.reason ?? 'the sender may not cancel this session'}` : (CANCEL_OUTCOMES[String(d.outcome)] ?? String(d.outcome));
  return `requested ${who}${from}${via}: ${what}`;
}

/** The transcript lines of one event, timed from `t0` (terminal output is played apart, not printed here). */
/** Where a session went, as its `open` event recorded it: a URL, or user@host:port/database as far as known. */
function describeTarget(t: { url?: string; user?: string; host?: string; port?: number; database?: string }): string {
  if (t.url) return t.url;
  return `${t.user ? `${t.user}@` : ''}${t.host ?? '?'}:${t.port ?? '?'}${t.database ? `/${t.database}` : ''}`;
}

export function eventLines(session: SessionRow, e: StoredEvent, t0: number): string[] {
  const out: string[] = [];
  const at = `+${((e.at - t0) / 1000).toFixed(3)}s`.padStart(10);
  const d = e.data as Record<string, any>;
  switch (e.type) {
    case 'open':
      out.push(`${at}  open       ${describeTarget(d.target ?? {})}`);
      break;
    case 'command':
      out.push(`${at}  command    ${oneLine(String(d.command ?? ''))}${d.verdict && d.verdict !== 'allow' ? ` — ${verdictSentence(d.verdict, d.rule)}` : ''}`);
      break;
    case 'shell':
      out.push(`${at}  shell      ${d.pty ? `terminal ${d.pty.term} ${d.pty.cols}x${d.pty.rows}` : 'no terminal'}${d.verdict && d.verdict !== 'allow' ? ` — ${verdictSentence(d.verdict, d.rule)}` : ''}`);
      break;
    case 'exit':
      out.push(`${at}    → ${d.code !== undefined ? `exit ${d.code}` : `signal ${d.signal}`}${typeof d.outputBytes === 'number' ? `, ${d.outputBytes} bytes of output${d.truncated ? ' (recording truncated)' : ''}` : ''}`);
      break;
    case 'output':
      for (const line of String(d.data ?? '').replace(/\n$/, '').split('\n')) out.push(`${' '.repeat(10)}  ${d.stream === 'stderr' ? '!' : '|'} ${line}`);
      break;
    case 'refused':
      out.push(`${at}    ✗ ${d.message}`);
      break;
    case 'terminal':
    case 'cast':
      break;
    case 'client-auth':
      out.push(`${at}  ssh login  as "${d.username}" (${d.method}); the tunnel's identity is what counts`);
      break;
    case 'sftp':
      out.push(`${at}  sftp       ${d.op} ${d.path}${d.target ? ` → ${d.target}` : ''}${d.mode ? ` (${d.mode})` : ''}`);
      break;
    case 'subsystem':
      out.push(`${at}  subsystem  ${d.name} (${d.verdict})`);
      break;
    case 'forward':
    case 'forward-refused':
    case 'forward-listen': {
      const what = d.direction === 'remote' ? `-R ${d.bind}${d.origin ? ` ← ${d.origin}` : ''}` : (d.destination ?? d.request);
      const label = e.type === 'forward' ? 'forward   ' : e.type === 'forward-listen' ? 'listen    ' : 'forward ✗ ';
      out.push(`${at}  ${label} ${what}${d.reason ? `: ${d.reason}` : ''}`);
      break;
    }
    case 'host-key-mismatch':
      out.push(`${at}  ✗ host key mismatch: presented ${d.presented}, pinned ${d.expected}`);
      break;
    case 'statement': {
      const params = Array.isArray(d.params) && d.params.length ? `   params: ${JSON.stringify(d.params)}` : '';
      out.push(`${at}  ${(d.protocol === 'extended' ? 'execute' : 'query').padEnd(10)} ${oneLine(String(d.sql ?? ''))}${params}`);
      break;
    }
    case 'result':
      out.push(`${at}    ${resultText(d)}`);
      break;
    case 'client-startup': {
      // What the client's startup asked for: not an identity (the token is), but what it meant to reach.
      const asked = `user "${d.user ?? ''}", database ${d.database !== undefined ? `"${d.database}"` : '(none)'}`;
      out.push(`${at}  startup    asked for ${asked}${d.refused ? '' : ` → database "${d.routedTo}"`}`);
      if (d.refused) out.push(`${at}    ✗ ${d.refused}`);
      break;
    }
    case 'backend-connected':
      if (session.connectionType === 'ssh') {
        out.push(`${at}  connected  ${d.user}@${d.host}:${d.port}, host key ${d.hostKey}`);
        break;
      }
      out.push(`${at}  connected  PostgreSQL ${d.serverVersion ?? '?'} as ${d.user}/${d.database}, tls ${d.tls ? 'on' : 'off'}${d.applicationName ? `, application ${d.applicationName}` : ''}`);
      break;
    case 'access-denied':
      out.push(`${at}  refused    ${d.reason}`);
      break;
    case 'credential-created':
      out.push(`${at}  role       ${d.role} created, in ${(d.grantRoles as string[]).join(', ')}, valid until ${d.validUntil}`);
      break;
    case 'credential-dropped':
      out.push(`${at}  role       ${d.role} dropped${d.terminated ? ` (${d.terminated} backend(s) terminated)` : ''}`);
      break;
    case 'credential-create-failed':
    case 'credential-drop-failed':
      out.push(`${at}  role     ✗ ${d.role}: ${e.type === 'credential-create-failed' ? 'not created' : 'not dropped'}: ${d.error}`);
      break;
    case 'request-start':
      break;
    case 'ended':
      out.push(`${at}  ended      by ${d.by}: ${d.reason}${d.lock ? ` (${d.lock})` : ''}`);
      break;
    case 'cancel-request':
      out.push(`${at}  cancel     ${cancelSentence(d)}`);
      break;
    case 'cancel-sent':
      out.push(`${at}  cancel     sent by the broker (${d.reason}): ${CANCEL_OUTCOMES[String(d.outcome)] ?? d.outcome}`);
      break;
    case CHECKPOINT_EVENT:
      out.push(`${at}  signed     through event ${d.seq} (${d.keyId})`);
      break;
    case 'request': {
      const target = `${d.method} ${d.path}${d.query ? `?${d.query}` : ''}`;
      const verdict = d.verdict && d.verdict !== 'allow' ? ` — ${verdictSentence(d.verdict, d.rule)}${d.review ? ` (${d.review})` : ''}` : '';
      const sizes = `${d.requestBytes ?? 0}/${d.responseBytes ?? 0} bytes`;
      out.push(`${at}  ${(d.upgrade ? 'upgrade' : 'request').padEnd(10)} ${oneLine(target, 300)}${verdict}`);
      out.push(`${' '.repeat(10)}    → ${d.status ?? '?'}${d.protocol ? ` ${d.protocol}` : ''} in ${formatDuration(Number(d.durationMs ?? 0))}, ${sizes}${d.error ? `: ${d.error}` : ''}`);
      break;
    }
    case 'port-forward':
      if (d.action === 'open') out.push(`${at}  port-fwd   ${d.namespace ? `${d.namespace}/` : ''}${d.pod ?? '?'}:${d.port} opened (connection ${d.requestId})`);
      else if (d.action === 'close') {
        out.push(`${at}  port-fwd   :${d.port} closed (connection ${d.requestId}): ${d.bytesToPod} bytes to the pod, ${d.bytesFromPod} back${d.error ? `; ${d.error}` : ''}`);
      } else out.push(`${at}  port-fwd ✗ ${d.error}`);
      break;
    case 'close':
      out.push(`${at}  close      ${d.status}${d.error ? `: ${d.error}` : ''}`);
      break;
    case 'verdict':
      out.push(`${at}  verdict    ${verdictSentence(d.action, d.rule, d.message)}${d.action === 'review' && d.refused ? '; refused, as no reviewer could decide it' : ''}`);
      break;
    case 'review-outcome':
      out.push(`${at}  review     ${d.review ? `${d.review} ` : ''}${d.approved ? 'approved: the statement ran' : `not approved, the statement did not run${d.message ? `: ${oneLine(String(d.message), 200)}` : ''}`}`);
      break;
    default:
      if (e.type.startsWith('review-')) out.push(`${at}  review     ${reviewSentence(e.type.slice('review-'.length), d, e.at)}`);
      else out.push(`${at}  ${e.type.padEnd(10)} ${oneLine(JSON.stringify(d), 200)}`);
  }
  return out;
}


interface SessionSearch {
  grep?: string;
  verdict?: string;
  client?: string;
}

/** What a session's recording says about its client, and whether it matches a search. */
interface SessionDetails {
  /** `psql from 127.0.0.1:51234`: the application the client named, and where it connected from. */
  client: string;
  matches(search: SessionSearch): boolean;
}

/** Reads the listed sessions' recordings, a few at a time. */
async function sessionClients(broker: string, sessions: SessionRow[]): Promise<Map<string, SessionDetails>> {
  const client = brokerClient(broker);
  const out = new Map<string, SessionDetails>();
  const queue = [...sessions];
  const worker = async () => {
    for (let s = queue.shift(); s; s = queue.shift()) {
      const { events } = await client.get<{ events: StoredEvent[] }>(`/api/v1/sessions/${encodeURIComponent(s.id)}`);
      out.set(s.id, detailsOf(s, events));
    }
  };
  await Promise.all(Array.from({ length: Math.min(6, sessions.length) }, worker));
  return out;
}

function detailsOf(session: SessionRow, events: StoredEvent[]): SessionDetails {
  const open = events.find((e) => e.type === 'open')?.data as { client?: { agent?: string; peer?: string } } | undefined;
  const application = events.map((e) => e.data.applicationName ?? e.data.application).find((a): a is string => typeof a === 'string' && a !== '');
  const from = open?.client?.peer ?? session.clientAddr;
  const name = application ?? open?.client?.agent?.split(' ')[0] ?? '?';
  const text = events.map((e) => JSON.stringify(e.data)).join('\n').toLowerCase();
  return {
    client: `${name}${from ? ` from ${from}` : ''}`,
    matches: (q) =>
      (q.grep === undefined || text.includes(q.grep.toLowerCase())) &&
      (q.verdict === undefined || events.some((e) => e.type === 'verdict' && e.data.action === q.verdict)) &&
      (q.client === undefined || (application ?? '').toLowerCase() === q.client.toLowerCase()),
  };
}
