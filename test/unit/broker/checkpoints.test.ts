import { afterEach, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../../src/broker/store/sqlite-store.js';
import { SessionService } from '../../../src/broker/session-service.js';
import { hashEvent, verifyChain } from '../../../src/broker/recording/event-chain.js';
import { loadCheckpointSigner, verifyCheckpoints } from '../../../src/broker/recording/checkpoints.js';
import type { StoredEvent } from '../../../src/broker/store/store.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'hoop-ckpt-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const identity = { subject: 'alice', name: 'alice', kind: 'human' as const, groups: [], issuer: 'https://issuer.test' };
const connection = { name: 'pg', type: 'postgres', target: { host: 'db', port: 5432, database: 'app', sslmode: 'disable' }, credentials: { user: 'app' } } as never;

/** A session as the broker records it: open, two statements, close — sealed by the signer. */
async function recordedSession(signer = loadCheckpointSigner(undefined, join(tempDir(), 'key.pem'))) {
  const store = new SqliteStore(':memory:');
  const sessions = await SessionService.create(store, signer);
  const { row, recorder } = await sessions.open(identity as never, connection, '127.0.0.1', {});
  await recorder.record('statement', { sql: 'select 1' });
  await sessions.checkpointAll();
  await recorder.record('statement', { sql: 'select 2' });
  await sessions.close(row.id, recorder, { status: 'closed', statementCount: 2, errorCount: 0, durationMs: 5 });
  const events = await store.listEvents(row.id);
  await store.close();
  return { events, signer };
}

/** What someone with write access to the store can do: change an event and recompute every hash after it. */
function rewrite(events: StoredEvent[], seq: number, data: Record<string, unknown>): StoredEvent[] {
  const out: StoredEvent[] = [];
  let prev = '0'.repeat(64);
  for (const e of events) {
    const changed = { ...e, data: e.seq === seq ? data : e.data, prevHash: prev };
    const hash = hashEvent(changed);
    out.push({ ...changed, hash });
    prev = hash;
  }
  return out;
}

describe('signed checkpoints', () => {
  it('seals a closed session: a periodic checkpoint mid-stream and one after the close, both valid', async () => {
    const { events, signer } = await recordedSession();
    expect(events.map((e) => e.type)).toEqual(['open', 'statement', 'checkpoint', 'statement', 'close', 'checkpoint']);
    const check = verifyCheckpoints(events, signer.publicKeyPem);
    expect(check).toMatchObject({ ok: true, checkpoints: 2, signedThrough: 6, unsignedTail: 0, keyIds: [signer.keyId] });
  });

  it('catches a rewrite the hash chain alone cannot: the chain is recomputed, the signature no longer matches', async () => {
    const { events, signer } = await recordedSession();
    const forged = rewrite(events, 4, { sql: 'select 2 -- nothing to see' });
    expect(verifyChain(forged).ok).toBe(true);
    const check = verifyCheckpoints(forged, signer.publicKeyPem);
    expect(check).toMatchObject({ ok: false, brokenAt: 6, reason: 'the checkpoint does not sign the event before it' });
  });

  it('catches a forged checkpoint too: re-signed with another key, or a signature moved to the rewritten head', async () => {
    const { events, signer } = await recordedSession();
    const forged = rewrite(events, 4, { sql: 'select 2 -- edited' });
    const last = forged.at(-1)!;
    const before = forged.at(-2)!;
    const attacker = loadCheckpointSigner(undefined, join(tempDir(), 'attacker.pem'));
    const reSigned = rewrite(forged.slice(0, -1).concat({ ...last, data: { seq: before.seq, hash: before.hash, keyId: attacker.keyId, signature: attacker.sign(last.stream, before.seq, before.hash) } }), -1, {});
    expect(verifyCheckpoints(reSigned, signer.publicKeyPem)).toMatchObject({ ok: false, brokenAt: 6, reason: expect.stringMatching(/^signed by key SHA256:.*, not SHA256:/) });
    const moved = rewrite(forged.slice(0, -1).concat({ ...last, data: { ...(events.at(-1)!.data as object), seq: before.seq, hash: before.hash } }), -1, {});
    expect(verifyCheckpoints(moved, signer.publicKeyPem)).toMatchObject({ ok: false, reason: 'the signature does not match: the events it covers were rewritten' });
  });

  it('counts events after the last checkpoint as an unsigned tail', async () => {
    const { events, signer } = await recordedSession();
    const truncatedSeal = events.slice(0, -1);
    expect(verifyCheckpoints(truncatedSeal, signer.publicKeyPem)).toMatchObject({ ok: true, signedThrough: 3, unsignedTail: 2 });
  });

  it('keeps its generated key 0600 and reloads it; a configured key must be Ed25519', () => {
    const path = join(tempDir(), 'audit', 'key.pem');
    const first = loadCheckpointSigner(undefined, path);
    expect(first.created).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const again = loadCheckpointSigner(undefined, path);
    expect(again).toMatchObject({ created: false, keyId: first.keyId });
    const configured = loadCheckpointSigner(readFileSync(path, 'utf8'), join(tempDir(), 'unused.pem'));
    expect(configured.keyId).toBe(first.keyId);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    expect(() => loadCheckpointSigner(rsa, path)).toThrow(/audit\.signingKey: the audit signing key must be Ed25519, not rsa/);
    expect(() => loadCheckpointSigner('not a key', path)).toThrow(/audit\.signingKey: not a PEM private key/);
  });
});
