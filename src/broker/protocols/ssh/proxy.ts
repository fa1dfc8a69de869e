import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import ssh2, { type AuthContext, type Client, type ClientChannel, type Connection as SshClientConnection, type PseudoTtyInfo, type ServerChannel, type Session } from 'ssh2';
import type { SshConnection } from './config.js';
import type { StatementReviews } from '../protocol.js';
import type { Identity } from '../../../api/identity.js';
import type { SessionRecorder } from '../../recording/recorder.js';
import { HoopError, errorMessage } from '../../../lib/errors.js';
import { globMatch } from '../../../policy/glob.js';
import type { MaskKey } from '../../../policy/masking.js';
import { evaluateCommand, evaluateShell, type CommandVerdict } from '../../../policy/shell-rules.js';
import { connectBackend, HostKeyMismatchError } from './backend.js';
import type { BrokerHostKey } from './host-keys.js';
import { createLineMasker } from './line-masker.js';
import { createSftpAuditor } from './sftp-audit.js';
import { applyMask, ExecOutputRecording, TerminalRecording, type OutputMask } from './recordings.js';

/** An SSH channel either side of a forward (ssh2's ClientChannel and ServerChannel both fit). */
type RelayChannel = Duplex & { close(): void };

export interface SshProxyContext {
  connection: SshConnection;
  recorder: SessionRecorder;
  logger: Logger;
  identity: Identity;
  hostKey: BrokerHostKey;
  maskKey: MaskKey;
  /** Aborted (with a reason) when the session must end, e.g. its access grant ran out. */
  signal?: AbortSignal;
  reviews?: StatementReviews;
  /** The client asked not to wait for reviews (`hoopctl exec --no-wait`): a held command ends at once. */
  detachedReviews?: boolean;
  /** The only client key the tunnel's owner lets on this hop (OpenSSH public key); absent: any method. */
  clientKey?: string;
}

export interface SshSessionSummary {
  outcome: 'closed' | 'failed';
  /** Exec commands, shells and subsystems the client asked for. */
  requestCount: number;
  /** Requests refused (policy, forwarding) or failed. */
  errorCount: number;
  error?: string;
}

/** Exit status of a command the broker refused (as a shell would for a command it could not run). */
export const REFUSED_EXIT_STATUS = 1;
/** Exit status of a command left waiting for review when the client asked not to wait (hoopctl's own code 5). */
export const HELD_EXIT_STATUS = 5;

/**
 * Terminates the client's SSH on the tunnel stream (the broker's own host key, any client authentication: the
 * tunnel already proved who this is) and relays it to the backend sshd over a second SSH connection that
 * carries the broker's credential. Each session channel is judged (exec commands by the command rules, shells by
 * shell rules, sftp and forwarding by `allow`), recorded, then relayed with end-to-end backpressure.
 */
export async function proxySshSession(stream: Duplex, ctx: SshProxyContext): Promise<SshSessionSummary> {
  const { connection, recorder, logger } = ctx;
  let backend;
  try {
    backend = await connectBackend(connection);
  } catch (e) {
    const err = e instanceof HoopError ? e : new HoopError(errorMessage(e), { code: 'BACKEND_UNREACHABLE' });
    if (err instanceof HostKeyMismatchError) {
      await recorder.record('host-key-mismatch', { host: connection.target.host, port: connection.target.port, expected: err.expected, presented: err.presented });
    } else {
      await recorder.record('backend-failed', { code: err.code, error: err.message });
    }
    logger.warn({ code: err.code, err: err.message }, 'ssh backend refused');
    await refuseClient(stream, ctx.hostKey, `hoopctl: session refused: ${err.message}\r\n`);
    return { outcome: 'failed', requestCount: 0, errorCount: 1, error: err.message };
  }
  await recorder.record('backend-connected', { host: connection.target.host, port: connection.target.port, user: connection.target.user, hostKey: backend.hostKey });
  return new SshRelay(stream, ctx, backend.client).run();
}

