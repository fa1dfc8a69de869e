/**
 * The well-formed session beside the fuzz: `hoopctl connect` as its own process and node-postgres through it, asking
 * questions whose answers it checks, for as long as the fuzz runs. A wrong answer or an error is a failure; a lost
 * connection is counted and reopened, as an application's pool would, and the caller judges whether each loss had a
 * cause outside the broker (PostgreSQL restarting after a crash cuts every session to it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import pg from 'pg';
import type { FuzzDeployment } from './deployment.js';

export interface ControlSession {
  /** Round trips answered correctly so far. */
  readonly answered: number;
  /** The first failure, if any (a wrong answer, an error that is not a lost connection, a failed reconnect). */
  readonly failure: string | undefined;
  /** Connections lost and reopened (a new session each), with when and why. */
  readonly losses: readonly string[];
  /** Stops asking, closes the client and the tunnel process. */
  stop(): Promise<void>;
}

export async function startControlSession(d: FuzzDeployment, connection: string, database: string): Promise<ControlSession> {
  const tunnel: ChildProcess = spawn(process.execPath, [d.bin, 'connect', connection, '-o', 'json'], { env: await d.cliEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  tunnel.stderr!.on('data', (b) => (stderr += b));
  // The tunnel serves only its owner: its own password (in the URL connect prints) opens it over TCP.
  const { port, password } = await new Promise<{ port: number; password: string }>((resolve, reject) => {
    let out = '';
    tunnel.stdout!.on('data', (b) => {
      out += b;
      const m = /\{.*\}\n/.exec(out);
      if (!m) return;
      const ready = JSON.parse(m[0]) as { port: number; url: string };
      resolve({ port: ready.port, password: decodeURIComponent(new URL(ready.url).password) });
    });
    tunnel.once('exit', (code) => reject(new Error(`hoopctl connect exited ${code}: ${stderr}`)));
  });
  let answered = 0;
  let failure: string | undefined;
  let stopping = false;
  const losses: string[] = [];
  /** A new connection through the same tunnel: a new broker session, as a client reconnecting would open. */
  const open = async () => {
    for (let attempt = 1; ; attempt++) {
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'fuzz', database, password });
      // A connection lost between queries shows in the next query; never a crash of the fuzzer.
      c.on('error', () => undefined);
      try {
        await c.connect();
        return c;
      } catch (e) {
        // Right after a server restart the broker answers 57P03 (the server is still recovering) for a moment.
        if (stopping || attempt >= 60 || !isConnectionLoss(e)) throw e;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  };
  let client = await open();
  const loop = (async () => {
    for (let i = 0; !stopping && !failure; i++) {
      try {
        // Both protocols: a parameterised statement (Parse/Bind/Execute) and a simple query.
        const { rows } = await client.query('select $1::int * 2 as n, $2::text as tag', [i, `control-${i}`]);
        const simple = await client.query({ text: `select ${i} + 1 as m`, rowMode: 'array' });
        if (rows[0]?.n !== i * 2 || rows[0]?.tag !== `control-${i}` || simple.rows[0]?.[0] !== i + 1) failure = `wrong answer at round ${i}: ${JSON.stringify(rows)} ${JSON.stringify(simple.rows)}`;
        else answered++;
      } catch (e) {
        if (stopping) break;
        if (!isConnectionLoss(e)) {
          failure = `round ${i}: ${(e as Error).message}`;
          break;
        }
        // The connection was cut (PostgreSQL restarting after one of its processes crashed cuts every session):
        // counted, and the client reconnects as an application would. Whether each loss had such a cause is judged
        // by the caller against the server's log.
        losses.push(`after ${answered} answers (${new Date().toISOString()}): ${(e as Error).message}`);
        await client.end().catch(() => undefined);
        try {
          client = await open();
        } catch (e2) {
          failure = `could not reconnect after a lost connection: ${(e2 as Error).message}; hoopctl connect: ${stderr.slice(-500)}`;
        }
      }
    }
  })();
  return {
    get answered() {
      return answered;
    },
    get failure() {
      return failure;
    },
    get losses() {
      return losses;
    },
    async stop() {
      stopping = true;
      await loop;
      await client.end().catch(() => undefined);
      tunnel.kill('SIGINT');
      if (tunnel.exitCode === null) await once(tunnel, 'exit');
    },
  };
}

/** A cut connection, or a server not yet back after a restart, as opposed to a wrong or refused statement. */
function isConnectionLoss(e: unknown): boolean {
  const err = e as { message?: string; code?: string };
  return /Connection terminated|ECONNRESET|EPIPE|Client has encountered a connection error/.test(err.message ?? '') || ['57P01', '57P02', '57P03'].includes(err.code ?? '');
}
