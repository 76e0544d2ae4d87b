// Rust's text conventions, reproduced exactly where workload output or error
// messages depend on them: `str::trim`, `split_whitespace`, `{:?}` of a
// string, `Display` of an f64, and `str::parse` of integers and floats.
//
// JavaScript's own `trim`, `/\s/`, `String(x)` and `Number(s)` differ from
// Rust's in corner cases (U+FEFF and U+0085 as whitespace, exponent
// notation, hex and empty strings as numbers), and the ports must produce
// the same bytes as the Rust workloads.

import { ESCAPED_RANGES } from './rust-escapes.js';

// Unicode White_Space, which Rust's `char::is_whitespace` tests.
const WHITE_SPACE = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003,
  0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f,
  0x3000,
]);

/** Rust's `char::is_whitespace` for a one-code-point string. */
export function isWhitespace(ch) {
  return WHITE_SPACE.has(ch.codePointAt(0));
}

/** Rust's `str::trim`. */
export function trim(text) {
  const chars = Array.from(text);
  let start = 0;
  let end = chars.length;
  while (start < end && isWhitespace(chars[start])) start += 1;
  while (end > start && isWhitespace(chars[end - 1])) end -= 1;
  return chars.slice(start, end).join('');
}

/** Rust's `str::split_whitespace`: the non-empty runs of non-whitespace. */
export function splitWhitespace(text) {
  const words = [];
  let word = '';
  for (const ch of text) {
    if (isWhitespace(ch)) {
      if (word !== '') words.push(word);
      word = '';
    } else {
      word += ch;
    }
  }
  if (word !== '') words.push(word);
  return words;
}

/** `split_whitespace().count()`, without building the words. */
export function wordCount(text) {
  let count = 0;
  let inWord = false;
  for (let i = 0; i < text.length; i += 1) {
    const unit = text.charCodeAt(i);
    // Every White_Space code point is in the BMP, so UTF-16 units suffice.
    const space = WHITE_SPACE.has(unit);
    if (!space && !inWord) count += 1;
    inWord = !space;
  }
  return count;
}

/**
 * Whether Rust's `{:?}` writes the code point as `\u{…}`: core's
 * `is_printable` and Grapheme_Extend, from the table ./rust-escapes.js
 * generated with the Rust toolchain (SpiderMonkey inside a component has
 * no Unicode property escapes, and its tables would differ anyway).
 */
export function isEscaped(codePoint) {
  let lo = 0;
  let hi = ESCAPED_RANGES.length / 2 - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (codePoint < ESCAPED_RANGES[2 * mid]) hi = mid - 1;
    else if (codePoint > ESCAPED_RANGES[2 * mid + 1]) lo = mid + 1;
    else return true;
  }
  return false;
}

/** Rust's `format!("{:?}", text)` for a `&str`, quotes included. */
export function debugStr(text) {
  let out = '"';
  for (const ch of text) {
    switch (ch) {
      case '\0': out += '\\0'; break;
      case '\t': out += '\\t'; break;
      case '\r': out += '\\r'; break;
      case '\n': out += '\\n'; break;
      case '\\': out += '\\\\'; break;
      case '"': out += '\\"'; break;
      default:
        if (isEscaped(ch.codePointAt(0))) {
          out += `\\u{${ch.codePointAt(0).toString(16)}}`;
        } else {
          out += ch;
        }
    }
  }
  return `${out}"`;
}

/**
 * Rust's `Display` for an f64 (`x.to_string()`): the shortest digits that
 * round-trip, always in positional notation, without a trailing `.0`.
 */
export function displayF64(x) {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  const sign = x < 0 || Object.is(x, -0) ? '-' : '';
  // toExponential() without an argument gives the shortest round-trip digits.
  const [mantissa, exp] = Math.abs(x).toExponential().split('e');
  const digits = mantissa.replace('.', '');
  const point = Number(exp) + 1; // digits before the decimal point
  let body;
  if (digits === '0') {
    body = '0';
  } else if (point <= 0) {
    body = `0.${'0'.repeat(-point)}${digits}`;
  } else if (point >= digits.length) {
    body = digits + '0'.repeat(point - digits.length);
  } else {
    body = `${digits.slice(0, point)}.${digits.slice(point)}`;
  }
  return sign + body;
}

/** Rust's `str::parse::<u32>`: an optional `+`, then ASCII digits; null on failure. */
export function parseU32(text) {
  const n = parseUnsigned(text);
  return n !== null && n <= 0xffffffffn ? Number(n) : null;
}

/** Rust's `str::parse::<u64>` as a BigInt; null on failure. */
export function parseU64(text) {
  const n = parseUnsigned(text);
  return n !== null && n <= 0xffffffffffffffffn ? n : null;
}

function parseUnsigned(text) {
  return /^\+?[0-9]+$/.test(text) ? BigInt(text.replace(/^\+/, '')) : null;
}

/**
 * Rust's `str::parse::<f64>`; null on failure. Accepts what Rust accepts:
 * an optional sign, digits with an optional point (at least one digit), an
 * optional exponent, or `inf`, `infinity`, `nan` in any case.
 */
export function parseF64(text) {
  if (/^[+-]?(inf|infinity|nan)$/i.test(text)) {
    const negative = text.startsWith('-');
    if (/nan/i.test(text)) return NaN;
    return negative ? -Infinity : Infinity;
  }
  if (!/^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/.test(text)) return null;
  // Both parsers round correctly to the nearest double.
  return Number(text);
}
