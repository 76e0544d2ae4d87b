// A stand-in for the host's imports under node: tokens are words (the
// SDK's WordTokenizer, like the Rust SDK's native tests), and log lines are
// kept in `logged` for assertions.
import { WordTokenizer } from '../lib/tokens.js';

const words = new WordTokenizer();

export const logged = [];

export function log(level, message) {
  logged.push([level, message]);
}

export function countTokens(text) {
  return words.count(text);
}

export function fitToTokens(text, target, filler) {
  return words.fit(text, target, filler);
}

export function tokenizerId() {
  return 'test:words';
}
