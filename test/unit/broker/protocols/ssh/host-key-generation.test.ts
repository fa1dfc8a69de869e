import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { generateParsableKeyPair } from '../../../../../src/lib/ssh-keys.js';

/** What OpenSSH says of a private key file: ssh-keygen derives its public key, or fails. */
function openSshReads(privateKey: string): { ok: boolean; stderr: string } {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-key-'));
  try {
    const path = join(dir, 'key');
    writeFileSync(path, privateKey, { mode: 0o600 });
    const r = spawnSync('ssh-keygen', ['-y', '-f', path], { encoding: 'utf8' });
    return { ok: r.status === 0, stderr: r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('SSH key generation (the broker host key, a rotated backend key, a tunnel client key)', () => {
  it('never hands out a key ssh2 or OpenSSH cannot read back (ssh2 writes a malformed one about once in 256 draws)', () => {
    for (let i = 0; i < 1000; i++) {
      const pair = generateParsableKeyPair('t');
      expect(ssh2.utils.parseKey(pair.private)).not.toBeInstanceOf(Error);
    }
    // What the guard is for: such a draw of ssh2's is refused by OpenSSH's ssh / ssh-keygen, where a good one loads.
    let malformed: string | undefined;
    while (!malformed) {
      const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 't' });
      if (ssh2.utils.parseKey(pair.private) instanceof Error) malformed = pair.private;
    }
    expect(openSshReads(malformed)).toMatchObject({ ok: false, stderr: expect.stringContaining('error in libcrypto') });
    expect(openSshReads(generateParsableKeyPair('hoopctl tunnel key').private)).toMatchObject({ ok: true });
  });
});
