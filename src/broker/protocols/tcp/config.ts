/**
 * Configuration of `tcp` connections: a raw TCP service (Redis, MySQL, an admin port …) behind the same identity,
 * access rules, session limits and locks as every other connection. The broker does not read the protocol, so there
 * are no statement rules; what it records is the bytes each way and when (and the bytes themselves, if asked).
 *
 * ```yaml
 * - name: cache
 *   type: tcp
 *   target: { host: redis.internal, port: 6379 }
 *   access: { groups: [sre] }
 *   recording: { interval: 1s, capture: false }
 * ```
 */
import { z } from 'zod';
import { connectionCommonShape, duration, type ResolveContext } from '../connection-schema.js';

/** Largest capture kept per session unless configured. */
const DEFAULT_MAX_CAPTURE_BYTES = 1024 * 1024;

export const tcpConnectionSchema = z
  .object({
    ...connectionCommonShape,
    type: z.literal('tcp'),
    target: z
      .object({
        host: z.string().min(1),
        port: z.number().int().min(1).max(65535),
        connectTimeout: duration.default(10_000),
      })
      .strict(),
    recording: z
      .object({
        /** Bytes each way are summed over windows this long, one `bytes` event per window with traffic. */
        interval: duration.default(1_000),
        /**
         * Also record the bytes themselves (`capture` events, base64), up to `maxCaptureBytes` a session. They are
         * recorded as they are: the broker cannot mask a protocol it does not read. Off by default.
         */
        capture: z.boolean().default(false),
        maxCaptureBytes: z.number().int().min(0).default(DEFAULT_MAX_CAPTURE_BYTES),
      })
      .strict()
      .default({ interval: 1_000, capture: false, maxCaptureBytes: DEFAULT_MAX_CAPTURE_BYTES }),
  })
  .strict();

export type TcpConnection = z.infer<typeof tcpConnectionSchema>;

/** Nothing to resolve: a raw TCP service takes no credential the broker could inject. */
export function resolveTcpConnection(raw: TcpConnection, _ctx: ResolveContext): TcpConnection {
  return raw;
}
