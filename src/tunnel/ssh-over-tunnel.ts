import ssh2 from 'ssh2';
import { createHash } from 'node:crypto';
import { openTunnel } from './ws-transport.js';
import { HoopError, UserError } from '../lib/errors.js';

export interface SshExecOptions {
  broker: string;
  connection: string;
  token: string;
  /** The broker's SSH host key fingerprint (from the connections API): any other key is refused. */
  hostKeyFingerprint?: string;
  command: string;
  stdin: NodeJS.ReadableStream | null;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Do not wait for reviews: a held command ends at once (exit status 5, see `heldReview`). */
  detachReviews?: boolean;
  /** Called with the review id when the broker held the command for review. */
  onHeld?(reviewId: string): void;
  /** More headers for the tunnel (an agent's tool call says so: src/api/agent-headers.ts). */
  headers?: Record<string, string>;
  /** Ask for a terminal (`-t`). */
  pty?: { cols: number; rows: number; term: string };
}

/**
 * Runs one command through the broker with an ssh2 client riding the tunnel stream: no local listener, no key.
 * Resolves with the remote exit status (128 + signal number for a signal, as shells report it).
 */
export async function execOverTunnel(o: SshExecOptions): Promise<number> {
  const stream = await openTunnel(o.broker, o.connection, o.token, 'hoopctl-exec', o.detachReviews ? { review: 'detach' } : undefined, o.headers);
  const client = new ssh2.Client();
  let banner = '';
  let triedAuth = false;
  client.on('banner', (m: string) => (banner += m));
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => resolve());
    client.once('close', () => reject(new HoopError(banner.trim().replace(/^hoopctl: /, '') || 'the broker closed the SSH connection', { code: 'SSH_FAILED' })));
    client.once('error', (e: Error & { level?: string }) => {
      const why = banner.trim() || e.message;
      reject(new HoopError(why.replace(/^hoopctl: /, ''), { code: e.level === 'client-authentication' ? 'SSH_REFUSED' : 'SSH_FAILED', cause: e }));
    });
    client.connect({
      sock: stream as never,
      username: 'hoopctl',
      // The tunnel carries the identity; the SSH hop authenticates with `none`.
      authHandler: (_methods, _partial, next) => {
        if (triedAuth) return next(false as never);
        triedAuth = true;
        next({ type: 'none', username: 'hoopctl' });
      },
      hostVerifier: (key: Buffer) =>
        !o.hostKeyFingerprint || `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}` === o.hostKeyFingerprint,
      readyTimeout: 30_000,
    });
  });
  try {
    return await new Promise<number>((resolve, reject) => {
      client.exec(o.command, o.pty ? { pty: { cols: o.pty.cols, rows: o.pty.rows, term: o.pty.term } } : {}, (err, channel) => {
        if (err) return reject(new UserError(`the broker refused the command: ${err.message}`, { code: 'SSH_FAILED' }));
        let status = 255;
        channel.on('exit', (code: number | null, signal?: string) => {
          status = code ?? 128 + (signalNumber(signal) ?? 127);
        });
        channel.pipe(o.stdout as NodeJS.WritableStream, { end: false });
        channel.stderr.pipe(o.stderr as NodeJS.WritableStream, { end: false });
        // The broker's own notice of a held command names the review; it comes before any output of the command.
        let head = '';
        channel.stderr.on('data', (d: Buffer) => {
          if (head.length > 4096) return;
          head += d.toString();
          const m = /hoopctl: command held for review (rev_[0-9a-f]+)/.exec(head);
          if (m) {
            o.onHeld?.(m[1]!);
            head = 'x'.repeat(4097);
          }
        });
        if (o.stdin) o.stdin.pipe(channel);
        else channel.end();
        channel.on('close', () => resolve(status));
      });
    });
  } finally {
    o.stdin?.unpipe();
    client.end();
  }
}

function signalNumber(signal?: string): number | undefined {
  const names: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGUSR1: 10, SIGSEGV: 11, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15 };
  return signal ? names[signal] : undefined;
}

/** Joins command words for the remote shell: one word is passed as written (like ssh), several are quoted. */
export function remoteCommand(words: string[]): string {
  if (words.length === 1) return words[0]!;
  return words.map((w) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(' ');
}
