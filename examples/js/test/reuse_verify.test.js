// reuse_verify (JavaScript) natively, with the host's tokenizer replaced by
// WordTokenizer: the Rust workload's unit tests, ported.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  Config,
  ReuseVerify,
  declaredParams,
  plan,
  planner,
} from '../reuse_verify/app.js';
import {
  LLAMA3_ASSISTANT_PREFIX,
  LLAMA3_USER_PREFIX,
  Params,
  SplitMix64,
  TOPICS,
  WordTokenizer,
  WorkloadError,
  chooseTarget,
  label,
  sha256Hex,
  syntheticDocument,
} from '../lib/sparkhost.js';

const words = new WordTokenizer();
const config = (pairs) => Config.fromParams(Params.fromPairs(declaredParams(), pairs));
const requests = (pairs, seed) => plan(config(pairs), BigInt(seed), words);

test('defaults match the seed', () => {
  const c = config([]);
  assert.deepEqual([c.repeats, c.set], [3, 'short']);
  assert.deepEqual([c.shortRange, c.longRange], [[512, 2048], [8192, 32768]]);
  assert.equal(c.generation.maxTokens, 256);
  assert.equal(c.generation.temperature, 0);
  assert.deepEqual(c.generation.stop, ['<|eot_id|>']);
  assert.equal(c.format.api, 'completions');
});

test('bad params are invalid-config', () => {
  for (const pairs of [
    [['repeats', '1']],
    [['repeats', '11']],
    [['prompt-set', 'mixed']],
    [['api', 'chat'], ['template', 'none']],
  ]) {
    assert.throws(
      () => config(pairs),
      (e) => e instanceof WorkloadError && e.tag === 'invalid-config',
      JSON.stringify(pairs),
    );
  }
  assert.equal(config([['repeats', '10']]).repeats, 10);
});

test('every repeat is the same request in its own phase', () => {
  const all = requests([['repeats', '4']], 1337);
  assert.equal(all.length, 4);
  all.forEach((r, i) => {
    const k = i + 1;
    assert.equal(r.id, `reuse-00000-r${k}`);
    assert.equal(r.phase, `reuse_${k}`);
    assert.deepEqual(r.prompt, all[0].prompt);
    assert.equal(r.prefixHash, all[0].prefixHash);
    assert.deepEqual(r.generation, all[0].generation);
    assert.ok(r.labels.some((l) => l.key === 'repeat' && l.value === String(k)));
  });
  assert.equal(all[0].prompt.tag, 'text');
  assert.ok(
    all[0].prompt.val.startsWith(
      '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nDocument ID: reuse-00000\n',
    ),
  );
});

test('the prompt is fitted before the template', () => {
  const [r] = requests([['short-range', '700:700']], 5);
  const text = r.prompt.val;
  assert.ok(text.startsWith(LLAMA3_USER_PREFIX) && text.endsWith(LLAMA3_ASSISTANT_PREFIX));
  const user = text.slice(LLAMA3_USER_PREFIX.length, text.length - LLAMA3_ASSISTANT_PREFIX.length);
  assert.equal(words.count(user), 700);
  assert.equal(r.prefixHash, sha256Hex(user));
  assert.deepEqual(r.labels[1], label('target_tokens', '700'));
});

test('same seed, same plan', () => {
  assert.deepEqual(requests([], 9), requests([], 9));
  assert.notDeepEqual(requests([], 9)[0].prompt, requests([], 10)[0].prompt);
});

test('phases are serial; batches hand the plan out in order', () => {
  const w = ReuseVerify.create(Params.fromPairs(declaredParams(), [['repeats', '3']]), 1n, words);
  const phases = w.phases();
  assert.deepEqual(
    phases.map((p) => [p.name, p.includeInSummary, p.load]),
    [1, 2, 3].map((k) => [`reuse_${k}`, true, { tag: 'closed', val: 1 }]),
  );
  const first = w.nextBatch(2);
  assert.deepEqual([first.requests.length, first.done], [2, false]);
  const second = w.nextBatch(2);
  assert.deepEqual([second.requests.map((r) => r.id), second.done], [['reuse-00000-r3'], true]);
  assert.equal(planner.describe().name, 'reuse_verify');
});

test('porting vectors, seed 1337 (PORTING.md §2)', () => {
  for (const [set, longRange, cls, target, len, sha] of [
    ['short', [8192, 32768], 'short', 512, 2871,
      '55c71e25536ad2b134bc4cc06bd92bdab16e578cd2cbb7790b84c54e20df337c'],
    ['long', [6000, 7600], 'long', 7120, 35063,
      '21024d1532efdb18221dcc022892296c964329be6d59faec417019f5dcc56109'],
  ]) {
    const rng = new SplitMix64(1337n);
    assert.deepEqual(chooseTarget(set, rng, [512, 2048], longRange), [cls, target]);
    const topic = rng.pick(TOPICS);
    assert.equal(topic, 'cache eviction workflow');
    const doc = syntheticDocument(rng, 'reuse-00000', topic, target);
    assert.deepEqual([new TextEncoder().encode(doc).length, sha256Hex(doc)], [len, sha]);
  }
});
