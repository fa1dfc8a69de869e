/**
 * Rotation of connections' static credentials, in the broker: it holds the config, the secret files and the
 * secrets new sessions use, so a rotation it makes takes effect at once (a local process writing the file would
 * leave a running broker with the old secret until a reload). `hoopctl broker rotate <connection>` asks for one
 * through the API; `credentials.rotateEvery` schedules them, due when the secret file is older than that (its mtime is
 * when it was last written, by a rotation or by hand). Each rotation is the audit event `credential.rotated`, each
 * failure `credential.rotation-failed`; neither carries a secret.
 */
import { statSync } from 'node:fs';
import type { Logger } from 'pino';
import { HoopError, errorMessage } from '../lib/errors.js';
import type { Connection } from './config.js';
import { errors } from './http-util.js';
import { protocolOf } from './protocols/registry.js';

export interface RotationDeps {
  connections: () => ReadonlyMap<string, Connection>;
  audit(type: string, data: Record<string, unknown>): Promise<void>;
  logger: Logger;
}

/** The most a schedule waits between checks of what is due. */
const CHECK_EVERY_MS = 60_000;

export class CredentialRotation {
  readonly #deps: RotationDeps;
  /** One rotation at a time per connection: two at once would each think the other's password is the current one. */
  readonly #running = new Map<string, Promise<Record<string, unknown>>>();
  #timer: NodeJS.Timeout | undefined;

  constructor(deps: RotationDeps) {
    this.#deps = deps;
  }

  /** Rotates `name`'s credential now; `by` is who asked (a subject, or `schedule`). */
  rotate(name: string, by: string): Promise<Record<string, unknown>> {
    const pending = this.#running.get(name);
    if (pending) return pending.catch(() => undefined).then(() => this.rotate(name, by));
    const run = this.#rotate(name, by).finally(() => this.#running.delete(name));
    this.#running.set(name, run);
    return run;
  }

  async #rotate(name: string, by: string): Promise<Record<string, unknown>> {
    const connection = this.#deps.connections().get(name);
    if (!connection) throw errors.notFound(`connection ${name}`);
    const rotation = protocolOf(connection.type).rotation;
    if (!rotation) throw new HoopError(`connection ${name} (${connection.type}) has no credential the broker can rotate`, { code: 'ROTATION_UNSUPPORTED', status: 409 });
    try {
      const details = await rotation.rotate(connection);
      const event = { connection: name, type: connection.type, by, ...details };
      await this.#deps.audit('credential.rotated', event);
      this.#deps.logger.info(event, 'credential rotated');
      return { ...event, rotatedAt: Date.now() };
    } catch (e) {
      const error = errorMessage(e);
      await this.#deps.audit('credential.rotation-failed', { connection: name, type: connection.type, by, error });
      this.#deps.logger.error({ connection: name, by, err: error }, 'credential rotation failed');
      if (e instanceof HoopError) throw e;
      throw new HoopError(`rotating the credential of ${name} failed: ${error}`, { code: 'ROTATION_FAILED', status: 502 });
    }
  }

  /** Starts the schedule: each check rotates the connections whose `rotateEvery` has passed since their file was written. */
  start(): void {
    const due = () => {
      const out: Array<{ name: string; every: number }> = [];
      for (const c of this.#deps.connections().values()) {
        const schedule = protocolOf(c.type).rotation?.schedule(c);
        if (!schedule) continue;
        let written = 0;
        try {
          written = statSync(schedule.file).mtimeMs;
        } catch {
          // unreadable: rotating is what fixes it, or fails and says why
        }
        out.push({ name: c.name, every: schedule.every });
        if (Date.now() - written >= schedule.every && !this.#running.has(c.name)) {
          this.rotate(c.name, 'schedule').catch(() => undefined);
        }
      }
      return out;
    };
    const tick = () => {
      const scheduled = due();
      const wait = Math.min(CHECK_EVERY_MS, ...scheduled.map((s) => s.every));
      this.#timer = setTimeout(tick, Math.max(wait, 1000));
      this.#timer.unref();
    };
    tick();
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
  }
}
