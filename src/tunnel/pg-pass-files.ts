/**
 * A tunnel's password for libpq clients that should not see it on a command line: a pgpass file and a service file
 * naming it (`PGSERVICEFILE=… psql service=hoopctl-<conn>`), both 0600 in hoopctl's own 0700 config directory,
 * removed when the tunnel closes.
 * @see https://www.postgresql.org/docs/current/libpq-pgpass.html
 * @see https://www.postgresql.org/docs/current/libpq-pgservice.html
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface PgPassFiles {
  passFile: string;
  serviceFile: string;
  service: string;
  /** `PGSERVICEFILE=… psql service=…` */
  hint: string;
}

/** pgpass escapes `:` and a backslash with a backslash. */
function pgpassField(v: string): string {
  return v.replace(/[\\:]/g, (c) => `\\${c}`);
}

function writePrivate(path: string, text: string): void {
  // Written beside and renamed, so a client reading it never sees half a file; 0600 from the start.
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, path);
}

export function writePgPassFiles(o: { dir: string; name: string; host: string; port: number; database: string; password: string }): PgPassFiles {
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  // Per port: two tunnels to one connection each keep their own files.
  const passFile = join(o.dir, `${o.name}.${o.port}.pgpass`);
  const serviceFile = join(o.dir, `${o.name}.${o.port}.service.conf`);
  const service = `hoopctl-${o.name}`;
  writePrivate(passFile, `${o.host}:${o.port}:*:hoopctl:${pgpassField(o.password)}\n`);
  writePrivate(
    serviceFile,
    `# Written by hoopctl connect for its tunnel; removed when the tunnel closes.\n[${service}]\nhost=${o.host}\nport=${o.port}\ndbname=${o.database}\nuser=hoopctl\npassfile=${passFile}\nsslmode=disable\n`,
  );
  const quote = (p: string) => (/^[\w./:@-]+$/.test(p) ? p : `'${p.replace(/'/g, `'\\''`)}'`);
  return { passFile, serviceFile, service, hint: `PGSERVICEFILE=${quote(serviceFile)} psql service=${service}` };
}
