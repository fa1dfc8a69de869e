/**
 * Masking cost per row, in process: the rows of the benchmark's big SELECT (id, 'customerN@example.com', md5) cut
 * into 64 KiB chunks (MASK_ROWS_CHUNK bytes) as a socket hands them over, run through the frame scanner and the result masker the way the
 * PostgreSQL proxy does (split, mask, one buffer per chunk). No I/O; CPU time per row, best of a few passes.
 * Run: `npm run build && node dist/scripts/bench/mask-rows.js [rows] [case name part]`.
 */
import { createHash } from 'node:crypto';
import { FrameScanner, MAX_BACKEND_FRAME } from '../../src/broker/protocols/postgres/frame-scanner.js';
import { createCommandComplete, createDataRow, createReadyForQuery, createRowDescription, type RowField } from '../../src/broker/protocols/postgres/messages.js';
import { ResultMasker } from '../../src/broker/protocols/postgres/result-masker.js';
import { BackendCode } from '../../src/lib/pg-wire/message-codes.js';
import { initPolicyEngine, maskPlanFor, parseConnectionPolicy, type MaskPlan } from '../../src/policy/index.js';

const SQL = "select g as id, 'customer' || g || '@example.com' as email, md5(g::text) as note from generate_series(1, 1000000) g";
const CHUNK = Number(process.env.MASK_ROWS_CHUNK ?? 64 * 1024);

const field = (name: string, typeOid: number): RowField => ({ name, tableOid: 0, attnum: 0, typeOid, typeSize: -1, typeModifier: -1, format: 0 });

/** What the proxy wants from the backend with and without a mask plan (see proxy.ts). */
const WANTED = new Set<number>([BackendCode.CommandComplete, BackendCode.ReadyForQuery, BackendCode.ErrorResponse, BackendCode.EmptyQueryResponse, BackendCode.PortalSuspended]);
const WANTED_MASKING = new Set<number>([...WANTED, BackendCode.RowDescription, BackendCode.NoData, BackendCode.DataRow, BackendCode.NoticeResponse]);

function backendChunks(rows: number): Buffer[] {
  const parts: Buffer[] = [createRowDescription([field('id', 23), field('email', 25), field('note', 25)])];
  for (let g = 1; g <= rows; g++) {
    parts.push(createDataRow([String(g), `customer${g}@example.com`, createHash('md5').update(String(g)).digest('hex')]));
  }
  parts.push(createCommandComplete(`SELECT ${rows}`), createReadyForQuery('I'));
  const stream = Buffer.concat(parts);
  const chunks: Buffer[] = [];
  for (let at = 0; at < stream.length; at += CHUNK) chunks.push(stream.subarray(at, at + CHUNK));
  return chunks;
}

async function planFor(mask: Record<string, unknown>): Promise<MaskPlan> {
  const policy = parseConnectionPolicy({ rules: [{ name: 'pii', mask }] });
  if (!policy.ok) throw new Error(policy.error);
  return maskPlanFor(policy.policy, { subject: 'bench', kind: 'human', groups: [] })!;
}

/** One pass as the proxy does it; returns the bytes sent (so nothing is optimised away). */
function pass(chunks: Buffer[], plan: MaskPlan | undefined): number {
  const masker = plan ? new ResultMasker(plan, 'bench-key') : undefined;
  masker?.query(SQL);
  const scanner = new FrameScanner({ wanted: plan ? WANTED_MASKING : WANTED, maxLength: MAX_BACKEND_FRAME, ...(plan ? { runs: ROW_RUNS } : {}) });
  let sent = 0;
  for (const chunk of chunks) {
    const out: Buffer[] = [];
    for (const piece of scanner.split(chunk)) {
      if (piece.kind === 'raw') out.push(piece.bytes);
      else if (piece.kind === 'run') out.push(masker?.dataRows(piece.bytes) ?? piece.bytes);
      else out.push(masker?.backendFrame(piece) ?? piece.bytes);
    }
    sent += (out.length === 1 ? out[0] : Buffer.concat(out)).length;
  }
  return sent;
}

const ROW_RUNS = new Set<number>([BackendCode.DataRow]);

async function main(): Promise<void> {
  const rows = Number(process.argv[2] ?? 200_000);
  await initPolicyEngine();
  const chunks = backendChunks(rows);
  const cases: Array<[string, MaskPlan | undefined]> = [
    ['unmasked (DataRow not scanned)', undefined],
    ['column rule (email, redact)', await planFor({ columns: ['email'], strategy: 'redact' })],
    ['detectors (email, credit_card, redact)', await planFor({ detectors: ['email', 'credit_card'], strategy: 'redact' })],
    ['column rule (email, hash)', await planFor({ columns: ['email'], strategy: 'hash' })],
    ['detectors (email, credit_card, partial)', await planFor({ detectors: ['email', 'credit_card'], strategy: 'partial' })],
  ];
  const only = process.argv[3];
  for (const [name, plan] of cases) {
    if (only && !name.includes(only)) continue;
    let best = Infinity;
    let bytes = 0;
    for (let round = 0; round < 9; round++) {
      const started = process.cpuUsage();
      bytes = pass(chunks, plan);
      const used = process.cpuUsage(started);
      best = Math.min(best, (used.user + used.system) / rows);
    }
    process.stdout.write(`${name.padEnd(42)} ${best.toFixed(3)} µs CPU per row  (${(bytes / 1e6).toFixed(1)} MB out)\n`);
  }
}

await main();
