// The host's services (`sparkhost:workload/host@0.1.0`), identical whatever
// language a workload is written in. They exist only inside a component;
// the unit tests map the import to a stand-in (test/host-double.js).

import * as host from 'sparkhost:workload/host@0.1.0';

/** Writes to the host's log; `level` is trace, debug, info, warn or error. */
export function log(level, message) {
  host.log(level, message);
}

/** Tokens in `text` under the run's tokenizer, without special tokens. */
export function countTokens(text) {
  return host.countTokens(text);
}

/**
 * `text` cut or extended (by repeating `filler`) to exactly `target` tokens
 * where the tokenizer allows it. Size prompts with it before applying any
 * template, so the template is never cut or padded.
 */
export function fitToTokens(text, target, filler) {
  return host.fitToTokens(text, target, filler);
}

/** `heuristic:v1`, or `sha256:<hex>` of the run's tokenizer file. */
export function tokenizerId() {
  return host.tokenizerId();
}

/** The run's tokenizer, with WordTokenizer's interface. */
export class HostTokenizer {
  count(text) {
    return host.countTokens(text);
  }

  fit(text, target, filler) {
    return host.fitToTokens(text, target, filler);
  }
}
