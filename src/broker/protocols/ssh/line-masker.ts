import { Transform, type TransformCallback } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { applyMask, FLUSH_BYTES, type OutputMask } from './recordings.js';

/**
 * Masks exec output on its way to the client, a line at a time so detectors see whole values. A partial line
 * waits at most `idleMs` (a prompt without a newline must still show). Output with a NUL byte is binary
 * (rsync, tar): from then on it passes untouched, since rewriting it would corrupt it.
 */
export function createLineMasker(mask: OutputMask, idleMs = 50): Transform {
  const decoder = new StringDecoder('utf8');
  let partial = '';
  let binary = false;
  let timer: NodeJS.Timeout | undefined;
  const push = (t: Transform, text: string) => {
    if (text) t.push(Buffer.from(applyMask(text, mask), 'utf8'));
  };
  const t: Transform = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      clearTimeout(timer);
      if (binary || chunk.includes(0)) {
        if (!binary) {
          binary = true;
          push(t, partial + decoder.end());
          partial = '';
        }
        return cb(null, chunk);
      }
      const text = partial + decoder.write(chunk);
      const cut = text.length > FLUSH_BYTES ? text.length : text.lastIndexOf('\n') + 1;
      partial = text.slice(cut);
      push(t, text.slice(0, cut));
      if (partial) {
        timer = setTimeout(() => {
          const rest = partial;
          partial = '';
          push(t, rest);
        }, idleMs);
      }
      cb();
    },
    flush(cb: TransformCallback) {
      clearTimeout(timer);
      if (!binary) push(t, partial + decoder.end());
      partial = '';
      cb();
    },
  });
  return t;
}
