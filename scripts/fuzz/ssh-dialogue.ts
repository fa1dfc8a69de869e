/**
 * One SSH fuzz session through an `ssh` connection's tunnel, against the broker's own SSH server (ssh2): the
 * identification line, KEXINIT, an ECDH init, NEWKEYS and what follows, each possibly mangled — garbage banners,
 * impossible packet and padding lengths, broken name-lists, unknown message types, messages out of order. The
 * server disconnects that client alone; the fuzzer gives up on a handshake left waiting and the broker must close.
 * @see https://www.rfc-editor.org/rfc/rfc4253
 */
import { rng, type Rng } from './rng.js';
import { Progress, type Transport } from './transport.js';
import type { SessionOutcome } from './pg-dialogue.js';

export interface SshDialogueOptions {
  seed: number;
  mutationRate: number;
  stallMs: number;
  hangMs: number;
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}

function sshString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return Buffer.concat([u32(b.length), b]);
}

/** An unencrypted binary packet: length, padding length, payload, padding to a multiple of 8. */
function packet(payload: Buffer, r: Rng): Buffer {
  let pad = 8 - ((5 + payload.length) % 8);
  if (pad < 4) pad += 8;
  return Buffer.concat([u32(1 + payload.length + pad), Buffer.from([pad]), payload, r.bytes(pad)]);
}

function kexinit(r: Rng, lists?: string[]): Buffer {
  const names = lists ?? ['curve25519-sha256,ecdh-sha2-nistp256', 'ssh-ed25519,rsa-sha2-256', 'aes128-ctr', 'aes128-ctr', 'hmac-sha2-256', 'hmac-sha2-256', 'none', 'none', '', ''];
  return Buffer.concat([Buffer.from([20]), r.bytes(16), ...names.map((n) => sshString(n)), Buffer.from([0]), u32(0)]);
}

type Step = { bytes: Buffer; kind?: string };

function steps(r: Rng, rate: number): Step[] {
  const m = () => r.chance(rate);
  const out: Step[] = [];
  out.push(m()
    ? { kind: 'banner', bytes: Buffer.from(r.pick(['SSH-1.5-old\r\n', 'SSH-2.0-' + 'x'.repeat(300) + '\r\n', 'GET / HTTP/1.1\r\n\r\n', 'SSH-2.0-no-newline', '\x00\xff\r\n', 'pre-banner line\r\nSSH-2.0-ok\r\n', 'SSH-2.0-a\nSSH-2.0-b\r\n'])) }
    : { bytes: Buffer.from('SSH-2.0-hoopctl_fuzz\r\n') });
  if (m()) {
    const kind = r.pick(['kex-lists', 'packet-length', 'padding', 'msg-type', 'truncate', 'name-list-length', 'early-service']);
    let bytes: Buffer;
    if (kind === 'kex-lists') bytes = packet(kexinit(r, Array.from({ length: 10 }, () => r.pick(['', ',', 'none', 'x'.repeat(r.int(3000)), 'curve25519-sha256,,', '\x00', 'aes128-ctr']))), r);
    else if (kind === 'packet-length') bytes = Buffer.concat([u32(r.pick([0, 1, 5, 35_001, 0xffffffff, 0x7fffffff])), Buffer.from([4]), kexinit(r)]);
    else if (kind === 'padding') {
      bytes = packet(kexinit(r), r);
      bytes[4] = r.pick([0, 1, 3, 255]);
    } else if (kind === 'msg-type') bytes = packet(Buffer.concat([Buffer.from([r.pick([0, 1, 2, 3, 4, 5, 6, 21, 30, 31, 50, 80, 90, 94, 98, 200, 255])]), r.bytes(r.int(40))]), r);
    else if (kind === 'truncate') bytes = packet(kexinit(r), r).subarray(0, 5 + r.int(40));
    else if (kind === 'name-list-length') {
      const k = kexinit(r);
      k.writeUInt32BE(r.pick([0xffffffff, 0x7fffffff, 1_000_000, 200]), 17);
      bytes = packet(k, r);
    } else bytes = packet(Buffer.concat([Buffer.from([5]), sshString('ssh-userauth')]), r);
    out.push({ kind, bytes });
  } else out.push({ bytes: packet(kexinit(r), r) });
  // The client's ephemeral key (SSH_MSG_KEX_ECDH_INIT), then NEWKEYS and bytes the server now reads as ciphertext.
  const keyLen = m() ? r.pick([0, 1, 31, 33, 65, 100_000]) : 32;
  out.push({ kind: keyLen === 32 ? undefined : 'ecdh-key-length', bytes: packet(Buffer.concat([Buffer.from([30]), sshString(r.bytes(Math.min(keyLen, 300)))]), r) });
  out.push({ bytes: packet(Buffer.from([21]), r) });
  out.push({ kind: 'after-newkeys', bytes: r.bytes(16 + r.int(200)) });
  return out;
}

export async function runSshDialogue(t: Transport, o: SshDialogueOptions): Promise<SessionOutcome> {
  const r = rng(o.seed);
  const progress = new Progress();
  let received = Buffer.alloc(0);
  let closed = false;
  t.onData((b) => {
    received = Buffer.concat([received, b]);
    progress.notify();
  });
  t.onClose(() => {
    closed = true;
    progress.notify();
  });
  const mutations: Record<string, number> = {};
  let messages = 0;
  for (const s of steps(r, o.mutationRate)) {
    if (closed) break;
    if (s.kind) mutations[s.kind] = (mutations[s.kind] ?? 0) + 1;
    t.write(s.bytes);
    messages++;
  }
  let gaveUp = false;
  if (!(await progress.until(() => closed, o.stallMs))) {
    gaveUp = true;
    t.end();
    if (!(await progress.until(() => closed, o.hangMs))) {
      t.destroy();
      return { kind: 'hang', messages, mutations, errors: {}, finding: `no close ${o.hangMs} ms after the client ended its side (seed ${o.seed})` };
    }
  }
  const banner = received.toString('latin1').startsWith('SSH-2.0-');
  // SSH_MSG_DISCONNECT (1) with its reason code, when the server said why.
  const disconnect = received.indexOf(Buffer.from([0x01, 0x00, 0x00, 0x00]));
  const said = disconnect > 0 && banner ? 'the server sent its banner and closed' : banner ? 'the server sent its banner and closed' : 'closed before a banner';
  return { kind: gaveUp ? 'handshake left waiting: client gave up, then the broker closed' : said, messages, mutations, errors: {} };
}
