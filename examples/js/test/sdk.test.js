// The JavaScript SDK against the Rust SDK's own outputs
// (examples/testdata/sdk-vectors.json, written by examples/testdata/vectors-gen).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  PromptFormat,
  Params,
  SplitMix64,
  WordTokenizer,
  WorkloadError,
  chooseTarget,
  debugStr,
  displayF64,
  documentMinWords,
  exportWorkload,
  generationParams,
  llama3CompletionPrompt,
  message,
  param,
  promptFormatParams,
  sha256Hex,
  syntheticDocument,
} from '../lib/sparkhost.js';

const V = JSON.parse(
  readFileSync(new URL('../../testdata/sdk-vectors.json', import.meta.url), 'utf8'),
);

const hex64 = (x) => x.toString(16).padStart(16, '0');

function f32Bits(x) {
  const view = new DataView(new ArrayBuffer(4));
  view.setFloat32(0, x);
  return view.getUint32(0).toString(16).padStart(8, '0');
}

/** `{ok: value}` or `{err: [tag, message]}`, like the vectors. */
function outcome(f, toJson = (v) => v) {
  try {
    return { ok: toJson(f()) };
  } catch (e) {
    if (!(e instanceof WorkloadError)) throw e;
    return { err: [e.tag, e.val] };
  }
}

const declared = (rows) => rows.map(([name, description, defaultValue]) => param(name, description, defaultValue));

test('SplitMix64 draws match the Rust SDK', () => {
  for (const v of V.rng) {
    const seed = BigInt(v.seed);
    let r = new SplitMix64(seed);
    assert.deepEqual(v.next_u64.map(() => hex64(r.nextU64())), v.next_u64, `seed ${v.seed}`);
    r = new SplitMix64(seed);
    assert.deepEqual(v.next_f64.map(() => r.nextF64()), v.next_f64);
    r = new SplitMix64(seed);
    for (const [lo, hi, want] of v.range_u32) assert.equal(r.rangeU32(lo, hi), want);
    r = new SplitMix64(seed);
    const picks = v.pick_sizes.map((n) => r.pick([...Array(n).keys()]));
    assert.deepEqual(picks, v.pick);
  }
});

test('SplitMix64 test vectors of sdk/src/rng.rs', () => {
  const r = new SplitMix64(0n);
  assert.deepEqual(
    [r.nextU64(), r.nextU64(), r.nextU64(), r.nextU64()],
    [0xe220a8397b1dcdafn, 0x6e789e6aa1b965f4n, 0x06c45d188009454fn, 0xf88bb8a8724c81ecn],
  );
  const s = new SplitMix64(1337n);
  assert.deepEqual([...Array(8)].map(() => s.rangeU32(1, 6)), [2, 6, 3, 3, 1, 6, 6, 2]);
  assert.equal(new SplitMix64(0).nextF64(), 0.8833108082136426);
  assert.throws(() => s.rangeU32(2, 1));
  assert.throws(() => s.pick([]));
});

test('synthetic documents match the Rust SDK', () => {
  for (const d of V.text.documents) {
    const r = new SplitMix64(BigInt(d.seed));
    const doc = syntheticDocument(r, d.doc_id, d.topic, d.target);
    assert.equal(new TextEncoder().encode(doc).length, d.len, d.doc_id);
    assert.equal(sha256Hex(doc), d.sha256, d.doc_id);
    assert.equal([...doc].slice(0, 400).join(''), d.head);
    assert.equal(hex64(r.nextU64()), d.next_u64_after, 'no extra draws');
  }
  for (const [t, want] of V.text.document_min_words) assert.equal(documentMinWords(t), want);
  assert.equal(llama3CompletionPrompt('hello\nworld'), V.text.llama3_completion_prompt);
});

test('size rules match the Rust SDK', () => {
  for (const c of V.text.choose_target) {
    const r = new SplitMix64(BigInt(c.seed));
    const got = c.targets.map(() => chooseTarget(c.set, r, c.short_range, c.long_range));
    assert.deepEqual(got, c.targets, `${c.set} ${c.short_range} ${c.long_range}`);
  }
});

test('prompt rendering and its params match the Rust SDK', () => {
  const messages = V.prompt.messages.map(([role, content]) => message(role, content));
  for (const r of V.prompt.renders) {
    const pairs = [['api', r.api]];
    if (r.template !== '') pairs.push(['template', r.template]);
    const p = Params.fromPairs(promptFormatParams('completions', 'llama3'), pairs);
    const got = PromptFormat.fromParams(p).render(messages);
    const want = r.prompt.text !== undefined
      ? { tag: 'text', val: r.prompt.text }
      : { tag: 'chat', val: r.prompt.chat.map(([role, content]) => ({ role, content })) };
    assert.deepEqual(got, want);
  }
  assert.deepEqual(
    promptFormatParams('completions', 'llama3'),
    declared(V.prompt.params_completions_llama3),
  );
  assert.deepEqual(promptFormatParams('chat', 'none'), declared(V.prompt.params_chat_none));
  for (const c of V.params.prompt_format) {
    const p = Params.fromPairs(promptFormatParams('chat', 'llama3'), c.pairs);
    const got = outcome(() => PromptFormat.fromParams(p), (f) => [f.api, f.template]);
    assert.deepEqual(got, c.format, JSON.stringify(c.pairs));
  }
});

