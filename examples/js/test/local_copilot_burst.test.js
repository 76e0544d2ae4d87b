// local_copilot_burst (JavaScript) natively, with the host's tokenizer
// replaced by WordTokenizer: the Rust workload's unit tests, ported.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  CONTEXT_SEED_OFFSET,
  Config,
  LocalCopilotBurst,
  PREFIX_SEED_OFFSET,
  SHARED_PREFIX_HEADER,
  SHARED_PREFIX_TOPIC,
  declaredParams,
  planner,
} from '../local_copilot_burst/app.js';
import { Params, SplitMix64, TOPICS, WordTokenizer, sha256Hex, syntheticDocument } from '../lib/sparkhost.js';

const words = new WordTokenizer();
const config = (pairs) => Config.fromParams(Params.fromPairs(declaredParams(), pairs));
const plans = (pairs, seed) => {
  const c = config(pairs);
  return [c, LocalCopilotBurst.build(c, BigInt(seed), words)];
};
const response = (id, text) => ({ id, phase: '', ok: true, status: 200, text, e2eMs: 1 });
const messages = (r) => {
  assert.equal(r.prompt.tag, 'chat', 'chat by default');
  return r.prompt.val;
};
const get = (r, key) => r.labels.find((l) => l.key === key).value;

const SMALL = [
  ['requests', '10'],
  ['warmup', '0'],
  ['sessions', '2'],
  ['burst-size', '3'],
  ['shared-prefix-tokens', '300'],
  ['context-tokens', '200'],
];

test('defaults match the seed', () => {
  const c = config([]);
  assert.deepEqual([c.requests, c.warmup, c.sessions, c.burstSize], [64, 8, 8, 4]);
  assert.equal(c.sharedPrefixTokens, 3072);
  assert.equal(c.burstGapMs, 8000n, 'sessions × interval');
  assert.equal(c.history, 'real');
  assert.equal(c.format.api, 'chat');
  assert.equal(c.generation.temperature, Math.fround(0.7));
  assert.equal(config([['shared-prefix', 'false']]).sharedPrefixTokens, null);
  assert.equal(config([['burst-gap-ms', '5']]).burstGapMs, 5n);
  for (const bad of [[['sessions', '0']], [['burst-size', '0']], [['history', 'fake']]]) {
    assert.throws(() => config(bad), undefined, JSON.stringify(bad));
  }
});

test('bursts, sessions, turns and arrivals', () => {
  const [c, p] = plans(SMALL, 1);
  const t = p[0].turns;
  assert.deepEqual(
    t.map((x) => [x.session, x.turn, x.burst, x.position]),
    [
      [0, 1, 0, 0], [0, 2, 0, 1], [0, 3, 0, 2], [1, 1, 1, 0], [1, 2, 1, 1],
      [1, 3, 1, 2], [0, 4, 2, 0], [0, 5, 2, 1], [0, 6, 2, 2], [1, 4, 3, 0],
    ],
  );
  assert.deepEqual(t[0].arrival, { tag: 'at-offset-ms', val: 0 });
  assert.deepEqual(t[1].arrival, { tag: 'after-previous-turn', val: 300 });
  assert.deepEqual(t[3].arrival, { tag: 'at-offset-ms', val: 1000 });
  assert.deepEqual(t[6].arrival, { tag: 'after-previous-turn', val: 2000 });
  const first = p[0].nextRequests(c, 100);
  assert.deepEqual(
    first.map((r) => r.id),
    ['copilot_main-00000', 'copilot_main-00003'],
    'one turn per session until its answer arrives',
  );
  assert.equal(first[1].sessionId, 'session_02');
  assert.equal(get(first[1], 'burst_id'), 'burst_0002');
});

