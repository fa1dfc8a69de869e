/**
 * The well-formed session beside the fuzz: `hoopctl connect` as its own process and node-postgres through it, asking
 * questions whose answers it checks, for as long as the fuzz runs. Any error or wrong answer is a failure.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import pg from 'pg';
import type { FuzzDeployment } from './deployment.js';

export interface ControlSession {
  /** Round trips answered correctly so far. */
  readonly answered: number;
  /** The first failure, if any. */
  readonly failure: string | undefined;
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
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'fuzz', database, password });
  await client.connect();
  let answered = 0;
  let failure: string | undefined;
  let stopping = false;
  // A connection lost between queries is a failure of the control session, reported, never a crash of the fuzzer.
  client.on('error', (e) => {
    if (!stopping) failure ??= `connection lost after ${answered} answers: ${e.message}; hoopctl connect: ${stderr.slice(-500)}`;
  });
  const loop = (async () => {
    for (let i = 0; !stopping && !failure; i++) {
      try {
        // Both protocols: a parameterised statement (Parse/Bind/Execute) and a simple query.
        const { rows } = await client.query('select $1::int * 2 as n, $2::text as tag', [i, `control-${i}`]);
        const simple = await client.query({ text: `select ${i} + 1 as m`, rowMode: 'array' });
        if (rows[0]?.n !== i * 2 || rows[0]?.tag !== `control-${i}` || simple.rows[0]?.[0] !== i + 1) failure = `wrong answer at round ${i}: ${JSON.stringify(rows)} ${JSON.stringify(simple.rows)}`;
        else answered++;
      } catch (e) {
        if (!stopping) failure = `round ${i}: ${(e as Error).message}`;
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
    async stop() {
      stopping = true;
      await loop;
      await client.end().catch(() => undefined);
      tunnel.kill('SIGINT');
      if (tunnel.exitCode === null) await once(tunnel, 'exit');
    },
  };
}
