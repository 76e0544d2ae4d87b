// Token counting and fitting behind one interface, ported from the Rust SDK
// (sdk/src/tokens.rs), so planning logic runs under node with WordTokenizer
// and inside a component with HostTokenizer (./host.js).

import { isWhitespace, wordCount } from './rust.js';

/**
 * A test double: one token per run of non-whitespace (Rust's notion of
 * whitespace). Fitting keeps the original text up to the end of the
 * `target`-th word, extending it by repeating `filler` first if needed.
 */
export class WordTokenizer {
  count(text) {
    return wordCount(text);
  }

  fit(text, target, filler) {
    let out = text;
    // A filler without words could never reach the target.
    if (wordCount(filler) > 0) {
      while (this.count(out) < target) out += filler;
    }
    return cutAfterWords(out, target);
  }
}

/** The prefix of `text` that ends right after its `n`-th word. */
function cutAfterWords(text, n) {
  if (n === 0) return '';
  let words = 0;
  let inWord = false;
  let i = 0;
  for (const ch of text) {
    if (isWhitespace(ch)) {
      if (inWord) {
        words += 1;
        if (words === n) return text.slice(0, i);
      }
      inWord = false;
    } else {
      inWord = true;
    }
    i += ch.length;
  }
  return text;
}
