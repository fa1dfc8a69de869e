/**
 * The broker's start of the SQL policy engine (libpg_query compiled to WASM), with the one V8 setting it needs.
 *
 * V8 first runs WASM code through its baseline compiler (Liftoff) and recompiles a function with the optimising one
 * (TurboFan) only after it has run for a while. The parser has thousands of functions, most of them reached by few
 * statements: measured over the bypass-attempt suite (scripts/bench/verdict-cost.ts), judgements stayed 3–5× slower
 * than their steady cost for the first ~30 rounds, and that was the verdict's p99 tail (0.5–2 ms). `--no-liftoff`
 * compiles each parser function with TurboFan when it is first called: the first judgement of a new kind of statement
 * pays that once (a few ms), every later one runs at its steady cost, and the resident memory is lower (no second copy
 * of each function's code). It is set here, before the parser's module is compiled (WASM flags are read when a module
 * is compiled), so it reaches only code compiled from now on; the broker's other WASM (none on the hot path) too.
 */
import { setFlagsFromString } from 'node:v8';
import { initPolicyEngine } from '../policy/index.js';

export function startPolicyEngine(): Promise<void> {
  setFlagsFromString('--no-liftoff');
  return initPolicyEngine();
}
