/**
 * Runs fuzz sessions against a running broker in bounded batches: `concurrency` sessions at a time, each carrying
 * many messages, until `count` messages have been sent. Every session is replayable from (seed, session number).
 */
import { MAX_CLIENT_FRAME } from '../../src/broker/protocols/postgres/frame-scanner.js';
import { runHttpDialogue } from './http-dialogue.js';
import { runPgDialogue, type SessionOutcome } from './pg-dialogue.js';
import { rng, sessionSeed } from './rng.js';
import { runSshDialogue } from './ssh-dialogue.js';
import { RawWebSocketTransport, tunnelTransport } from './tunnel-transport.js';

export type FuzzProtocol = 'postgres' | 'tunnel-frames' | 'http' | 'ssh';

export interface CampaignOptions {
  brokerUrl: string;
  token: () => Promise<string>;
  /** PostgreSQL connections (sessions alternate between them), and the database they serve. */
  pg: { connections: string[]; database: string };
  http?: string;
  ssh?: string;
  count: number;
  seed: number;
  concurrency: number;
  /** Messages per session (PostgreSQL and HTTP). */
  perSession: number;
  chunk: number;
  mutationRate: number;
  /** Share of sessions per protocol (weights). */
  mix: Record<FuzzProtocol, number>;
  stallMs: number;
  hangMs: number;
  /** False once the broker process is gone: the run stops. */
  brokerAlive: () => boolean;
  onSession?: (stats: CampaignStats) => void;
  /** Stops starting sessions after this many seconds (the count reached is reported). */
  maxSeconds?: number;
  /** Runs only these session numbers (to replay a finding), instead of sessions until `count`. */
  only?: number[];
}

export interface ProtocolStats {
  sessions: number;
  messages: number;
  outcomes: Record<string, number>;
  /** Up to three session numbers per outcome, to replay with `--session`. */
  examples: Record<string, number[]>;
  mutations: Record<string, number>;
  /** Messages that were mutated (the rest were well-formed). */
  mutated: number;
}

export interface CampaignStats {
  messages: number;
  sessions: number;
  protocols: Partial<Record<FuzzProtocol, ProtocolStats>>;
  /** Non-fatal errors PostgreSQL sessions got, by SQLSTATE (the session went on). */
  pgErrors: Record<string, number>;
  httpStatuses: Record<string, number>;
  /** Failures of the broker: hangs, malformed answers, refused tunnels, stalls that replay. */
  findings: string[];
  /** Sessions that stalled during the run, replayed alone after it: `clean` answered every sentinel then. */
  stalledReplays: { clean: number; again: number; notReplayed: number };
  seconds: number;
}

