// `{{name}}`: a sparkhost workload. It decides *what* is sent and in which
// phases; sparkhost decides *when*, sends it and measures it.
//
// This one sends `requests` short prompts in one phase whose load is left to
// the command line (--concurrency, --rate). Edit plan() to send something of
// your own; `sparkhost inspect {{name}}.wasm` shows what describe() says.
// The SDK in ../lib is a port of sparkhost's Rust SDK.

import {
  PromptFormat,
  SplitMix64,
  TOPICS,
  exportWorkload,
  generationParams,
  label,
  message,
  param,
  promptFormatParams,
} from '../lib/sparkhost.js';

/** The validated params of one run. */
export class Config {
  static fromParams(p) {
    const c = new Config();
    c.requests = p.getU32In('requests', 1, 1000000);
    c.generation = p.getGeneration();
    c.format = PromptFormat.fromParams(p);
    return c;
  }
}

export function declaredParams() {
  return [
    param('requests', 'How many requests phase `main` sends (1 to 1,000,000).', '8'),
    ...generationParams({}),
    ...promptFormatParams('completions', 'llama3'),
  ];
}

/**
 * Every request of the run, in order: request `i` asks about a topic drawn
 * from SplitMix64(seed), so one seed always gives the same run.
 */
export function plan(config, seed) {
  const rng = new SplitMix64(seed);
  const requests = [];
  for (let i = 0; i < config.requests; i += 1) {
    const topic = rng.pick(TOPICS);
    const text = `Write two sentences about ${topic}.`;
    requests.push({
      id: `{{name}}-${String(i).padStart(5, '0')}`,
      phase: 'main',
      sessionId: undefined,
      prefixHash: undefined,
      prompt: config.format.render([message('user', text)]),
      generation: config.generation,
      arrival: { tag: 'asap' },
      labels: [label('topic', topic)],
    });
  }
  return requests;
}

/** The planner of one run; plans on the first nextBatch. */
export class MyWorkload {
  static describe() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      description:
        'Short prompts on synthetic topics, one phase (`main`) whose load is left to the command line.',
      params: declaredParams(),
    };
  }

  static create(params, seed) {
    return new MyWorkload(Config.fromParams(params), seed);
  }

  constructor(config, seed) {
    this.config = config;
    this.seed = seed;
    this.pending = null;
  }

  phases() {
    // load undefined: --concurrency / --rate decide.
    return [{ name: 'main', includeInSummary: true, load: undefined }];
  }

  nextBatch(max) {
    this.pending ??= plan(this.config, this.seed);
    const requests = this.pending.splice(0, max);
    return { requests, done: this.pending.length === 0 };
  }
}

export const planner = exportWorkload(MyWorkload);
