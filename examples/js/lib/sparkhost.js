// Write sparkhost workloads in JavaScript.
//
// A port of the Rust SDK (workloads/sdk) with the same algorithms, so that a
// workload written with it produces the same requests as its Rust twin for
// the same params, seed and tokenizer:
//
// - SplitMix64: the PRNG every random choice uses (sdk/src/rng.rs).
// - Params: typed parameter access with the Rust SDK's error messages
//   (sdk/src/params.rs).
// - WorkloadError and exportWorkload: from a workload class to the
//   `planner` export componentize-js expects.
// - sha256Hex and the helpers of ./rust.js for byte-exact text.
//
// Everything but ./host.js is pure JavaScript. Under node (unit tests) the
// host's import `sparkhost:workload/host@0.1.0` is mapped to a stand-in by
// test/register-host.js.

export * from './rust.js';
export * from './rng.js';
export * from './params.js';
export * from './text.js';
export * from './prompt.js';
export * from './tokens.js';
export * from './host.js';
export { sha256Hex } from './sha256.js';

import { Params } from './params.js';

/**
 * The `planner` export for a workload class, for
 * `export const planner = exportWorkload(MyWorkload);` in the entry module.
 *
 * The class provides `static describe()`, `static create(params, seed)`
 * (params: a Params over describe()'s defaults; seed: a BigInt),
 * `phases()`, `nextBatch(max)` and optionally `onResponse(summary)`.
 * Throw a WorkloadError to fail a call.
 */
export function exportWorkload(Workload) {
  class Generator {
    constructor(workload) {
      this.workload = workload;
    }

    static create(params, seed) {
      const info = Workload.describe();
      return new Generator(Workload.create(new Params(info.params, params), seed));
    }

    phases() {
      return this.workload.phases();
    }

    nextBatch(max) {
      return this.workload.nextBatch(max);
    }

    onResponse(summary) {
      if (typeof this.workload.onResponse === 'function') this.workload.onResponse(summary);
    }
  }
  return {
    describe: () => Workload.describe(),
    Generator,
  };
}
