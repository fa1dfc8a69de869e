/**
 * A `kubectl exec` / `kubectl attach` stream recorded like an SSH terminal (asciicast v2 `terminal` + `cast`
 * events, see ../ssh/recordings.ts), read from the WebSocket messages of the remote-command protocol:
 * each binary message starts with a channel byte — 0 stdin, 1 stdout, 2 stderr, 3 error (a `Status` JSON when the
 * command ends), 4 resize (`{"Width":…,"Height":…}`), 255 close (v5: a half-close of the channel that follows).
 * The `base64.channel.k8s.io` flavours carry the channel as an ASCII digit and the data base64-encoded.
 * @see https://github.com/kubernetes/enhancements/tree/master/keps/sig-api-machinery/4006-transition-spdy-to-websockets
 */
import type { SessionRecorder } from '../../recording/recorder.js';
import { TerminalRecording, type OutputMask } from '../ssh/recordings.js';
import { WsOpcode, type WsMessage } from './ws-frames.js';

export const KubeChannel = { Stdin: 0, Stdout: 1, Stderr: 2, Error: 3, Resize: 4, Close: 255 } as const;

/** The WebSocket subprotocols of the remote-command protocol (newest first). */
export const REMOTE_COMMAND_PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io'];

export interface KubeExecInfo {
  namespace?: string;
  pod?: string;
  container?: string;
  command: string[];
  tty: boolean;
  stdin: boolean;
  /** `exec` or `attach`. */
  subresource: string;
}

/** The exec parameters from the request's query (`?command=sh&command=-c&command=…&tty=true`). */
export function execInfoFromQuery(query: URLSearchParams, where: { namespace?: string; pod?: string; subresource: string }): KubeExecInfo {
  const flag = (name: string) => ['1', 'true'].includes((query.get(name) ?? '').toLowerCase());
  return {
    ...where,
    container: query.get('container') ?? undefined,
    command: query.getAll('command'),
    tty: flag('tty'),
    stdin: flag('stdin'),
  };
}

export class KubeExecRecording {
  readonly #terminal: TerminalRecording;
  readonly #recorder: SessionRecorder;
  readonly #base64: boolean;
  #status?: Record<string, unknown>;

  private constructor(terminal: TerminalRecording, recorder: SessionRecorder, base64: boolean) {
    this.#terminal = terminal;
    this.#recorder = recorder;
    this.#base64 = base64;
  }

  static async start(recorder: SessionRecorder, info: KubeExecInfo, o: { channel: number; protocol?: string; mask?: OutputMask }): Promise<KubeExecRecording> {
    const terminal = await TerminalRecording.start(recorder, o.channel, {
      width: 80,
      height: 24,
      command: info.command.join(' ') || undefined,
      ...(info.tty ? { term: 'xterm' } : {}),
      mask: o.mask,
    });
    return new KubeExecRecording(terminal, recorder, (o.protocol ?? '').startsWith('base64.'));
  }

  #split(m: WsMessage): { channel: number; data: Buffer } | undefined {
    if (m.opcode !== WsOpcode.Binary && m.opcode !== WsOpcode.Text) return undefined;
    if (m.payload.length === 0) return undefined;
    if (this.#base64) {
      const channel = m.payload[0] - 0x30;
      return { channel, data: Buffer.from(m.payload.subarray(1).toString('latin1'), 'base64') };
    }
    return { channel: m.payload[0], data: m.payload.subarray(1) };
  }

  /** A message kubectl sent. */
  fromClient(m: WsMessage): void {
    const part = this.#split(m);
    if (!part) return;
    if (part.channel === KubeChannel.Stdin) this.#terminal.input(part.data);
    else if (part.channel === KubeChannel.Resize) {
      try {
        const size = JSON.parse(part.data.toString('utf8')) as { Width?: number; Height?: number };
        if (typeof size.Width === 'number' && typeof size.Height === 'number') this.#terminal.resize(size.Width, size.Height);
      } catch {
        // A malformed resize is the backend's to refuse; the recording just skips it.
      }
    }
  }

  /** A message the API server sent. */
  fromServer(m: WsMessage): void {
    const part = this.#split(m);
    if (!part) return;
    if (part.channel === KubeChannel.Stdout || part.channel === KubeChannel.Stderr) this.#terminal.output(part.data);
    else if (part.channel === KubeChannel.Error && part.data.length > 0) {
      try {
        this.#status = JSON.parse(part.data.toString('utf8')) as Record<string, unknown>;
      } catch {
        this.#status = { message: part.data.toString('utf8').slice(0, 1024) };
      }
    }
  }

  /** Flushes the terminal and records how the command ended (`exec-exit`: status, message, exit code). */
  async close(): Promise<void> {
    await this.#terminal.close();
    const s = this.#status;
    const causes = ((s?.details as { causes?: Array<{ reason?: string; message?: string }> } | undefined)?.causes ?? []);
    const exit = causes.find((c) => c.reason === 'ExitCode')?.message;
    await this.#recorder.record('exec-exit', {
      status: typeof s?.status === 'string' ? s.status : 'unknown',
      ...(typeof s?.message === 'string' ? { message: s.message } : {}),
      ...(s?.status === 'Success' ? { exitCode: 0 } : exit !== undefined && /^\d+$/.test(exit) ? { exitCode: Number(exit) } : {}),
    });
  }
}