type ParsedKey = Exclude<ReturnType<typeof ssh2.utils.parseKey>, Error | unknown[]>;

function parsePublicKey(text: string): ParsedKey | undefined {
  const k = ssh2.utils.parseKey(text);
  return k instanceof Error || Array.isArray(k) ? undefined : (k as ParsedKey);
}

/**
 * The per-tunnel key check: 'key-ok' answers a client asking whether the key would do (no signature yet),
 * 'signed' is a valid signature by it, 'refuse' anything else (another key, another method, a bad signature).
 */
function checkClientKey(required: ParsedKey | null, auth: AuthContext): 'key-ok' | 'signed' | 'refuse' {
  if (!required || auth.method !== 'publickey') return 'refuse';
  // The blob names the key type itself; the algorithm may differ from it (rsa-sha2-256 for an ssh-rsa key).
  if (!auth.key.data.equals(required.getPublicSSH())) return 'refuse';
  if (!auth.signature || !auth.blob) return 'key-ok';
  return required.verify(auth.blob, auth.signature, auth.hashAlgo) === true ? 'signed' : 'refuse';
}

/** Tells an SSH client why it cannot come in: a banner, then every authentication attempt fails. */
function refuseClient(stream: Duplex, hostKey: BrokerHostKey, message: string): Promise<void> {
  return new Promise((resolve) => {
    const server = new ssh2.Server({ hostKeys: [hostKey.privateKey], banner: message, ident: 'hoopctl' }, (client) => {
      client.on('error', () => undefined);
      client.on('authentication', (auth) => auth.reject([]));
    });
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      stream.destroy();
      done();
    }, 10_000);
    stream.once('close', done);
    server.injectSocket(stream as Socket);
  });
}

const mask = (ctx: SshProxyContext): OutputMask | undefined =>
  ctx.connection.mask ? { detectors: ctx.connection.mask.detectors, strategy: ctx.connection.mask.strategy, key: ctx.maskKey } : undefined;

class SshRelay {
  readonly #stream: Duplex;
  readonly #ctx: SshProxyContext;
  readonly #backend: Client;
  /** Ports the backend listens on for the client's `ssh -R` requests → the address and port the client asked for. */
  readonly #remoteBinds = new Map<number, { addr: string; port: number }>();
  readonly #log: Logger;
  readonly #mask?: OutputMask;
  #channels = 0;
  #requests = 0;
  #errors = 0;
  #client?: SshClientConnection;
  readonly #open = new Set<ServerChannel>();
  readonly #pending = new Set<Promise<unknown>>();

  constructor(stream: Duplex, ctx: SshProxyContext, backend: Client) {
    this.#stream = stream;
    this.#ctx = ctx;
    this.#backend = backend;
    this.#log = ctx.logger;
    this.#mask = mask(ctx);
  }

  #track<T>(p: Promise<T>): void {
    this.#pending.add(p);
    void p.catch((e: unknown) => this.#log.warn({ err: errorMessage(e) }, 'ssh channel failed')).finally(() => this.#pending.delete(p));
  }

