// `reuse_verify` in JavaScript: a port of workloads/reuse_verify (Rust) that
// produces byte-identical requests for the same params, seed and tokenizer
// (algorithm: workloads/PORTING.md §2).
//
// One prompt is sent `repeats` times, each in its own phase (reuse_1,
// reuse_2, …) at concurrency 1: the first send is cold, every later one
// should be served from the prefix cache.

import {
  FILLER,
  HostTokenizer,
  PromptFormat,
  SplitMix64,
  TOPICS,
  chooseTarget,
  exportWorkload,
  generationParams,
  label,
  message,
  param,
  promptFormatParams,
  sha256Hex,
  syntheticDocument,
} from '../lib/sparkhost.js';

/** The seed's prompt id; the document carries it in its first line. */
const PROMPT_ID = 'reuse-00000';

/** The validated params of one run. */
export class Config {
  static fromParams(p) {
    const c = new Config();
    c.set = p.getChoice('prompt-set', ['short', 'long']);
    c.repeats = p.getU32In('repeats', 2, 10);
    c.shortRange = p.getRange('short-range');
    c.longRange = p.getRange('long-range');
    c.generation = p.getGeneration();
    c.format = PromptFormat.fromParams(p);
    return c;
  }
}

export function declaredParams() {
  return [
    param(
      'repeats',
      'How many times the prompt is sent, each in its own phase reuse_1..reuse_N ' +
        '(2 to 10; the seed allowed only 2 or 3).',
      '3',
    ),
    param(
      'prompt-set',
      'Size rule of the prompt: short (from short-range) or long (from long-range).',
      'short',
    ),
    param(
      'short-range',
      'MIN:MAX target user-text tokens for a short prompt. A uniform pick among 512, ' +
        '768, 1024, 1536, 2048 inside the range; uniform in MIN..=MAX when none is inside.',
      '512:2048',
    ),
    param(
      'long-range',
      'MIN:MAX target user-text tokens for a long prompt. A uniform pick among 8192, ' +
        '12288, 16384, 24576, 32768 inside the range; uniform in MIN..=MAX when none is ' +
        'inside. The default does not fit an engine capped at 8192 tokens; use e.g. ' +
        '6000:7600 there.',
      '8192:32768',
    ),
    ...generationParams({ temperature: '0' }),
    ...promptFormatParams('completions', 'llama3'),
  ];
}

/** Name of the phase of repeat `k` (1-based). */
export function phaseName(k) {
  return `reuse_${k}`;
}

/**
 * Every request of the run, in order (see PORTING.md §2): one document
 * drawn from SplitMix64(seed), fitted by `tok`, sent `repeats` times.
 */
export function plan(config, seed, tok) {
  const rng = new SplitMix64(seed);
  const [cls, target] = chooseTarget(config.set, rng, config.shortRange, config.longRange);
  const topic = rng.pick(TOPICS);
  const document = syntheticDocument(rng, PROMPT_ID, topic, target);
  const userText = tok.fit(document, target, FILLER);
  const prompt = config.format.render([message('user', userText)]);
  const prefixHash = sha256Hex(userText);
  const requests = [];
  for (let k = 1; k <= config.repeats; k += 1) {
    requests.push({
      id: `${PROMPT_ID}-r${k}`,
      phase: phaseName(k),
      sessionId: undefined,
      prefixHash,
      prompt,
      generation: config.generation,
      arrival: { tag: 'asap' },
      labels: [
        label('prompt_set', cls),
        label('target_tokens', String(target)),
        label('reuse_prompt_id', PROMPT_ID),
        label('repeat', String(k)),
        label('repeats', String(config.repeats)),
      ],
    });
  }
  return requests;
}

/** The planner of one run; plans on the first nextBatch. */
export class ReuseVerify {
  static describe() {
    return {
      name: 'reuse_verify',
      version: '0.1.0',
      description:
        'One synthetic prompt sent `repeats` times, each in its own phase ' +
        '(reuse_1, reuse_2, …) at concurrency 1, temperature 0 by default: ' +
        'the first send is cold, the others should hit the prefix cache. ' +
        'Every repeat has the same prompt bytes and prefix_hash (the seed ' +
        "harness's reuse_verify scenario).",
      params: declaredParams(),
    };
  }

  static create(params, seed, tok = new HostTokenizer()) {
    return new ReuseVerify(Config.fromParams(params), seed, tok);
  }

  constructor(config, seed, tok) {
    this.config = config;
    this.seed = seed;
    this.tok = tok;
    // Planned on the first nextBatch, so create makes no host calls.
    this.pending = null;
  }

  phases() {
    const phases = [];
    for (let k = 1; k <= this.config.repeats; k += 1) {
      phases.push({ name: phaseName(k), includeInSummary: true, load: { tag: 'closed', val: 1 } });
    }
    return phases;
  }

  nextBatch(max) {
    this.pending ??= plan(this.config, this.seed, this.tok);
    const requests = this.pending.splice(0, max);
    return { requests, done: this.pending.length === 0 };
  }
}

export const planner = exportWorkload(ReuseVerify);
