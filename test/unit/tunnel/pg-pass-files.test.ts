import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { writePgPassFiles } from '../../../src/tunnel/pg-pass-files.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('the pgpass and service files of a tunnel', () => {
  it('are 0600 in a 0700 directory, escape the password for pgpass, and name each other', () => {
    const root = mkdtempSync(join(tmpdir(), 'hoop-pgpass-'));
    dirs.push(root);
    const dir = join(root, 'pg');
    const f = writePgPassFiles({ dir, name: 'app-pg', host: '127.0.0.1', port: 5433, database: 'app', password: 'a:b\\c' });
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    for (const p of [f.passFile, f.serviceFile]) expect(statSync(p).mode & 0o777).toBe(0o600);
    expect(readFileSync(f.passFile, 'utf8')).toBe('127.0.0.1:5433:*:hoopctl:a\\:b\\\\c\n');
    expect(readFileSync(f.serviceFile, 'utf8')).toContain(`[hoopctl-app-pg]\nhost=127.0.0.1\nport=5433\ndbname=app\nuser=hoopctl\npassfile=${f.passFile}\n`);
    expect(f.hint).toBe(`PGSERVICEFILE=${f.serviceFile} psql service=hoopctl-app-pg`);
  });
});
