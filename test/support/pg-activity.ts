import { spawn } from 'node:child_process';
import pg from 'pg';

/**
 * Waits until `sql` runs on the server (pg_stat_activity shows it active): the event a Ctrl-C test waits for before
 * it interrupts, however long a busy machine takes to get there. Polls with its own admin connection.
 */
export async function waitForActiveQuery(clusterUrl: string, sql: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const admin = new pg.Client({ connectionString: clusterUrl });
  await admin.connect();
  try {
    for (;;) {
      const { rows } = await admin.query("select 1 from pg_stat_activity where state = 'active' and query = $1 and pid <> pg_backend_pid()", [sql]);
      if (rows.length > 0) return;
      if (Date.now() > deadline) throw new Error(`timed out waiting for the server to run: ${sql}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await admin.end();
  }
}

/** Whether `sql` is still running on the server. */
export async function isQueryActive(clusterUrl: string, sql: string): Promise<boolean> {
  const admin = new pg.Client({ connectionString: clusterUrl });
  await admin.connect();
  try {
    const { rows } = await admin.query("select 1 from pg_stat_activity where state = 'active' and query = $1 and pid <> pg_backend_pid()", [sql]);
    return rows.length > 0;
  } finally {
    await admin.end();
  }
}

/**
 * Runs a real psql with `args` until `sql` is active on the server, then presses its Ctrl-C (SIGINT): psql sends the
 * CancelRequest itself, on a connection of its own. Resolves with psql's exit code and stderr once it has exited.
 */
export async function interruptPsql(psql: string, args: string[], env: NodeJS.ProcessEnv, clusterUrl: string, sql: string): Promise<{ code: number; stderr: string }> {
  const child = spawn(psql, [...args, '-c', sql], { env });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number>((r) => child.on('exit', (c) => r(c ?? -1)));
  await waitForActiveQuery(clusterUrl, sql);
  child.kill('SIGINT');
  return { code: await exited, stderr };
}
