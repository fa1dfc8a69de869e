import { Duplex } from 'node:stream';

/**
 * Two connected in-memory streams: what one side writes, the other reads, with backpressure (a write waits until the
 * reader asks for more). An MCP call on the broker's /mcp speaks PostgreSQL, SSH or HTTP on one end while the
 * connection type's module serves the other, exactly as it serves a tunnel. Node 20 has no `stream.duplexPair`.
 */
export function streamPair(options: { onWrite?: (side: 0 | 1) => void } = {}): [Duplex, Duplex] {
  const waiting: Array<(() => void) | undefined> = [undefined, undefined];
  const sides: Duplex[] = [];
  const make = (me: 0 | 1): Duplex => {
    const peer = (1 - me) as 0 | 1;
    return new Duplex({
      read() {
        // The reader wants more: let the peer's held write complete.
        const cb = waiting[peer];
        waiting[peer] = undefined;
        cb?.();
      },
      write(chunk: Buffer, _enc, cb) {
        // A copy: writers (ssh2) may reuse their buffer once the write is done, before the reader has read it.
        const copy = Buffer.from(chunk);
        options.onWrite?.(me);
        // Delivered on the next tick, as a socket would: a reader that answers at once (an SSH key exchange) must
        // not re-enter the writer while it is still handling its own write.
        process.nextTick(() => {
          const other = sides[peer]!;
          if (other.destroyed) return cb(new Error('the other end of the stream is closed'));
          if (other.push(copy)) cb();
          else waiting[me] = cb;
        });
      },
      final(cb) {
        process.nextTick(() => {
          if (!sides[peer]!.destroyed) sides[peer]!.push(null);
          cb();
        });
      },
      destroy(err, cb) {
        const other = sides[peer]!;
        const held = waiting[me];
        waiting[me] = undefined;
        held?.();
        if (!other.destroyed) {
          other.push(null);
          other.destroy();
        }
        cb(err);
      },
    });
  };
  sides.push(make(0), make(1));
  return [sides[0]!, sides[1]!];
}
