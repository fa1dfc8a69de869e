/** What a fuzz session talks through: a tunnel's stream, or a raw socket speaking (and mangling) WebSocket itself. */
export interface Transport {
  write(bytes: Buffer): void;
  /** Ends the client side: the broker should then end the session. */
  end(): void;
  destroy(): void;
  onData(listener: (bytes: Buffer) => void): void;
  /** Once, when the broker (or the network) closed the session. */
  onClose(listener: () => void): void;
  /** How the transport itself saw the end (a WebSocket close code, an HTTP status), if it knows one. */
  closeReason(): string | undefined;
}

/** Waits for `done()` to turn true, re-checked on every event; gives up after `idleMs` without any event. */
export class Progress {
  #wake: (() => void) | undefined;

  notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  /** Resolves true when `done()` holds, false after `idleMs` with no event at all (a hang). */
  async until(done: () => boolean, idleMs: number): Promise<boolean> {
    while (!done()) {
      const woke = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          this.#wake = undefined;
          resolve(false);
        }, idleMs);
        this.#wake = () => {
          clearTimeout(timer);
          resolve(true);
        };
      });
      if (!woke) return done();
    }
    return true;
  }
}
