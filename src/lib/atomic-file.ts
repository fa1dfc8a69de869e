import { closeSync, fsyncSync, openSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Writes `text` beside `path` (same directory, same mode, 0600 when `path` does not exist yet) and fsyncs it; the
 * returned `commit` renames it over `path` (atomic: a reader sees the old file or the new one, never a part), and
 * `abandon` removes it. Used for secrets the broker rotates, where a half-written file would lock it out.
 */
export function stageFile(path: string, text: string): { commit(): void; abandon(): void } {
  let mode = 0o600;
  try {
    mode = statSync(path).mode & 0o777;
  } catch {
    // a new file: owner only
  }
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(temp, 'wx', mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return {
    commit: () => renameSync(temp, path),
    abandon: () => {
      try {
        unlinkSync(temp);
      } catch {
        // already gone
      }
    },
  };
}

/** `stageFile` then its commit. */
export function writeFileAtomic(path: string, text: string): void {
  stageFile(path, text).commit();
}
