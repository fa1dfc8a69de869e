import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { homedir } from 'node:os';

/**
 * The port each connection's tunnel last listened on, per broker, so a client config saved with that port (a
 * `.pgpass` line, a DBeaver profile, an ssh `Host` block) keeps working the next time `hoopctl connect` runs.
 * Runtime state, nothing secret: `$XDG_STATE_HOME/hoopctl/ports.json` (~/.local/state when unset).
 */
function portsFile(): string {
  const xdg = process.env.XDG_STATE_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.local', 'state'), 'hoopctl', 'ports.json');
}

const keyOf = (broker: string, connection: string) => `${broker.replace(/\/+$/, '')} ${connection}`;

function readPorts(): Record<string, number> {
  try {
    const parsed = JSON.parse(readFileSync(portsFile(), 'utf8')) as unknown;
    return parsed && typeof parsed === 'object' ? (parsed as Record<string, number>) : {};
  } catch {
    return {};
  }
}

/** The port `connection` on `broker` last listened on, if any. */
export function rememberedPort(broker: string, connection: string): number | undefined {
  const port = readPorts()[keyOf(broker, connection)];
  return Number.isInteger(port) && port! > 0 && port! < 65536 ? port : undefined;
}

export function rememberPort(broker: string, connection: string, port: number): void {
  const file = portsFile();
  try {
    mkdirSync(join(file, '..'), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify({ ...readPorts(), [keyOf(broker, connection)]: port }, null, 2) + '\n', { mode: 0o600 });
    renameSync(tmp, file);
  } catch {
    // A convenience only: a read-only state dir must not stop a tunnel.
  }
}