  run(): Promise<SshSessionSummary> {
    return new Promise((resolve) => {
      let authRecorded = false;
      let keyRefused = false;
      const server = new ssh2.Server({ hostKeys: [this.#ctx.hostKey.privateKey], ident: 'hoopctl' }, (client) => {
        this.#client = client;
        client.on('error', (e) => this.#log.debug({ err: e.message }, 'ssh client error'));
        // A key that does not parse lets nobody in (fail closed), rather than falling back to any method.
        const required = this.#ctx.clientKey === undefined ? undefined : (parsePublicKey(this.#ctx.clientKey) ?? null);
        client.on('authentication', (auth: AuthContext) => {
          // The tunnel already authenticated the identity with its OIDC token: any method is fine here, unless the
          // tunnel's owner asked for its per-tunnel key (only its own clients hold it).
          if (required !== undefined) {
            const verdict = checkClientKey(required, auth);
            if (verdict === 'refuse') {
              // ssh tries `none` first to learn the methods: that is no attempt worth recording.
              if (auth.method !== 'none') {
                keyRefused = true;
                this.#track(this.#ctx.recorder.record('client-auth-refused', { username: auth.username, method: auth.method, reason: "not the tunnel's key" }));
              }
              return auth.reject(['publickey']);
            }
            if (verdict === 'key-ok') return auth.accept();
          }
          if (!authRecorded) {
            authRecorded = true;
            this.#track(this.#ctx.recorder.record('client-auth', { username: auth.username, method: auth.method }));
          }
          auth.accept();
        });
        client.on('ready', () => this.#onReady(client));
        client.on('close', () => {
          if (required !== undefined && !authRecorded && !keyRefused) {
            this.#track(this.#ctx.recorder.record('client-auth-refused', { reason: "the client left without presenting the tunnel's key" }));
          }
          finish();
        });
      });
      let finished = false;
      const finish = () => {
        if (finished) return;
        finished = true;
        this.#backend.end();
        void Promise.allSettled([...this.#pending]).then(() =>
          resolve({ outcome: 'closed', requestCount: this.#requests, errorCount: this.#errors }),
        );
      };
      this.#backend.on('close', () => {
        for (const ch of this.#open) ch.close();
        this.#client?.end();
      });
      this.#ctx.signal?.addEventListener('abort', () => {
        const why = `hoopctl: ${String(this.#ctx.signal?.reason ?? 'session ended')}\r\n`;
        for (const ch of this.#open) {
          ch.stderr.write(why);
          ch.exit(REFUSED_EXIT_STATUS);
          ch.end();
        }
        setTimeout(() => this.#client?.end(), 200);
      });
      // The tunnel may already be gone: it can close while the backend's handshake was under way.
      if (this.#stream.destroyed) return finish();
      this.#stream.once('close', () => {
        this.#client?.end();
        // ssh2 reports the client's close; this covers a tunnel that dies before the SSH handshake starts.
        setTimeout(finish, 1000).unref();
      });
      // SSH has no half-close: the client's EOF ends the connection. A tunnel stream is not closed by its peer's end
      // (only destroyed), so a client that leaves before authenticating would otherwise hold its session open.
      this.#stream.once('end', () => setImmediate(() => this.#stream.destroy()));
      server.injectSocket(this.#stream as Socket);
    });
  }

  #onReady(client: SshClientConnection): void {
    client.on('session', (accept) => this.#onSession(accept()));
    client.on('tcpip', (accept, reject, info) => {
      const where = { channel: ++this.#channels, destination: `${info.destIP}:${info.destPort}`, origin: `${info.srcIP}:${info.srcPort}` };
      if (!this.#ctx.connection.allow.portForwarding) {
        this.#errors++;
        this.#track(this.#ctx.recorder.record('forward-refused', { ...where, reason: 'port forwarding is not allowed on this connection' }));
        return reject();
      }
      this.#relayForward(where, (cb) => this.#backend.forwardOut(info.srcIP, info.srcPort, info.destIP, info.destPort, cb), accept, reject);
    });
    // Remote forwarding (ssh -R): the backend listens, and each connection it accepts is carried back to the client.
    client.on('request', (accept, reject, name, info) => {
      if ((name as string) === 'tcpip-forward') return this.#remoteForward(info as { bindAddr: string; bindPort: number }, accept as ((port?: number) => void) | undefined, reject);
      if ((name as string) === 'cancel-tcpip-forward') {
        const { bindAddr, bindPort } = info as { bindAddr: string; bindPort: number };
        return this.#backend.unforwardIn(bindAddr, bindPort, (err) => (err ? reject?.() : accept?.()));
      }
      if ((name as string) === 'streamlocal-forward@openssh.com') {
        this.#errors++;
        this.#track(this.#ctx.recorder.record('forward-refused', { request: name, reason: 'forwarding of Unix sockets is not relayed' }));
      }
      reject?.();
    });
    this.#backend.on('tcp connection', (details, accept, reject) => {
      const bound = this.#remoteBinds.get(details.destPort);
      if (!bound) return reject();
      const where = { channel: ++this.#channels, direction: 'remote', bind: `${bound.addr}:${bound.port}`, origin: `${details.srcIP}:${details.srcPort}` };
      this.#relayForward(where, (cb) => client.forwardOut(bound.addr, bound.port, details.srcIP, details.srcPort, cb), accept, reject);
    });
  }

  /**
   * A forwarded connection, either way: recorded first (no record, no relay), then its other end is opened and the
   * two channels are joined; closing one closes the other.
   */
  #relayForward(
    where: Record<string, unknown>,
    openOther: (cb: (err: Error | undefined, other: RelayChannel) => void) => void,
    accept: () => RelayChannel,
    reject: () => void,
  ): void {
    const refuse = () => {
      this.#errors++;
      reject();
    };
    this.#track(
      this.#ctx.recorder.record('forward', where).then(
        () =>
          openOther((err, other) => {
            if (err) return refuse();
            const mine = accept();
            mine.pipe(other).pipe(mine);
            mine.on('close', () => other.close());
            other.on('close', () => mine.close());
          }),
        refuse,
      ),
    );
  }

  /** `ssh -R`: allowed per connection; the backend binds (port 0: it picks) and the client learns the port. */
  #remoteForward(info: { bindAddr: string; bindPort: number }, accept: ((port?: number) => void) | undefined, reject: (() => void) | undefined): void {
    const request = { direction: 'remote', bind: `${info.bindAddr}:${info.bindPort}` };
    if (!this.#ctx.connection.allow.remoteForwarding) {
      this.#errors++;
      this.#track(this.#ctx.recorder.record('forward-refused', { request: 'tcpip-forward', ...request, reason: 'remote forwarding is not allowed on this connection' }));
      return reject?.();
    }
    this.#backend.forwardIn(info.bindAddr, info.bindPort, (err, port) => {
      if (err) {
        this.#errors++;
        this.#track(this.#ctx.recorder.record('forward-refused', { request: 'tcpip-forward', ...request, reason: `the backend refused: ${err.message}` }));
        return reject?.();
      }
      const bound = port || info.bindPort;
      this.#remoteBinds.set(bound, { addr: info.bindAddr, port: bound });
      this.#track(this.#ctx.recorder.record('forward-listen', { ...request, bind: `${info.bindAddr}:${bound}` }));
      accept?.(bound);
    });
  }

  #onSession(session: Session): void {
    const channel = ++this.#channels;
    let pty: PseudoTtyInfo | undefined;
    const env: Record<string, string> = {};
    let backendChannel: ClientChannel | undefined;
    let terminal: TerminalRecording | undefined;
    const allowedEnv = this.#ctx.connection.allow.env;
    session.on('pty', (accept, _reject, info) => {
      pty = info;
      accept?.();
    });
    session.on('window-change', (accept, _reject, info) => {
      if (pty) Object.assign(pty, { cols: info.cols, rows: info.rows, width: info.width, height: info.height });
      backendChannel?.setWindow(info.rows, info.cols, info.height, info.width);
      terminal?.resize(info.cols, info.rows);
      accept?.();
    });
    session.on('env', (accept, reject, info) => {
      if (allowedEnv.some((p) => globMatch(p, info.key))) {
        env[info.key] = info.val;
        accept?.();
      } else reject?.();
    });
    session.on('signal', (accept, _reject, info) => {
      backendChannel?.signal(info.name);
      accept?.();
    });
    session.on('x11', (_accept, reject) => reject?.());
    session.on('auth-agent', (_accept, reject) => reject?.());
    const open = (start: (cb: (err: Error | undefined, ch: ClientChannel) => void) => void) =>
      new Promise<ClientChannel>((resolve, reject) => start((err, ch) => (err ? reject(err) : resolve(ch))));
    const ptyOptions = () => (pty ? { rows: pty.rows, cols: pty.cols, width: pty.width, height: pty.height, term: pty.term, modes: pty.modes } : undefined);

    session.on('exec', (accept, _reject, info) => {
      const client = accept();
      this.#requests++;
      this.#track(
        (async () => {
          const command = applyMask(info.command, this.#mask);
          const verdict = evaluateCommand(this.#ctx.connection, this.#ctx.identity, info.command);
          await this.#ctx.recorder.record('command', {
            channel, command, verdict: verdict.action, ...(verdict.rule ? { rule: verdict.rule } : {}), ...(pty ? { pty: true } : {}),
          });
          if (!(await this.#admit(client, channel, verdict, command))) return;
          const back = await open((cb) => this.#backend.exec(info.command, { env, ...(pty ? { pty: ptyOptions() } : {}) }, cb));
          backendChannel = back;
          if (pty) terminal = await TerminalRecording.start(this.#ctx.recorder, channel, { width: pty.cols, height: pty.rows, term: pty.term, command, mask: this.#mask });
          await this.#relay(channel, client, back, terminal ? { terminal } : { exec: new ExecOutputRecording(this.#ctx.recorder, channel, this.#mask) });
        })().catch((e: unknown) => this.#fail(client, channel, e)),
      );
    });

    session.on('shell', (accept) => {
      const client = accept();
      this.#requests++;
      this.#track(
        (async () => {
          const verdict = evaluateShell(this.#ctx.connection, this.#ctx.identity);
          await this.#ctx.recorder.record('shell', {
            channel, verdict: verdict.action, ...(verdict.rule ? { rule: verdict.rule } : {}),
            ...(pty ? { pty: { term: pty.term, cols: pty.cols, rows: pty.rows } } : {}),
          });
          if (!(await this.#admit(client, channel, verdict, '(interactive shell)'))) return;
          const back = await open((cb) => this.#backend.shell(ptyOptions() ?? false, { env }, cb));
          backendChannel = back;
          terminal = await TerminalRecording.start(this.#ctx.recorder, channel, { width: pty?.cols ?? 80, height: pty?.rows ?? 24, term: pty?.term, mask: this.#mask });
          await this.#relay(channel, client, back, { terminal });
        })().catch((e: unknown) => this.#fail(client, channel, e)),
      );
    });

    session.on('subsystem', (accept, reject, info) => {
      this.#requests++;
      const allowed = info.name === 'sftp' && this.#ctx.connection.allow.sftp;
      this.#track(this.#ctx.recorder.record('subsystem', { channel, name: info.name, verdict: allowed ? 'allow' : 'deny' }));
      if (!allowed) {
        this.#errors++;
        return reject?.();
      }
      const client = accept();
      this.#track(
        (async () => {
          const back = await new Promise<ClientChannel>((resolve, rej) => this.#backend.subsys(info.name, (err, ch) => (err ? rej(err) : resolve(ch))));
          await this.#relay(channel, client, back, { sftp: info.name === 'sftp' });
        })().catch((e: unknown) => this.#fail(client, channel, e)),
      );
    });
  }

  /** Applies a verdict: deny and failed reviews end the channel with a message and status 1; true lets it run. */
  async #admit(client: ServerChannel, channel: number, verdict: CommandVerdict, recorded: string): Promise<boolean> {
    if (verdict.action === 'allow') return true;
    if (verdict.action === 'review') {
      if (!this.#ctx.reviews) return this.#refuse(client, channel, `${verdict.message}, but the connection has no reviewers`);
      const abort = new AbortController();
      const onClose = () => abort.abort('the client closed the channel');
      client.once('close', onClose);
      this.#open.add(client);
      try {
        const outcome = await this.#ctx.reviews.hold(
          { statement: recorded, rule: verdict.rule ?? 'review', message: verdict.message },
          { notice: async (m) => void client.stderr.write(`${m.replace(/\bstatement\b/g, 'command')}\r\n`), signal: abort.signal },
        );
        if (outcome.approved) {
          client.stderr.write(`hoopctl: ${outcome.message}\r\n`);
          return true;
        }
        const held = this.#ctx.detachedReviews === true && outcome.reviewId !== undefined;
        return this.#refuse(client, channel, outcome.message.replace(/^hoopctl: /, ''), held ? HELD_EXIT_STATUS : REFUSED_EXIT_STATUS);
      } finally {
        client.off('close', onClose);
        this.#open.delete(client);
      }
    }
    return this.#refuse(client, channel, verdict.message);
  }

  async #refuse(client: ServerChannel, channel: number, message: string, status = REFUSED_EXIT_STATUS): Promise<false> {
    this.#errors++;
    await this.#ctx.recorder.record('refused', { channel, message, status });
    if (client.writable) {
      client.stderr.write(`hoopctl: ${message}\r\n`);
      client.exit(status);
      client.end();
    }
    return false;
  }

  async #fail(client: ServerChannel, channel: number, e: unknown): Promise<void> {
    this.#errors++;
    this.#log.warn({ channel, err: errorMessage(e) }, 'ssh channel failed');
    await this.#ctx.recorder.record('error', { channel, error: errorMessage(e) }).catch(() => undefined);
    if (client.writable) {
      client.stderr.write(`hoopctl: ${errorMessage(e)}\r\n`);
      client.exit(255);
      client.end();
    }
  }

  /** Relays one channel both ways until the backend closes it; records output and the exit status. */
  async #relay(channel: number, client: ServerChannel, back: ClientChannel, rec: { terminal?: TerminalRecording; exec?: ExecOutputRecording; sftp?: boolean }): Promise<void> {
    this.#open.add(client);
    let exit: { code?: number; signal?: string; coreDumped?: boolean; description?: string } = {};
    back.on('exit', (code: number | null, signal?: string, coreDumped?: boolean, description?: string) => {
      exit = code !== null && code !== undefined ? { code } : { signal, coreDumped, description };
    });
    // Output: backend → (mask) → client, with the channel's flow control on both hops.
    const stdout = rec.exec && this.#mask ? back.pipe(createLineMasker(this.#mask)) : back;
    const stderr = rec.exec && this.#mask ? back.stderr.pipe(createLineMasker(this.#mask)) : back.stderr;
    stdout.pipe(client, { end: false });
    stderr.pipe(client.stderr, { end: false });
    back.on('data', (d: Buffer) => (rec.terminal ? rec.terminal.output(d) : rec.exec?.write('stdout', d)));
    back.stderr.on('data', (d: Buffer) => (rec.terminal ? rec.terminal.output(d) : rec.exec?.write('stderr', d)));
    // Input: client → backend; its EOF becomes the backend's.
    // SFTP: each file operation is recorded before the request carrying it goes on.
    if (rec.sftp) client.pipe(createSftpAuditor((op) => this.#ctx.recorder.record('sftp', { channel, ...op }))).pipe(back);
    else client.pipe(back);
    if (rec.terminal) client.on('data', (d: Buffer) => rec.terminal!.input(d));
    client.on('close', () => back.close());
    const outputDone = Promise.all([once(stdout, 'end'), once(stderr, 'end')]).catch(() => undefined);
    await once(back, 'close');
    await Promise.race([outputDone, new Promise((r) => setTimeout(r, 2000))]);
    await rec.terminal?.close();
    await rec.exec?.close();
    await this.#ctx.recorder.record('exit', {
      channel, ...exit,
      ...(rec.exec ? { outputBytes: rec.exec.bytes, ...(rec.exec.truncated ? { truncated: true } : {}), ...(rec.exec.binary ? { binary: true } : {}) } : {}),
    });
    this.#open.delete(client);
    if (client.writable) {
      if (exit.code !== undefined) client.exit(exit.code);
      else if (exit.signal) client.exit(exit.signal, exit.coreDumped ?? false, exit.description ?? '');
      client.end();
    }
  }
}
