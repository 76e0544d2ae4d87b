// Typed access to a workload's parameters, ported from the Rust SDK
// (sdk/src/params.rs) with the same parsing rules and error messages, plus
// WorkloadError, what a workload throws to fail a call.

import { debugStr, displayF64, parseF64, parseU32, parseU64, trim } from './rust.js';

/**
 * What a workload throws to fail a call with the WIT `workload-error`:
 * componentize-js lowers the thrown object's `tag` and `val`.
 */
export class WorkloadError extends Error {
  /** @param {'invalid-config'|'unsupported'|'internal'} tag */
  constructor(tag, message) {
    super(`${tag}: ${message}`);
    this.name = 'WorkloadError';
    this.tag = tag;
    this.val = message;
  }

  static invalidConfig(message) {
    return new WorkloadError('invalid-config', message);
  }

  static unsupported(message) {
    return new WorkloadError('unsupported', message);
  }

  static internal(message) {
    return new WorkloadError('internal', message);
  }
}

/** `parameter `name`: "value" is not valid; expected …`, as the Rust SDK. */
export function invalid(name, value, expected) {
  return WorkloadError.invalidConfig(
    `parameter \`${name}\`: ${debugStr(value)} is not valid; expected ${expected}`,
  );
}

/** A `param-info` record for `describe()`. */
export function param(name, description, defaultValue) {
  return { name, description, defaultValue };
}

/** A `label` record. */
export function label(key, value) {
  return { key, value };
}

/** A `chat-message` record. */
export function message(role, content) {
  return { role, content };
}

/** The params of one run: the user's values over the declared defaults. */
export class Params {
  /**
   * @param {{name: string, defaultValue: string}[]} declared from describe()
   * @param {{name: string, value: string}[]} given by the user
   */
  constructor(declared, given) {
    this.entries = declared.map((info) => ({
      name: info.name,
      value: info.defaultValue,
      setByUser: false,
    }));
    for (const p of given) {
      const entry = this.entries.find((e) => e.name === p.name);
      if (entry === undefined) {
        const known = declared.map((i) => i.name);
        throw WorkloadError.invalidConfig(
          `unknown parameter \`${p.name}\`; this workload accepts: ${
            known.length === 0 ? 'no parameters' : known.join(', ')
          }`,
        );
      }
      if (entry.setByUser) {
        throw WorkloadError.invalidConfig(`parameter \`${p.name}\` is given more than once`);
      }
      entry.value = p.value;
      entry.setByUser = true;
    }
  }

  /** From `[name, value]` pairs; convenient in tests. */
  static fromPairs(declared, pairs) {
    return new Params(declared, pairs.map(([name, value]) => ({ name, value })));
  }

  /** All `[name, value]` pairs, in declaration order. */
  pairs() {
    return this.entries.map((e) => [e.name, e.value]);
  }

  isSet(name) {
    return this.entry(name).setByUser;
  }

  getStr(name) {
    return this.entry(name).value;
  }

  getChoice(name, choices) {
    const value = this.getStr(name);
    if (choices.includes(value)) return value;
    throw invalid(name, value, `one of ${choices.join(', ')}`);
  }

  getU32(name) {
    const value = this.getStr(name);
    const n = parseU32(trim(value));
    if (n === null) throw invalid(name, value, 'a whole number from 0 to 4294967295');
    return n;
  }

  /** A whole number of at least `min`. */
  getU32Min(name, min) {
    const value = this.getStr(name);
    const n = parseU32(trim(value));
    if (n === null || n < min) throw invalid(name, value, `a whole number of at least ${min}`);
    return n;
  }

  /** A whole number in lo..=hi. */
  getU32In(name, lo, hi) {
    const value = this.getStr(name);
    const n = parseU32(trim(value));
    if (n === null || n < lo || n > hi) {
      throw invalid(name, value, `a whole number from ${lo} to ${hi}`);
    }
    return n;
  }

  /** A whole number in 0..=u32::MAX, or null when the value is empty. */
  getOptU32(name) {
    const value = this.getStr(name);
    if (value === '') return null;
    const n = parseU32(trim(value));
    if (n === null) throw invalid(name, value, 'a whole number from 0 to 4294967295, or empty');
    return n;
  }

  getF64(name) {
    const value = this.getStr(name);
    const x = finite(value);
    if (x === null) throw invalid(name, value, 'a finite number such as 0.7');
    return x;
  }

  /** A finite number, or null when the value is empty. */
  getOptF64(name) {
    const value = this.getStr(name);
    if (value === '') return null;
    const x = finite(value);
    if (x === null) throw invalid(name, value, 'a finite number such as 0.7, or empty');
    return x;
  }

