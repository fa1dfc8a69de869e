/**
 * Who owns the other end of a loopback TCP connection, on Linux: the connecting client's socket is the one whose
 * local address is the peer's address and port and whose remote address is the listener's. It is looked up by that
 * four-tuple over netlink (peer-owner-netlink.ts) and, when that cannot answer, in the kernel's tables
 * /proc/net/tcp and /proc/net/tcp6, which list every TCP socket with its owner's uid. Elsewhere the answer is
 * "cannot tell" and the per-tunnel secret is the guard.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { endianness } from 'node:os';
import { addressBytes, mappedIPv4, type Endpoint, type OwnerQuery } from './socket-address.js';
import { NetlinkOwners } from './peer-owner-netlink.js';

export { addressBytes, type Endpoint, type OwnerQuery };

/** Whether this platform can say who owns a peer's socket. */
export const CAN_CHECK_PEER_OWNER = process.platform === 'linux';

/**
 * Parses one /proc/net/tcp{,6} address (`0100007F:1F90`): the kernel prints each 32-bit word of the address in the
 * host's byte order, the port big-endian. Returns the address as 16 bytes (IPv4 mapped) and the port.
 */
export function parseProcAddress(text: string, littleEndian = endianness() === 'LE'): { bytes: Buffer; port: number } | undefined {
  const m = /^([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):([0-9A-Fa-f]{4})$/.exec(text);
  if (!m) return undefined;
  const hex = m[1]!;
  const words = Buffer.from(hex, 'hex');
  if (littleEndian) for (let i = 0; i < words.length; i += 4) words.subarray(i, i + 4).reverse();
  const bytes = words.length === 4 ? Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...words]) : words;
  return { bytes, port: parseInt(m[2]!, 16) };
}

/**
 * The uid owning the socket at `peer` connected to `local`, from the text of /proc/net/tcp or tcp6; undefined when
 * no row matches.
 */
export function findSocketOwner(table: string, peer: Endpoint, local: Endpoint): number | undefined {
  const peerBytes = addressBytes(peer.address);
  const localBytes = addressBytes(local.address);
  if (!peerBytes || !localBytes) return undefined;
  for (const line of table.split('\n').slice(1)) {
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const mine = parseProcAddress(f[1]!);
    const theirs = parseProcAddress(f[2]!);
    if (!mine || !theirs) continue;
    if (mine.port !== peer.port || theirs.port !== local.port) continue;
    if (!mine.bytes.equals(peerBytes) || !theirs.bytes.equals(localBytes)) continue;
    // A closed client waiting out FIN_WAIT2 or TIME_WAIT is a row with no inode, printed as uid 0: nobody's answer.
    if (f.length < 10 || Number(f[9]) === 0) continue;
    const uid = Number(f[7]);
    if (Number.isInteger(uid)) return uid;
  }
  return undefined;
}

/**
 * How the kernel prints an address and port in /proc/net/tcp (`family` 4: 8 hex digits) or tcp6 (32): each 32-bit
 * word of the address in host byte order, the port big-endian, upper-case hex (`%08X:%04X`). Undefined for an
 * address the table cannot hold (an IPv6 peer in the IPv4 table).
 */
