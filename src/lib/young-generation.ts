/**
 * A cap on the broker's young generation (V8's new space), where every request, statement and frame allocates.
 *
 * V8 doubles the new space under a high allocation rate up to two semi-spaces of 16 MB each, and keeps it: 32 MB of
 * resident memory that is mostly garbage. Measured with `npm run bench` (pgbench -S and HTTP parts, the same run
 * order): the broker's RSS peak was 149–160 MB with the default and 128–134 MB with semi-spaces of 4 MB, at the same
 * throughput within the run's noise. `--max-semi-space-size` is read only when the process starts (the broker is
 * often started as `node …/hoopctl broker start`, where no shebang flag applies), but the growth factor is read at
 * each growth: so after each collection the factor is set to what lets the new space grow to the cap and no further
 * (1 once it is there; more again if V8 shrank it while idle).
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** The semi-space size the new space may grow to (MB); the new space is two of them. */
export const SEMI_SPACE_CAP_MB = 4;

/**
 * How far V8 lets the old generation grow past what the last full collection left alive, in percent. V8's own factor
 * is up to 4 (a heap with 20 MB alive may reach 80 MB before it is marked again), chosen from its marking speed; on
 * the broker the old space then fills with what the relays promoted and no longer use (statement events, frames held
 * across an await). Measured (pgbench -S 8 clients through the tunnel and the front door, a fresh broker each, two
 * rounds, load average 6–9): RSS after the load 148/149 MB by default, 134/126 MB at 25 %, 129/127 MB at 50 %, with
 * the broker's CPU per transaction within the rounds' noise (156–189 µs default, 154–156 µs at 50 %). V8 reads the
 * flag each time it sets the next limit, so setting it after start applies from the first collection on.
 */
export const OLD_GENERATION_GROWTH_PERCENT = 50;

/**
 * Bytes of Buffers (outside the JS heap) made since the last collection past which the young generation is collected,
 * and how often that is checked (a stream of 200 MB/s makes 4 MB of them between two checks).
 */
export const BUFFER_COLLECT_MB = 8;
export const BUFFER_CHECK_MS = 20;

/**
 * Holds the broker's V8 heap small: the young generation capped (capYoungGeneration), the old one's growth bounded,
 * and dead Buffers collected (collectDeadBuffers).
 */
export function holdBrokerHeap(): () => void {
  setFlagsFromString(`--heap-growing-percent=${OLD_GENERATION_GROWTH_PERCENT}`);
  const uncap = capYoungGeneration();
  const stopCollecting = collectDeadBuffers();
  return () => {
    stopCollecting();
    uncap();
  };
}

/**
 * Frees the Buffers a stream of bytes leaves behind. Every socket read is a Buffer of its own (up to 64 kB, outside
 * the JS heap, in malloc's), and so is each copy a relay makes; they die at once, but are freed only when V8 collects
 * their small JS objects — and V8 collects the young generation when its 4 MB fill with JS objects, which a byte
 * stream hardly allocates. Through a 1M-row SELECT the dead Buffers reached 25–36 MB before a collection, and malloc
 * keeps what was once touched: the broker's RSS stayed 20–30 MB higher after it. So: when Buffer memory grew by
 * BUFFER_COLLECT_MB since the last collection, the young generation is collected (a scavenge of a 4 MB semi-space:
 * about a millisecond per 8 MB of Buffers made, nothing while none are made). Measured (the same SELECT through the tunnel and the front door, fresh brokers, two rounds, load
 * average 10–12): dead Buffers peaked at 5.5–6.2 MB, RSS after 94/103 MB instead of 124/126, peak 113/115 instead
 * of 130/135, the broker's CPU the same. V8 offers `gc()` only with --expose-gc, which cannot be passed to
 * `node …/hoopctl broker start`: set as a flag, it exposes `gc` in contexts created after it, so one is made for it.
 */
export function collectDeadBuffers(): () => void {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (options: { type: 'minor' | 'major' }) => void;
  setFlagsFromString('--no-expose-gc');
  // V8's count of memory outside its heap rises as each Buffer is made and falls only once collected Buffers are swept:
  // its rises since the last collection are what was made. Reading it costs ~3 µs (0.015 % of a core at this period).
  const external = () => getHeapStatistics().external_memory;
  let last = external();
  let made = 0;
  // Whatever collects (V8 itself or this) starts the count again.
  const restart = () => {
    made = 0;
    last = external();
  };
  const observer = new PerformanceObserver(restart);
  observer.observe({ entryTypes: ['gc'] });
  const timer = setInterval(() => {
    const now = external();
    if (now > last) made += now - last;
    last = now;
    if (made > BUFFER_COLLECT_MB * 2 ** 20) {
      gc({ type: 'minor' });
      restart();
    }
  }, BUFFER_CHECK_MS);
  timer.unref();
  return () => {
    clearInterval(timer);
    observer.disconnect();
  };
}

/** Starts holding the new space at `capMb` per semi-space; returns what stops it. */
export function capYoungGeneration(capMb = SEMI_SPACE_CAP_MB): () => void {
  let factor: number | undefined;
  const check = () => {
    const space = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    if (!space || space.space_size === 0) return;
    // space_size counts both semi-spaces. The factor is set so that the next growth lands on the cap at most, even if
    // it happens before this observer hears of the last collection.
    const semiMb = space.space_size / 2 / 2 ** 20;
    const next = Math.max(1, Math.floor(capMb / semiMb));
    if (next === factor) return;
    factor = next;
    setFlagsFromString(`--semi-space-growth-factor=${next}`);
  };
  const observer = new PerformanceObserver(check);
  observer.observe({ entryTypes: ['gc'] });
  check();
  return () => {
    observer.disconnect();
    setFlagsFromString('--semi-space-growth-factor=2');
  };
}