test('history grows with the real answers', () => {
  const [c, p] = plans(SMALL, 1);
  const plan = p[0];
  const first = plan.nextRequests(c, 100);
  assert.deepEqual(plan.nextRequests(c, 100), [], 'waiting for answers');
  assert.ok(plan.record(response(first[1].id, 'answer B1')));
  assert.ok(plan.record(response(first[0].id, 'answer A1')));
  const second = plan.nextRequests(c, 100);
  assert.equal(second[0].id, 'copilot_main-00001');
  assert.equal(second[1].id, 'copilot_main-00004');
  const m = messages(second[0]);
  assert.deepEqual(m.map((x) => x.role), ['system', 'user', 'assistant', 'user']);
  assert.equal(m[2].content, 'answer A1');
  assert.deepEqual(m.slice(0, 2), messages(first[0]), 'the previous prompt is a prefix');
  assert.ok(
    m[3].content.startsWith(
      'Session ID: session_01\nBurst ID: burst_0001\nTurn: 2\nTask: In 5 bullets, explain how the ',
    ),
  );
  assert.equal(get(second[0], 'history_turns'), '1');
  assert.equal(plan.record(response('nope', '')), false);
});

test('the prefix is shared and contexts are per session', () => {
  const [c, p] = plans([['history', 'synthetic'], ...SMALL], 7);
  const plan = p[0];
  const shared = plan.sharedPrefix;
  assert.ok(shared.startsWith(SHARED_PREFIX_HEADER));
  assert.equal(words.count(shared), 300);
  const all = plan.nextRequests(c, 100);
  assert.equal(all.length, 10, 'synthetic history plans everything at once');
  assert.ok(plan.finished());
  const hash = sha256Hex(shared);
  for (const r of all) {
    assert.equal(r.prefixHash, hash);
    assert.ok(messages(r)[0].content.startsWith(`${shared}\n\nSession Context:\nSession: `));
  }
  const [a, b] = [messages(all[0])[0].content, messages(all[3])[0].content];
  assert.notEqual(a, b);
  assert.equal(words.count(a.slice(shared.length + 2)), 200);
  const last = messages(all[9]);
  assert.equal(last.length, 1 + 2 * 3 + 1, 'turn 4 of session 2 carries 3 earlier turns');
  assert.ok(last[2].content.startsWith('Reply to copilot_main-00003: five bullets on how the '));
});

test('without prefix or context there is no system message', () => {
  const [c, p] = plans(
    [['shared-prefix', 'false'], ['context-tokens', '0'], ['history', 'synthetic'],
      ['warmup', '0'], ['requests', '2']],
    3,
  );
  const all = p[0].nextRequests(c, 10);
  assert.equal(messages(all[0]).length, 1);
  assert.equal(all[0].prefixHash, undefined);
  const [, q] = plans([['shared-prefix', 'false'], ['warmup', '0']], 3);
  assert.equal(q[0].prefixHash[0], sha256Hex(q[0].system[0]));
});

test('warmup comes first and differs; later phases wait', () => {
  let [c, p] = plans(
    [['history', 'synthetic'], ['requests', '4'], ['warmup', '2'],
      ['shared-prefix-tokens', '50'], ['context-tokens', '0']],
    5,
  );
  const batch = LocalCopilotBurst.next(p, c, 100);
  assert.ok(batch.done);
  assert.deepEqual(batch.requests.map((r) => r.id), [
    'copilot_warmup-00000', 'copilot_warmup-00001', 'copilot_main-00000',
    'copilot_main-00001', 'copilot_main-00002', 'copilot_main-00003',
  ]);
  assert.equal(batch.requests[0].sessionId, 'warmup_session_01');
  assert.notEqual(batch.requests[0].prefixHash, batch.requests[2].prefixHash);

  [c, p] = plans(
    [['requests', '2'], ['warmup', '2'], ['burst-size', '2'],
      ['shared-prefix-tokens', '50'], ['context-tokens', '0']],
    5,
  );
  let b = LocalCopilotBurst.next(p, c, 100);
  assert.deepEqual([b.requests.length, b.done], [1, false]);
  assert.ok(p[0].record(response('copilot_warmup-00000', 'x')));
  b = LocalCopilotBurst.next(p, c, 100);
  assert.deepEqual(b.requests.map((r) => r.id), ['copilot_warmup-00001', 'copilot_main-00000']);
});

