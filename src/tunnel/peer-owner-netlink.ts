/**
 * Who owns a peer's socket by one exact lookup: netlink's sock_diag (what `ss` speaks) takes a socket's four-tuple
 * and answers that socket alone, from the kernel's hash, in microseconds whatever else the host has open. Reading
 * /proc/net/tcp instead walks every bucket of the host's TCP table and prints every socket in it, TIME_WAIT ones of
 * the last minute included: ~4 ms on an idle 24 GiB host, ~1 µs more per row, per check.
 *
 * Node cannot open a netlink socket, so a small Perl program does (Perl is an Essential package of Debian and
 * Ubuntu; where it is missing, the table is read as before). It reads one question a line and answers one line:
 *
 *     <id> <4|6> <peer address hex> <peer port> <listener address hex> <listener port>   →   <id> <uid> | <id> -
 *
 * `-` means "no live socket with exactly that four-tuple, or no answer": the caller then reads the table, so a kernel
 * without sock_diag costs speed, never a wrong answer.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { existsSync } from 'node:fs';
import { addressBytes, mappedIPv4, type OwnerQuery } from './socket-address.js';

/**
 * The helper. A request is an nlmsghdr (SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, no dump) and an inet_diag_req_v2 for
 * TCP with the socket's id; the answer is one inet_diag_msg or an NLMSG_ERROR. Only a socket whose id is exactly the
 * one asked for counts (the kernel's lookup falls back to a listener on that port), with an inode: a closed client
 * waiting out FIN_WAIT2 or TIME_WAIT has none, and the kernel reports it as uid 0.
 * @see https://man7.org/linux/man-pages/man7/sock_diag.7.html
 */
export const NETLINK_OWNER_PROGRAM = String.raw`
use strict;
$| = 1;
# AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG; connected to the kernel (sockaddr_nl with pid 0), so the socket takes
# messages from the kernel only: another process cannot send it a forged answer.
socket(my $nl, 16, 3, 4) or do { print "unavailable $!\n"; exit 0 };
connect($nl, pack('SSLL', 16, 0, 0, 0)) or do { print "unavailable $!\n"; exit 0 };
print "ready\n";
my $seq = 0;
while (my $line = <STDIN>) {
  my ($id, $fam, $src, $sport, $dst, $dport) = split ' ', $line;
  next unless defined $dport;
  my ($s, $d) = map { my $b = pack('H*', $_); $b . ("\0" x (16 - length $b)) } ($src, $dst);
  $seq++;
  # inet_diag_req_v2: family, IPPROTO_TCP, no extensions, every state; sockid: ports (big-endian), addresses,
  # any interface, INET_DIAG_NOCOOKIE.
  my $req = pack('CCCCL nn a16 a16 L LL', $fam == 6 ? 10 : 2, 6, 0, 0, 0xffffffff, $sport, $dport, $s, $d, 0, 0xffffffff, 0xffffffff);
  my $answer = '-';
  if (defined syswrite($nl, pack('LSSLL', 16 + length $req, 20, 1, $seq, 0) . $req)) {
    while (defined sysread($nl, my $buf, 8192)) {
      my (undef, $type, undef, $rseq) = unpack('LSSL', $buf);
      next if !defined $rseq || $rseq != $seq;
      if ($type == 20 && length($buf) >= 16 + 72) {
        my (undef, $state, undef, undef, $rs, $rd, $rsrc, $rdst, undef, undef, undef, undef, undef, undef, $uid, $inode) =
          unpack('CCCC nn a16 a16 L LL L L L L L', substr($buf, 16));
        $answer = $uid if $rs == $sport && $rd == $dport && $rsrc eq $s && $rdst eq $d && $state != 10 && $inode != 0;
      }
      last;
    }
  }
  print "$id $answer\n";
}
`;

/** Where Debian, Ubuntu and most others keep Perl: an absolute path, never whatever PATH names first. */
const PERL_PATHS = ['/usr/bin/perl', '/bin/perl'];

/**
 * The question line for `q`, or undefined when the addresses are not a pair one table can hold. An IPv4 peer (or
 * an IPv4-mapped one, as a dual-stack listener sees it) is asked as AF_INET, where its client's socket lives.
 */