  /** A BigInt in 0..=u64::MAX, or null when the value is empty. */
  getOptU64(name) {
    const value = this.getStr(name);
    if (value === '') return null;
    const n = parseU64(trim(value));
    if (n === null) {
      throw invalid(name, value, 'a whole number from 0 to 18446744073709551615, or empty');
    }
    return n;
  }

  getBool(name) {
    const value = this.getStr(name);
    switch (trim(value)) {
      case 'true': return true;
      case 'false': return false;
      default: throw invalid(name, value, 'true or false');
    }
  }

  /** `MIN:MAX` with whole numbers 1 <= MIN <= MAX, as `[min, max]`. */
  getRange(name) {
    const value = this.getStr(name);
    const expected = 'MIN:MAX with whole numbers 1 <= MIN <= MAX, such as 512:2048';
    const colon = value.indexOf(':');
    const min = colon < 0 ? null : parseU32(trim(value.slice(0, colon)));
    const max = colon < 0 ? null : parseU32(trim(value.slice(colon + 1)));
    if (min === null || max === null || min === 0 || min > max) {
      throw invalid(name, value, expected);
    }
    return [min, max];
  }

  /** Comma-separated, items verbatim; an empty value is an empty list. */
  getList(name) {
    const value = this.getStr(name);
    return value === '' ? [] : value.split(',');
  }

  /**
   * The sampling params declared by generationParams(): temperature, top-p
   * (as f32 values), stop and request-seed (a BigInt or null).
   */
  getSampling() {
    const temperature = this.getOptF64('temperature');
    if (temperature !== null && temperature < 0) {
      throw invalid('temperature', displayF64(temperature), '0 or more, or empty');
    }
    const topP = this.getOptF64('top-p');
    if (topP !== null && (topP <= 0 || topP > 1)) {
      throw invalid('top-p', displayF64(topP), 'above 0 and at most 1, or empty');
    }
    return {
      temperature: temperature === null ? null : Math.fround(temperature),
      topP: topP === null ? null : Math.fround(topP),
      stop: this.getList('stop'),
      seed: this.getOptU64('request-seed'),
    };
  }

  /** All params declared by generationParams() as one `generation` record. */
  getGeneration() {
    const maxTokens = this.getU32Min('max-tokens', 1);
    const s = this.getSampling();
    return generation(s, maxTokens, this.getBool('ignore-eos'));
  }

  entry(name) {
    const entry = this.entries.find((e) => e.name === name);
    if (entry === undefined) {
      // The workload read a name it never declared: its bug, not the user's.
      throw WorkloadError.internal(`parameter \`${name}\` is read but not declared in describe()`);
    }
    return entry;
  }
}

/**
 * A `generation` record from getSampling()'s fields. Absent options are
 * `undefined`, which componentize-js lowers as `none`.
 */
export function generation(sampling, maxTokens, ignoreEos) {
  return {
    maxTokens,
    temperature: sampling.temperature ?? undefined,
    topP: sampling.topP ?? undefined,
    stop: [...sampling.stop],
    seed: sampling.seed ?? undefined,
    ignoreEos,
  };
}

/** The seed harness's defaults of the generation params, as text. */
export const SEED_GENERATION_DEFAULTS = Object.freeze({
  maxTokens: '256',
  temperature: '0.7',
  topP: '1.0',
  stop: '<|eot_id|>',
  ignoreEos: 'false',
});

/**
 * Declarations of max-tokens, temperature, top-p, stop, request-seed and
 * ignore-eos (the names the host's shorthand flags set), read back with
 * `params.getGeneration()`. `d` overrides SEED_GENERATION_DEFAULTS.
 */
export function generationParams(d = {}) {
  const v = { ...SEED_GENERATION_DEFAULTS, ...d };
  return [
    param('max-tokens', 'max_tokens sent with every request (at least 1).', v.maxTokens),
    param(
      'temperature',
      'temperature sent with every request; empty leaves it out.',
      v.temperature,
    ),
    param('top-p', 'top_p sent with every request, in (0, 1]; empty leaves it out.', v.topP),
    param(
      'stop',
      'Comma-separated stop strings; empty sends none. Strings cannot contain a comma.',
      v.stop,
    ),
    param(
      'request-seed',
      'Sampling seed sent as `seed` with every request; empty leaves it out.',
      '',
    ),
    param(
      'ignore-eos',
      'true asks the server to generate exactly max-tokens tokens.',
      v.ignoreEos,
    ),
  ];
}

function finite(text) {
  const x = parseF64(trim(text));
  return x !== null && Number.isFinite(x) ? x : null;
}
