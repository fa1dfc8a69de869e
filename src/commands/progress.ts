/**
 * What a command is waiting for, on stderr so `-o json` stdout stays one clean line. On a terminal it is one status
 * line rewritten in place and erased when done; otherwise each step is a plain line (logs and CI show the steps).
 */
export interface Progress {
  /** Shows what is being waited for now. */
  step(text: string): void;
  /** Erases the terminal's status line (plain lines stay). */
  done(): void;
}

export function progressOn(stream: NodeJS.WriteStream = process.stderr): Progress {
  const live = stream.isTTY === true;
  let shown = false;
  return {
    step(text) {
      if (live) {
        stream.write(`\r\x1b[2K${text}`);
        shown = true;
      } else {
        stream.write(`${text}\n`);
      }
    },
    done() {
      if (live && shown) stream.write('\r\x1b[2K');
      shown = false;
    },
  };
}