test('sha256 matches', () => {
  for (const [text, want] of V.sha256) assert.equal(sha256Hex(text), want);
  assert.equal(sha256Hex('x'.repeat(1000)), sha256Hex('x'.repeat(1000)));
});

test('WordTokenizer matches the Rust SDK test double', () => {
  const t = new WordTokenizer();
  for (const [text, target, filler, count, fitted] of V.word_tokenizer) {
    assert.equal(t.count(text), count, JSON.stringify(text));
    assert.equal(t.fit(text, target, filler), fitted, JSON.stringify([text, target]));
  }
});

test("Rust's {:?} of strings and Display of f64", () => {
  for (const [text, want] of V.debug_str) assert.equal(debugStr(text), want);
  for (const [x, want] of V.display_f64) assert.equal(displayF64(x), want, String(x));
});

test('Params getters and messages match the Rust SDK', () => {
  const decl = declared(V.params.declared);
  for (const c of V.params.cases) {
    const p = Params.fromPairs(decl, [['v', c.value]]);
    const name = JSON.stringify(c.value);
    assert.deepEqual(outcome(() => p.getStr('v')), c.get_str, name);
    assert.deepEqual(outcome(() => p.getU32('v')), c.get_u32, name);
    assert.deepEqual(outcome(() => p.getU32Min('v', 1)), c.get_u32_min_1, name);
    assert.deepEqual(outcome(() => p.getU32In('v', 2, 10)), c.get_u32_in_2_10, name);
    assert.deepEqual(outcome(() => p.getOptU32('v')), c.get_opt_u32, name);
    assert.deepEqual(outcome(() => p.getF64('v')), c.get_f64, name);
    assert.deepEqual(outcome(() => p.getOptF64('v')), c.get_opt_f64, name);
    assert.deepEqual(
      outcome(() => p.getOptU64('v'), (n) => (n === null ? null : n.toString())),
      c.get_opt_u64,
      name,
    );
    assert.deepEqual(outcome(() => p.getBool('v')), c.get_bool, name);
    assert.deepEqual(outcome(() => p.getRange('v')), c.get_range, name);
    assert.deepEqual(outcome(() => p.getList('v')), c.get_list, name);
    assert.deepEqual(
      outcome(() => p.getChoice('v', ['short', 'long'])),
      c.get_choice_short_long,
      name,
    );
  }
  const m = V.params.misc;
  assert.deepEqual(outcome(() => Params.fromPairs(decl, [['vv', '1']]), () => null), m.unknown);
  assert.deepEqual(
    outcome(() => Params.fromPairs([], [['vv', '1']]), () => null),
    m.unknown_none_declared,
  );
  assert.deepEqual(
    outcome(() => Params.fromPairs(decl, [['w', '1'], ['w', '2']]), () => null),
    m.twice,
  );
  const p = Params.fromPairs(decl, []);
  assert.deepEqual(outcome(() => p.getStr('nope')), m.undeclared_read);
  assert.deepEqual(outcome(() => p.isSet('v')), m.is_set_default);
  assert.deepEqual(outcome(() => Params.fromPairs(decl, [['v', '1']]).isSet('v')), m.is_set_user);
});

test('generation params match the Rust SDK', () => {
  assert.deepEqual(generationParams(), declared(V.params.generation_params_seed));
  assert.deepEqual(
    generationParams({ maxTokens: '64', temperature: '0', topP: '', stop: '', ignoreEos: 'true' }),
    declared(V.params.generation_params_custom),
  );
  for (const c of V.params.generation) {
    const p = Params.fromPairs(generationParams(), c.pairs);
    const got = outcome(
      () => p.getGeneration(),
      (g) => ({
        max_tokens: g.maxTokens,
        temperature: g.temperature === undefined ? null : f32Bits(g.temperature),
        top_p: g.topP === undefined ? null : f32Bits(g.topP),
        stop: g.stop,
        seed: g.seed === undefined ? null : g.seed.toString(),
        ignore_eos: g.ignoreEos,
      }),
    );
    assert.deepEqual(got, c.generation, JSON.stringify(c.pairs));
  }
});

test('exportWorkload merges params and passes errors through', () => {
  class Echo {
    static describe() {
      return { name: 'echo', version: '0.1.0', description: 'd', params: [param('n', 'N.', '3')] };
    }

    static create(params, seed) {
      return new Echo(params.getU32('n'), seed);
    }

    constructor(n, seed) {
      this.n = n;
      this.seed = seed;
    }

    phases() {
      return [];
    }

    nextBatch() {
      return { requests: [], done: true, n: this.n, seed: this.seed };
    }
  }
  const planner = exportWorkload(Echo);
  assert.equal(planner.describe().name, 'echo');
  const g = planner.Generator.create([{ name: 'n', value: '5' }], 9n);
  assert.deepEqual(g.nextBatch(10), { requests: [], done: true, n: 5, seed: 9n });
  g.onResponse({});
  assert.throws(
    () => planner.Generator.create([{ name: 'n', value: 'x' }], 9n),
    (e) => e.tag === 'invalid-config' && e.val.includes('"x"'),
  );
});
