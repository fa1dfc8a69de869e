import type { Command } from 'commander';
import { brokerGet, parseOutput, resolveBroker } from './context.js';
import { formatDuration, formatTime, printJson, renderTable } from './render.js';
import type { SessionRow, StoredEvent } from '../broker/store/store.js';
import { verifyChain } from '../broker/recording/event-chain.js';
import { UserError } from '../lib/errors.js';

export function register(program: Command): void {
  program
    .command('sessions')
    .description('List recorded sessions (yours, or everyone\'s for members of the audit groups)')
    .option('--connection <name>', 'only this connection')
    .option('--subject <sub>', 'only this identity (auditors)')
    .option('-n, --limit <n>', 'how many, newest first', '50')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExample:\n  hoopctl sessions --connection pg-prod -o json')
    .action(async (opts: { connection?: string; subject?: string; limit: string; output: string; broker?: string }) => {
      const format = parseOutput(opts.output);
      const q = new URLSearchParams({ limit: opts.limit });
      if (opts.connection) q.set('connection', opts.connection);
      if (opts.subject) q.set('subject', opts.subject);
      const { sessions } = await brokerGet<{ sessions: SessionRow[] }>(resolveBroker(opts.broker), `/api/v1/sessions?${q}`);
      if (format === 'json') return printJson(sessions);
      if (sessions.length === 0) return void process.stdout.write('no sessions\n');
      process.stdout.write(
        renderTable(
          ['ID', 'STARTED', 'WHO', 'CONNECTION', 'STATUS', 'STATEMENTS', 'ERRORS', 'DURATION'],
          sessions.map((s) => [
            s.id, formatTime(s.startedAt), s.identity.name, s.connection, s.status, String(s.statementCount), String(s.errorCount),
            s.endedAt ? formatDuration(s.endedAt - s.startedAt) : 'running',
          ]),
        ),
      );
    });

  program
    .command('replay <session>')
    .description('Print a session as a timed transcript: who, when, what, outcome')
    .option('-o, --output <format>', 'text or json (the raw events)', 'text')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExample:\n  hoopctl replay ses_mabc123')
    .action(async (id: string, opts: { output: string; broker?: string }) => {
      const format = parseOutput(opts.output);
      const data = await brokerGet<{ session: SessionRow; events: StoredEvent[] }>(resolveBroker(opts.broker), `/api/v1/sessions/${encodeURIComponent(id)}`);
      if (format === 'json') return printJson(data);
      process.stdout.write(renderTranscript(data.session, data.events));
    });

  const audit = program.command('audit').description('Audit trail: broker-wide events and integrity checks');
  audit
    .command('events')
    .description('List broker-wide audit events such as rejected tokens (audit groups only)')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--broker <url>', 'broker URL')
    .action(async (opts: { output: string; broker?: string }) => {
      const format = parseOutput(opts.output);
      const { events } = await brokerGet<{ events: StoredEvent[] }>(resolveBroker(opts.broker), '/api/v1/audit');
      if (format === 'json') return printJson(events);
      process.stdout.write(renderTable(['SEQ', 'AT', 'TYPE', 'DETAIL'], events.map((e) => [String(e.seq), formatTime(e.at), e.type, detail(e)])));
    });
  audit
    .command('verify <session>')
    .description('Check a session\'s hash chain: proves no event was changed, reordered or dropped')
    .option('--broker <url>', 'broker URL')
    .action(async (id: string, opts: { broker?: string }) => {
      const data = await brokerGet<{ events: StoredEvent[] }>(resolveBroker(opts.broker), `/api/v1/sessions/${encodeURIComponent(id)}`);
      const check = verifyChain(data.events);
      if (!check.ok) throw new UserError(`session ${id}: chain broken at event ${check.brokenAt}: ${check.reason}`, { code: 'CHAIN_BROKEN' });
      const last = data.events.at(-1);
      process.stdout.write(`session ${id}: ${data.events.length} events, chain intact${last ? ` (head ${last.hash.slice(0, 16)}…)` : ''}\n`);
    });
}

function detail(e: StoredEvent): string {
  const d = e.data as Record<string, unknown>;
  return [d.code, d.reason, d.clientAddr].filter(Boolean).join('  ');
}

function oneLine(sql: string, max = 400): string {
  const s = sql.replace(/\s+/g, ' ').trim();
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/** The transcript `replay` prints; exported for tests of its shape. */
export function renderTranscript(session: SessionRow, events: StoredEvent[]): string {
  const id = session.identity;
  const out: string[] = [
    `session ${session.id}  ${session.connection} (${session.connectionType})`,
    `who     ${id.name} [${id.kind}${id.clientId ? `, client ${id.clientId}` : ''}; groups: ${id.groups.join(', ') || 'none'}] via ${id.issuer}`,
    `when    ${formatTime(session.startedAt)}${session.endedAt ? ` for ${formatDuration(session.endedAt - session.startedAt)}` : ' (running)'}  from ${session.clientAddr}`,
    `outcome ${session.status}: ${session.statementCount} statement(s), ${session.errorCount} error(s)`,
    '',
  ];
  const t0 = events[0]?.at ?? session.startedAt;
  for (const e of events) {
    const at = `+${((e.at - t0) / 1000).toFixed(3)}s`.padStart(10);
    const d = e.data as Record<string, any>;
    switch (e.type) {
      case 'open':
        out.push(`${at}  open       ${d.target?.user}@${d.target?.host}:${d.target?.port}/${d.target?.database}`);
        break;
      case 'statement': {
        const params = Array.isArray(d.params) && d.params.length ? `   params: ${JSON.stringify(d.params)}` : '';
        out.push(`${at}  ${(d.protocol === 'extended' ? 'execute' : 'query').padEnd(10)} ${oneLine(String(d.sql ?? ''))}${params}`);
        break;
      }
      case 'result':
        out.push(
          d.error
            ? `${at}    ✗ ${d.error.code ?? ''} ${d.error.message}`
            : `${at}    → ${(d.tags as string[] | undefined)?.join(', ') || (d.skipped ? 'skipped (earlier error in the batch)' : 'ok')}${typeof d.durationMs === 'number' ? ` in ${formatDuration(d.durationMs)}` : ''}`,
        );
        break;
      case 'backend-connected':
        out.push(`${at}  connected  PostgreSQL ${d.serverVersion ?? '?'} as ${d.user}/${d.database}, tls ${d.tls ? 'on' : 'off'}${d.applicationName ? `, application ${d.applicationName}` : ''}`);
        break;
      case 'access-denied':
        out.push(`${at}  refused    ${d.reason}`);
        break;
      case 'close':
        out.push(`${at}  close      ${d.status}${d.error ? `: ${d.error}` : ''}`);
        break;
      default:
        out.push(`${at}  ${e.type.padEnd(10)} ${oneLine(JSON.stringify(d), 200)}`);
    }
  }
  return out.join('\n') + '\n';
}
