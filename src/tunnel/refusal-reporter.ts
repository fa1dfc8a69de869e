/**
 * Tells the broker about every local client a tunnel turned away, one report at a time: refusals that come while a
 * report is on its way are folded into the next one (with their count), so a flood of local connection attempts
 * costs the broker one request at a time and none goes unrecorded.
 */
import { errorMessage } from '../lib/errors.js';
import { reportPeerRefused, type PeerRefusal } from './ws-transport.js';

export interface RefusalReporter {
  report(r: PeerRefusal): void;
  /** Resolves once nothing is waiting to be sent (before the tunnel exits). */
  flush(): Promise<void>;
}

export function refusalReporter(o: {
  broker: string;
  connection: string;
  getToken(): Promise<string>;
  /** A report the broker did not take: printed, since the record is then incomplete. */
  onFailed(error: string): void;
}): RefusalReporter {
  let pending: PeerRefusal | undefined;
  let sending: Promise<void> | undefined;
  const send = async () => {
    while (pending) {
      const r = pending;
      pending = undefined;
      try {
        await reportPeerRefused(o.broker, o.connection, await o.getToken(), r);
      } catch (e) {
        o.onFailed(errorMessage(e));
      }
    }
    sending = undefined;
  };
  return {
    report(r) {
      pending = pending ? { ...r, count: (pending.count ?? 1) + (r.count ?? 1) } : { ...r };
      sending ??= send();
    },
    async flush() {
      await sending;
    },
  };
}