test('completions render the Llama-3 history', () => {
  const [c, p] = plans(
    [['api', 'completions'], ['history', 'synthetic'], ['warmup', '0'], ['requests', '2'],
      ['shared-prefix-tokens', '20'], ['context-tokens', '0']],
    5,
  );
  const all = p[0].nextRequests(c, 10);
  assert.equal(all[1].prompt.tag, 'text');
  const t = all[1].prompt.val;
  assert.ok(t.startsWith(
    '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nShared Project Context:\n',
  ));
  assert.ok(t.includes(
    '<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nReply to copilot_main-00000: ',
  ));
  assert.ok(t.endsWith('<|start_header_id|>assistant<|end_header_id|>\n\n'));
});

test('the planner answers on-response and refuses unknown ids', () => {
  const w = LocalCopilotBurst.create(Params.fromPairs(declaredParams(), SMALL), 1n, words);
  assert.deepEqual(w.phases().map((p) => [p.name, p.load.val]), [['copilot_burst', 2]]);
  const b = w.nextBatch(10);
  assert.deepEqual([b.requests.length, b.done], [2, false]);
  w.onResponse(response(b.requests[0].id, 'A'));
  assert.throws(
    () => w.onResponse(response('nope"', '')),
    (e) => e.tag === 'internal' && e.val === 'response for unknown request "nope\\""',
  );
  assert.equal(planner.describe().name, 'local_copilot_burst');
});

test('porting vectors, seed 1337 (PORTING.md §3.4)', () => {
  let rng = new SplitMix64(1337n + PREFIX_SEED_OFFSET);
  let doc = syntheticDocument(rng, 'copilot_main-shared-prefix', SHARED_PREFIX_TOPIC, 3072);
  assert.deepEqual(
    [doc.length, sha256Hex(doc)],
    [16055, 'add7e5d4487a85f0e5b3da4715db6fb8485f2bbef7a4bba193195fae559277e8'],
  );
  rng = new SplitMix64(1337n + CONTEXT_SEED_OFFSET);
  const topic = rng.pick(TOPICS);
  assert.equal(topic, 'service degradation playbook');
  doc = syntheticDocument(rng, 'session_01-context', topic, 1024);
  assert.deepEqual(
    [doc.length, sha256Hex(doc)],
    [5647, '7d4f71e84c747563ed7541d3861cd46da1f3df1ec8fc3904dc039d6d201badf8'],
  );
  const [, p] = plans([['history', 'synthetic']], 1337);
  const main = p[1].turns;
  assert.equal(
    main[0].userText,
    'Session ID: session_01\nBurst ID: burst_0001\nTurn: 1\nTask: In 5 bullets, ' +
      'explain how the policy engine prioritizes the tenant isolation controls pipeline ' +
      'under bursty traffic. Call out one concrete risk and one mitigation.',
  );
  assert.equal(
    main[0].syntheticReply,
    'Reply to copilot_main-00000: five bullets on how the policy engine prioritizes ' +
      'the tenant isolation controls pipeline under bursty traffic, one concrete risk, ' +
      'and one mitigation.',
  );
  assert.equal(
    main[5].userText,
    'Session ID: session_02\nBurst ID: burst_0002\nTurn: 2\nTask: In 5 bullets, ' +
      'explain how the telemetry worker describes the token budget policy pipeline ' +
      'under constrained memory tiers. Call out one concrete risk and one mitigation.',
  );
  assert.ok(p[0].turns[0].userText.startsWith(
    'Session ID: warmup_session_01\nBurst ID: burst_0001\nTurn: 1\nTask: In 5 ' +
      'bullets, explain how the batch scheduler re-evaluates the fault tolerance and ' +
      'retries pipeline under bursty traffic.',
  ));
});
