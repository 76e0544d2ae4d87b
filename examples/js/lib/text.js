// Prompt text shared by workloads, ported from the Rust SDK's
// sdk/src/text.rs: the seed harness's synthetic document, its size rules,
// and the raw Llama-3 template. Pure, so it is checked against the Rust
// SDK's test vectors under node.

import { wordCount } from './rust.js';

export const TOPICS = [
  'request scheduling',
  'token budget policy',
  'storage queue behavior',
  'cache eviction workflow',
  'fault tolerance and retries',
  'tenant isolation controls',
  'latency observability',
  'service degradation playbook',
  'throughput stabilization plan',
  'maintenance and incident response',
];

export const SUBJECTS = [
  'The runtime coordinator',
  'The storage planner',
  'The batch scheduler',
  'The policy engine',
  'The telemetry worker',
  'The frontend router',
  'The cache reconciler',
  'The replay evaluator',
  'The token allocator',
  'The audit process',
];

export const ACTIONS = [
  'records',
  're-evaluates',
  'normalizes',
  'aggregates',
  'describes',
  'compares',
  'escalates',
  'bounds',
  'prioritizes',
  'documents',
];

export const QUALIFIERS = [
  'under bursty traffic',
  'during long-context prompts',
  'for mixed tenant load',
  'while preserving deterministic replay',
  'with explicit timeout guards',
  'while reducing tail latency spikes',
  'without changing request semantics',
  'under constrained memory tiers',
  'before and after eviction pressure',
  'for compatibility-mode file I/O',
];

/** What the host's fitToTokens repeats to extend a short document. */
export const FILLER =
  ' deterministic checkpoint replay baseline cache latency throughput scheduler queue storage observability policy appendix';

export const LLAMA3_USER_PREFIX = '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n';
export const LLAMA3_ASSISTANT_PREFIX = '<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n';
export const LLAMA3_BEGIN = '<|begin_of_text|>';
export const LLAMA3_ASSISTANT_HEADER = '<|start_header_id|>assistant<|end_header_id|>\n\n';

/** `userText` as a single-turn raw Llama-3 prompt; size it before. */
export function llama3CompletionPrompt(userText) {
  return LLAMA3_USER_PREFIX + userText + LLAMA3_ASSISTANT_PREFIX;
}

/** `messages` ({role, content}) in the raw Llama-3 chat template, ready for the assistant. */
export function llama3ChatText(messages) {
  let out = LLAMA3_BEGIN;
  for (const m of messages) {
    out += `<|start_header_id|>${m.role}<|end_header_id|>\n\n${m.content}<|eot_id|>`;
  }
  return out + LLAMA3_ASSISTANT_HEADER;
}

export const SHORT_CHOICES = [512, 768, 1024, 1536, 2048];
export const LONG_CHOICES = [8192, 12288, 16384, 24576, 32768];

/**
 * The size class ('short' or 'long') and target token count of the next
 * prompt by the seed's rules, as `[class, target]`. `set` is 'short',
 * 'long' or 'mixed'; ranges are `[min, max]`.
 */
export function chooseTarget(set, rng, shortRange, longRange) {
  const short = set === 'mixed' ? rng.nextF64() < 0.5 : set === 'short';
  return short
    ? ['short', sampleTarget(rng, SHORT_CHOICES, shortRange)]
    : ['long', sampleTarget(rng, LONG_CHOICES, longRange)];
}

function sampleTarget(rng, preferred, [min, max]) {
  const inRange = preferred.filter((v) => v >= min && v <= max);
  return inRange.length === 0 ? rng.rangeU32(min, max) : rng.pick(inRange);
}

/** `max(220, floor(targetTokens * 66 / 100))` in integer arithmetic. */
export function documentMinWords(targetTokens) {
  const scaled = Number((BigInt(targetTokens) * 66n) / 100n);
  return Math.max(scaled, 220);
}

/**
 * A synthetic document of at least documentMinWords(targetTokens) words,
 * laid out and drawn exactly as the Rust SDK's `synthetic_document`.
 */
export function syntheticDocument(rng, docId, topic, targetTokens) {
  const minWords = documentMinWords(targetTokens);
  const lines = [
    `Document ID: ${docId}`,
    `Topic: ${topic}`,
    'Instruction: summarize key controls, constraints, and ordered actions in clear prose.',
    '',
  ];
  let words = lines.reduce((n, l) => n + wordCount(l), 0);
  let section = 1;
  while (words < minWords) {
    const start = lines.length;
    pushSection(lines, rng, section, topic);
    for (const l of lines.slice(start)) words += wordCount(l);
    section += 1;
  }
  return lines.join('\n');
}

function pushSection(lines, rng, section, topic) {
  lines.push(`Section ${section}: ${topic} operating notes`);
  const bullets = section % 2 === 0 ? 7 : 6;
  for (let index = 1; index <= bullets; index += 1) {
    const subject = rng.pick(SUBJECTS);
    const action = rng.pick(ACTIONS);
    const qualifier = rng.pick(QUALIFIERS);
    lines.push(
      `${section}.${index} ${subject} ${action} the ${topic} workflow ${qualifier}, ` +
        'tracks queue depth and service latency, and emits deterministic replay markers.',
    );
  }
  lines.push(
    `Checklist ${section}: verify ordering, compare deltas, reconcile counters, and persist trace evidence.`,
  );
  lines.push('');
}