export function netlinkQuestion(id: number, q: OwnerQuery): string | undefined {
  const peer = addressBytes(q.peer.address);
  const local = addressBytes(q.local.address);
  if (!peer || !local || !validPort(q.peer.port) || !validPort(q.local.port)) return undefined;
  const [peer4, local4] = [mappedIPv4(peer), mappedIPv4(local)];
  if (!peer4 !== !local4) return undefined;
  const [family, p, l] = peer4 && local4 ? [4, peer4, local4] : [6, peer, local];
  return `${id} ${family} ${p.toString('hex')} ${q.peer.port} ${l.toString('hex')} ${q.local.port}\n`;
}

const validPort = (port: number) => Number.isInteger(port) && port > 0 && port < 65536;

/**
 * One helper process for the whole `connect` process, started at the first check. Each check gets the uid, or
 * undefined when the helper cannot say (not started, not found, gone): the caller falls back to the table.
 */
export class NetlinkOwners {
  #child: ChildProcessByStdio<Writable, Readable, null> | undefined;
  #state: 'idle' | 'starting' | 'ready' | 'unavailable' = 'idle';
  #next = 0;
  #pending = '';
  readonly #waiting = new Map<number, (uid: number | undefined) => void>();
  /** Questions asked before the helper said "ready". */
  #queued: string[] = [];
  /** Told whether the helper answers, once it said "ready" or could not start. */
  #settled: Array<(ready: boolean) => void> = [];

  constructor(private readonly perlPaths = PERL_PATHS) {}

  /** Whether the helper answers (false until it said so, and for good once it could not). */
  get ready(): boolean {
    return this.#state === 'ready';
  }

  /**
   * Starts the helper ahead of the first check (Perl takes a few milliseconds to start, which the first connection
   * would otherwise wait for). Resolves whether it answers.
   */
  start(): Promise<boolean> {
    if (this.#state === 'ready' || this.#state === 'unavailable') return Promise.resolve(this.#state === 'ready');
    return new Promise((resolve) => {
      this.#settled.push(resolve);
      this.#start();
    });
  }

  ask(q: OwnerQuery): Promise<number | undefined> {
    if (this.#state === 'unavailable') return Promise.resolve(undefined);
    const id = this.#next++;
    const line = netlinkQuestion(id, q);
    if (line === undefined) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      this.#waiting.set(id, resolve);
      if (this.#state === 'ready') this.#child!.stdin.write(line);
      else {
        this.#queued.push(line);
        this.#start();
      }
    });
  }

  #start(): void {
    if (this.#state !== 'idle') return;
    const perl = this.perlPaths.find((p) => existsSync(p));
    if (!perl) return this.#giveUp();
    this.#state = 'starting';
    // No environment: PERL5OPT and friends must not load anything into the helper.
    const child = spawn(perl, ['-e', NETLINK_OWNER_PROGRAM], { env: {}, stdio: ['pipe', 'pipe', 'ignore'] });
    this.#child = child;
    child.on('error', () => this.#giveUp());
    child.on('exit', () => this.#giveUp());
    child.stdin.on('error', () => this.#giveUp());
    child.stdout.setEncoding('latin1');
    child.stdout.on('data', (text: string) => this.#read(text));
    // Never what keeps `connect` running: it ends with its listener, and the helper with its stdin.
    child.unref();
    for (const s of [child.stdin, child.stdout] as unknown as Array<{ unref?: () => void }>) s.unref?.();
  }

  #read(text: string): void {
    this.#pending += text;
    let nl: number;
    while ((nl = this.#pending.indexOf('\n')) >= 0) {
      const line = this.#pending.slice(0, nl);
      this.#pending = this.#pending.slice(nl + 1);
      if (this.#state === 'starting') {
        if (line !== 'ready') return this.#giveUp();
        this.#state = 'ready';
        if (this.#queued.length > 0) this.#child!.stdin.write(this.#queued.join(''));
        this.#queued = [];
        for (const settle of this.#settled.splice(0)) settle(true);
        continue;
      }
      const [id, answer] = line.split(' ');
      const resolve = this.#waiting.get(Number(id));
      if (!resolve) continue;
      this.#waiting.delete(Number(id));
      const uid = Number(answer);
      resolve(answer !== '-' && Number.isInteger(uid) && uid >= 0 ? uid : undefined);
    }
  }

  /** No helper from now on: every waiting check is answered "cannot say", and later ones go to the table at once. */
  #giveUp(): void {
    if (this.#state === 'unavailable') return;
    this.#state = 'unavailable';
    this.#queued = [];
    for (const settle of this.#settled.splice(0)) settle(false);
    for (const resolve of this.#waiting.values()) resolve(undefined);
    this.#waiting.clear();
    this.#child?.kill();
  }
}