export async function runCampaign(o: CampaignOptions): Promise<CampaignStats> {
  const stats: CampaignStats = { messages: 0, sessions: 0, protocols: {}, pgErrors: {}, httpStatuses: {}, findings: [], seconds: 0, stalledReplays: { clean: 0, again: 0, notReplayed: 0 } };
  const started = Date.now();
  let nextSession = 0;
  const weights = Object.entries(o.mix).filter(([p, w]) => w > 0 && (p !== 'http' || o.http) && (p !== 'ssh' || o.ssh)) as Array<[FuzzProtocol, number]>;
  const total = weights.reduce((a, [, w]) => a + w, 0);

  const add = (session: number, protocol: FuzzProtocol, out: SessionOutcome & { statuses?: Record<string, number> }, extraMutations?: Record<string, number>) => {
    const p = (stats.protocols[protocol] ??= { sessions: 0, messages: 0, outcomes: {}, examples: {}, mutations: {}, mutated: 0 });
    p.sessions++;
    p.messages += out.messages;
    p.outcomes[out.kind] = (p.outcomes[out.kind] ?? 0) + 1;
    const examples = (p.examples[out.kind] ??= []);
    if (examples.length < 3) examples.push(session);
    for (const [k, v] of Object.entries({ ...out.mutations, ...extraMutations })) {
      p.mutations[k] = (p.mutations[k] ?? 0) + (v ?? 0);
      if (k !== 'ping' && k !== 'fragmented-ok') p.mutated += v ?? 0;
    }
    for (const [k, v] of Object.entries(out.errors)) stats.pgErrors[k] = (stats.pgErrors[k] ?? 0) + v;
    for (const [k, v] of Object.entries(out.statuses ?? {})) stats.httpStatuses[k] = (stats.httpStatuses[k] ?? 0) + v;
    stats.sessions++;
    stats.messages += out.messages;
    if (out.finding && stats.findings.length < 50) stats.findings.push(`${protocol} session ${session}: ${out.finding}`);
    o.onSession?.(stats);
  };

  type Ran = { protocol: FuzzProtocol; out: SessionOutcome & { statuses?: Record<string, number> }; extra?: Record<string, number> } | undefined;

  async function runOne(session: number): Promise<Ran> {
    const seed = sessionSeed(o.seed, session);
    const pick = rng(seed ^ 0x5bd1e995);
    let roll = pick.next() * total;
    const protocol = weights.find(([, w]) => (roll -= w) < 0)?.[0] ?? 'postgres';
    const token = await o.token();
    const pgConnection = o.pg.connections[session % o.pg.connections.length]!;
    const common = { seed, stallMs: o.stallMs, hangMs: o.hangMs, mutationRate: o.mutationRate };
    try {
      if (protocol === 'postgres') {
        const t = await tunnelTransport(o.brokerUrl, pgConnection, token);
        return { protocol, out: await runPgDialogue(t, { ...common, database: o.pg.database, messages: o.perSession, chunk: o.chunk, startupFuzzRate: 0.1, lossless: true, maxClientFrame: MAX_CLIENT_FRAME }) };
      } else if (protocol === 'tunnel-frames') {
        const t = await RawWebSocketTransport.open(o.brokerUrl, pgConnection, token, rng(seed ^ 0x27d4eb2f), o.mutationRate);
        if (!t.upgraded) {
          t.destroy();
          return { protocol, out: { kind: t.closeReason()!, messages: 1, mutations: {}, errors: {} }, extra: t.mutations };
        }
        const out = await runPgDialogue(t, { ...common, database: o.pg.database, messages: Math.ceil(o.perSession / 4), chunk: o.chunk, startupFuzzRate: 0, mutationRate: 0, lossless: false, maxClientFrame: MAX_CLIENT_FRAME });
        return { protocol, out, extra: t.mutations };
      } else if (protocol === 'http') {
        const t = await tunnelTransport(o.brokerUrl, o.http!, token);
        return { protocol, out: await runHttpDialogue(t, { ...common, messages: Math.ceil(o.perSession / 4), chunk: Math.max(1, Math.ceil(o.chunk / 4)) }) };
      } else {
        const t = await tunnelTransport(o.brokerUrl, o.ssh!, token);
        return { protocol, out: await runSshDialogue(t, { ...common, mutationRate: Math.min(1, o.mutationRate * 8) }) };
      }
    } catch (e) {
      if (!o.brokerAlive()) return undefined;
      return { protocol, out: { kind: 'tunnel could not be opened', messages: 0, mutations: {}, errors: {}, finding: `(seed ${seed}): ${(e as Error).message}` } };
    }
  }

  /**
   * A session left without an answer to its sentinel may be a broker that lost track of it, or a broker (or machine)
   * that paused longer than the client's patience while many sessions ran. It is replayed alone once the run is
   * over: a stall that replays is a finding; one that does not was the moment's load, counted as such.
   */
  const stalled: number[] = [];
  async function one(session: number): Promise<void> {
    const ran = await runOne(session);
    if (!ran) return;
    if (ran.out.kind === 'stalled' && !o.only) {
      stalled.push(session);
      add(session, ran.protocol, { ...ran.out, finding: undefined, kind: 'stalled (replayed alone after the run)' }, ran.extra);
      return;
    }
    add(session, ran.protocol, ran.out, ran.extra);
  }

  if (o.only) for (const n of o.only) await one(n);
  else {
    await Promise.all(
      Array.from({ length: o.concurrency }, async () => {
        const until = o.maxSeconds ? started + o.maxSeconds * 1000 : Infinity;
        while (stats.messages < o.count && o.brokerAlive() && Date.now() < until) await one(nextSession++);
      }),
    );
  }
  stats.seconds = (Date.now() - started) / 1000;
  for (const session of stalled.slice(0, 200)) {
    if (!o.brokerAlive()) break;
    const again = await runOne(session);
    if (!again) break;
    if (again.out.kind === 'stalled') {
      if (stats.findings.length < 50) stats.findings.push(`${again.protocol} session ${session}: stalled again when replayed alone: ${again.out.finding}`);
      stats.stalledReplays.again++;
    } else stats.stalledReplays.clean++;
  }
  stats.stalledReplays.notReplayed = Math.max(0, stalled.length - 200);
  return stats;
}
