import type { Review } from '../api/review.js';
import { BrokerClient } from '../api/broker-client.js';

/** The events of a `text/event-stream` body, as they arrive (comments and keep-alives skipped). */
export async function* serverSentEvents(body: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>): AsyncGenerator<{ event?: string; data: string }> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
      if (event !== undefined || data) yield { event, data };
    }
  }
}

export interface ReviewStream {
  close(): void;
}

/**
 * Follows the broker's review event stream (server-sent events) and reconnects with backoff when it drops.
 * `getToken` runs on every (re)connect so a long-open console keeps a fresh token.
 */
export function followReviews(
  broker: string,
  getToken: () => Promise<string>,
  handlers: { onReview(review: Review): void; onState(connected: boolean): void; onError?(e: Error): void },
): ReviewStream {
  const controller = new AbortController();
  const client = new BrokerClient(broker, getToken);
  let delay = 500;
  const run = async () => {
    while (!controller.signal.aborted) {
      try {
        const body = await client.stream('/api/v1/reviews/stream', controller.signal);
        handlers.onState(true);
        delay = 500;
        for await (const { event, data } of serverSentEvents(body)) {
          if (event === 'review' && data) handlers.onReview(JSON.parse(data) as Review);
        }
      } catch (e) {
        if (controller.signal.aborted) return;
        handlers.onError?.(e as Error);
      }
      handlers.onState(false);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10_000);
    }
  };
  void run();
  return { close: () => controller.abort() };
}
