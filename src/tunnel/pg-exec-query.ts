import pg from 'pg';

/** One result of `hoopctl exec`: node-postgres's own, plus the data of a `COPY … TO STDOUT`. */
export interface ExecResult extends pg.QueryArrayResult {
  /** The rows a COPY … TO STDOUT sent, as the server (or the broker's masker) wrote them. */
  copyOut?: string;
}

/** The parts of pg's Query this relies on: its current result and the switch to the next one of a multi-statement text. */
interface QueryInternals {
  _result: ExecResult & { copyChunks?: Buffer[] };
  _checkForMultirow(): void;
}

/**
 * node-postgres drops CopyData (its Query's handler is a no-op), so `exec -e "copy … to stdout"` printed only the
 * `COPY n` tag. This Query keeps the data with the COPY's own result, in order among the other statements'.
 */
class CopyOutQuery extends pg.Query {
  handleCopyData(msg: { chunk: Buffer }): void {
    const self = this as unknown as QueryInternals;
    // The first chunk after an earlier statement's CommandComplete starts the COPY's own result.
    self._checkForMultirow();
    (self._result.copyChunks ??= []).push(Buffer.from(msg.chunk));
  }
}

/** Runs `text` (one or more statements, simple protocol) and resolves with every statement's result. */
export function queryForExec(client: pg.Client, text: string): Promise<ExecResult[]> {
  return new Promise((resolve, reject) => {
    const callback = (err: Error | null, res: ExecResult | ExecResult[]) => {
      if (err) return reject(err);
      const results = (Array.isArray(res) ? res : [res]) as Array<ExecResult & { copyChunks?: Buffer[] }>;
      for (const r of results) {
        if (r.copyChunks) r.copyOut = Buffer.concat(r.copyChunks).toString('utf8');
        delete r.copyChunks;
      }
      resolve(results);
    };
    client.query(new CopyOutQuery({ text, rowMode: 'array', callback } as pg.QueryConfig));
  });
}