export function procAddressText(address: string, port: number, family: 4 | 6, littleEndian = endianness() === 'LE'): string | undefined {
  const bytes = addressBytes(address);
  if (!bytes) return undefined;
  let words: Buffer = Buffer.from(bytes);
  if (family === 4) {
    const v4 = mappedIPv4(words);
    if (!v4) return undefined;
    words = v4;
  }
  if (littleEndian) for (let i = 0; i < words.length; i += 4) words.subarray(i, i + 4).reverse();
  return `${words.toString('hex').toUpperCase()}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
}

/**
 * The text that starts the peer's row in a table (` local_address rem_address `): the peer's end as the socket's
 * local address, the listener's as its remote one. Only candidate rows are found this way; each is then read field by
 * field (`findSocketOwner`), so the answer is exactly the full parse's.
 */
export function rowKey(q: OwnerQuery, family: 4 | 6, littleEndian = endianness() === 'LE'): string | undefined {
  const mine = procAddressText(q.peer.address, q.peer.port, family, littleEndian);
  const theirs = procAddressText(q.local.address, q.local.port, family, littleEndian);
  return mine && theirs ? ` ${mine} ${theirs} ` : undefined;
}

/**
 * Reads a /proc/net/tcp-like source chunk by chunk and answers every query whose row it meets, stopping as soon as
 * all are answered: the kernel prints a few thousand rows a millisecond (TIME_WAIT sockets of every connection of
 * the last minute included), so a scan is the cost of a peer check, and one scan serves every check waiting for it.
 * `read` fills the buffer and returns the byte count, 0 at the end. Returns each query's uid (undefined: no row).
 */
export function scanForOwners(read: (buf: Buffer) => number, queries: OwnerQuery[], family: 4 | 6, littleEndian = endianness() === 'LE'): Array<number | undefined> {
  const found: Array<number | undefined> = queries.map(() => undefined);
  const keys = queries.map((q) => rowKey(q, family, littleEndian));
  let open = keys.filter((k) => k !== undefined).length;
  const buf = Buffer.allocUnsafe(64 * 1024);
  let carry = '';
  let n: number;
  while (open > 0 && (n = read(buf)) > 0) {
    // latin1: the table is ASCII; a row cut by the chunk's end waits for the next chunk.
    const text = carry + buf.toString('latin1', 0, n);
    const end = text.lastIndexOf('\n') + 1;
    carry = text.slice(end);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i];
      if (key === undefined || found[i] !== undefined) continue;
      const at = text.indexOf(key);
      if (at < 0 || at >= end) continue;
      const row = text.slice(text.lastIndexOf('\n', at) + 1, text.indexOf('\n', at));
      const uid = findSocketOwner(`header\n${row}`, queries[i]!.peer, queries[i]!.local);
      if (uid === undefined) continue;
      found[i] = uid;
      open--;
    }
  }
  return found;
}

/** Every query's owner from /proc/net/tcp, then tcp6 for those not found there (Linux; reads block: run off the main thread). */
export function lookUpOwners(queries: OwnerQuery[]): Array<number | undefined> {
  const found: Array<number | undefined> = queries.map(() => undefined);
  for (const [file, family] of [['/proc/net/tcp', 4], ['/proc/net/tcp6', 6]] as const) {
    const missing = queries.map((q, i) => ({ q, i })).filter(({ i }) => found[i] === undefined);
    if (missing.length === 0) break;
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch {
      continue;
    }
    try {
      const uids = scanForOwners((buf) => readSync(fd, buf, 0, buf.length, null), missing.map((m) => m.q), family);
      uids.forEach((uid, j) => (found[missing[j]!.i] = uid));
    } catch {
      // An unreadable table answers nothing: the peer is refused (cannot tell).
    } finally {
      closeSync(fd);
    }
  }
  return found;
}

/**
 * The uid owning a connected peer's socket (Linux), or undefined when the kernel cannot say. First by its exact
 * four-tuple over netlink (`NetlinkOwners`); when that gives no answer (no Perl, no sock_diag, a client already gone),
 * from the tables, read by one worker thread for the whole process: its reads block (the kernel hands out a page per
 * read), and every check that arrives while a scan runs is answered by the next one, which starts after it arrived.
 */
export async function peerSocketOwner(peer: Endpoint, local: Endpoint): Promise<number | undefined> {
  const uid = await (exact ??= new NetlinkOwners()).ask({ peer, local });
  return uid ?? (lookups ??= new OwnerLookups()).ask({ peer, local });
}

/** Starts the exact lookup's helper now, so the first connection does not wait for it (a listener's start calls it). */
export function prepareOwnerChecks(): void {
  void (exact ??= new NetlinkOwners()).start();
}

let exact: NetlinkOwners | undefined;
let lookups: OwnerLookups | undefined;

/** The worker and the checks waiting for it; a worker that fails answers its waiting checks "cannot tell". */
class OwnerLookups {
  #worker: Worker | undefined;
  #next = 0;
  readonly #waiting = new Map<number, (uid: number | undefined) => void>();

  ask(q: OwnerQuery): Promise<number | undefined> {
    const id = this.#next++;
    return new Promise((resolve) => {
      this.#waiting.set(id, resolve);
      this.#start().postMessage({ id, q });
    });
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    // None of the process's Node flags: the thread needs none, and a `--cpu-prof` of `connect` (npm run bench) would
    // otherwise be overwritten by the thread's own profile of the same name.
    const worker = new Worker(new URL('./peer-owner-worker.js', import.meta.url), { execArgv: [] });
    worker.on('message', (answers: Array<{ id: number; uid?: number }>) => {
      for (const a of answers) {
        this.#waiting.get(a.id)?.(a.uid);
        this.#waiting.delete(a.id);
      }
    });
    const fail = () => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      for (const resolve of this.#waiting.values()) resolve(undefined);
      this.#waiting.clear();
    };
    worker.on('error', fail);
    worker.on('exit', fail);
    // Never what keeps the process running (after the listeners: adding one refs it again).
    worker.unref();
    this.#worker = worker;
    return worker;
  }
}
