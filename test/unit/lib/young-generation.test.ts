import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

/**
 * In a process of its own, as in the broker: a test worker allocates enough on its own (the runner's messages) that V8
 * collects there anyway. The built module is used (`npm test` builds first), as `hoopctl broker start` does.
 */
const MODULE = resolve(import.meta.dirname, '../../../dist/src/lib/young-generation.js');
const STREAM = `
import { collectDeadBuffers } from ${JSON.stringify(MODULE)};
collectDeadBuffers();
const before = process.memoryUsage().arrayBuffers;
let most = 0;
// A byte stream as the relays see it: 160 MB in socket-read-sized Buffers, 1 MB per turn of the event loop, each dead
// at once. V8 alone frees them only when its young generation fills with JS objects, which this hardly makes, or
// when they pass its own trigger for Buffer memory (64 MB).
const turn = (n) => {
  for (let i = 0; i < 16; i++) Buffer.allocUnsafe(64 * 1024).fill(n);
  most = Math.max(most, process.memoryUsage().arrayBuffers - before);
  if (n < 160) setTimeout(turn, 5, n + 1);
  else console.log(JSON.stringify({ most }));
};
turn(1);
`;

describe('the broker heap', () => {
  it('frees the Buffers a byte stream leaves behind as it goes, not once 64 MB of them piled up', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', STREAM]);
    // Collected at 8 MB made since the last collection, checked every 20 ms.
    expect(JSON.parse(stdout).most).toBeLessThan(24 * 2 ** 20);
  });
});
