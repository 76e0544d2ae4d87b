// `local_copilot_burst` in JavaScript: a port of workloads/local_copilot_burst
// (Rust) that produces byte-identical requests for the same params, seed and
// tokenizer (algorithm: workloads/PORTING.md §3).
//
// `sessions` developers share one project context (an optional shared
// prefix) and each has a context of their own. A developer works in bursts
// of `burst-size` turns, each sent `think-time-ms` after the previous answer,
// then goes quiet for `burst-gap-ms`. Every turn carries the session's whole
// conversation so far, with the model's real answers (`history=real`) or a
// fixed sentence per answer (`history=synthetic`).

import {
  ACTIONS,
  FILLER,
  HostTokenizer,
  PromptFormat,
  QUALIFIERS,
  SUBJECTS,
  SplitMix64,
  TOPICS,
  WorkloadError,
  debugStr,
  exportWorkload,
  generationParams,
  label,
  message,
  param,
  promptFormatParams,
  sha256Hex,
  syntheticDocument,
} from '../lib/sparkhost.js';

/** Seed offsets (u64, wrapping) of the warmup phase, the shared prefix and the contexts. */
export const WARMUP_SEED_OFFSET = 17n;
export const PREFIX_SEED_OFFSET = 1000003n;
export const CONTEXT_SEED_OFFSET = 2000003n;

/** The first lines of the shared prefix (the seed's). */
export const SHARED_PREFIX_HEADER =
  'Shared Project Context:\n' +
  'Repository scope: inference runtime, telemetry, and runbook controls.\n' +
  'Coding constraints: deterministic outputs, explicit guardrails, and operator-safe defaults.\n\n';
/** Topic of the shared-prefix document (the seed's). */
export const SHARED_PREFIX_TOPIC = 'local project copilot baseline context';

const wrapU64 = (x) => BigInt.asUintN(64, x);

/** The validated params of one run. */
export class Config {
  static fromParams(p) {
    const c = new Config();
    // Read in the Rust order, so the first bad param is the one reported.
    c.sessions = p.getU32Min('sessions', 1);
    c.burstIntervalMs = p.getU32('burst-interval-ms');
    const gap = p.getOptU32('burst-gap-ms');
    // u64 in Rust; a Number only rounds (like `as f64`) when it becomes an arrival.
    c.burstGapMs = gap === null ? BigInt(c.sessions) * BigInt(c.burstIntervalMs) : BigInt(gap);
    const sharedPrefixTokens = p.getU32Min('shared-prefix-tokens', 1);
    c.requests = p.getU32Min('requests', 1);
    c.warmup = p.getU32('warmup');
    c.burstSize = p.getU32Min('burst-size', 1);
    c.sharedPrefixTokens = p.getBool('shared-prefix') ? sharedPrefixTokens : null;
    c.contextTokens = p.getU32('context-tokens');
    c.thinkTimeMs = p.getU32('think-time-ms');
    c.history = p.getChoice('history', ['real', 'synthetic']);
    c.generation = p.getGeneration();
    c.format = PromptFormat.fromParams(p);
    return c;
  }
}

export function declaredParams() {
  return [
    param('requests', 'Requests in the measured phase `copilot_burst` (at least 1).', '64'),
    param(
      'warmup',
      'Requests in the phase `warmup`, sent first and left out of the summary; 0 drops ' +
        'the phase. Planned the same way with seed+17, so its prefix, sessions and turns ' +
        "differ from the measured phase's.",
      '8',
    ),
    param(
      'sessions',
      'Developers (sessions). Burst b belongs to session b mod sessions. Each phase runs ' +
        'at concurrency = sessions, so a session always has a slot.',
      '8',
    ),
    param(
      'burst-size',
      'Turns per burst: consecutive turns of one session, each sent think-time-ms after ' +
        'the previous answer.',
      '4',
    ),
    param(
      'shared-prefix',
      'true puts one project context, identical for every session, at the start of ' +
        'every prompt (its sha256 is the prefix_hash).',
      'true',
    ),
    param(
      'shared-prefix-tokens',
      "Tokens of the shared project context (fitted exactly with the run's tokenizer).",
      '3072',
    ),
    param(
      'context-tokens',
      "Tokens of each session's own context (its open files), after the shared prefix; " +
        '0 for none.',
      '1024',
    ),
    param(
      'burst-interval-ms',
      'Session s starts its first burst s × this many ms after the phase starts.',
      '1000',
    ),
    param(
      'burst-gap-ms',
      'Idle time of a session between the answer ending one burst and the first turn of ' +
        'its next burst; empty means sessions × burst-interval-ms, so that bursts of ' +
        'consecutive sessions stay about one interval apart.',
      '',
    ),
    param(
      'think-time-ms',
      'Time between an answer and the next turn of the same burst.',
      '300',
    ),
    param(
      'history',
      "real: earlier answers in the history are the engine's (prompts depend on the " +
        'answers and on their order). synthetic: a fixed sentence per answer, so the ' +
        "whole run is planned up front and its manifest is byte-identical across runs.",
      'real',
    ),
    ...generationParams(),
    ...promptFormatParams('chat', 'llama3'),
  ];
}

/** Rust's `str::to_ascii_lowercase`. */
function asciiLowercase(text) {
  return text.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/** The user message of a turn (the seed's text). */
export function turnText(sessionId, burstId, turn, subject, action, topic, qualifier) {
  return (
    `Session ID: ${sessionId}\nBurst ID: ${burstId}\nTurn: ${turn}\n` +
    `Task: In 5 bullets, explain how ${asciiLowercase(subject)} ${action} the ${topic} ` +
    `pipeline ${qualifier}. Call out one concrete risk and one mitigation.`
  );
}

/** The answer recorded in the history with `history=synthetic`. */
export function syntheticReply(requestId, subject, action, topic, qualifier) {
  return (
    `Reply to ${requestId}: five bullets on how ${asciiLowercase(subject)} ${action} the ` +
    `${topic} pipeline ${qualifier}, one concrete risk, and one mitigation.`
  );
}

/** `session_01`, … (1-based); more digits from 100 on. */
export function sessionId(sessionPrefix, session) {
  return sessionPrefix + String(session + 1).padStart(2, '0');
}

/** `burst_0001`, … (1-based). */
export function burstId(burst) {
  return `burst_${String(burst + 1).padStart(4, '0')}`;
}

/** One phase of the run: its prefix, contexts, turns and history state. */
export class Plan {
  /** See PORTING.md §3.1; `phaseSeed` is a BigInt. */
  static build(config, phase, includeInSummary, idPrefix, sessionPrefix, phaseSeed, count, tok) {
    const sessions = config.sessions;
    let sharedPrefix = null;
    if (config.sharedPrefixTokens !== null) {
      const target = config.sharedPrefixTokens;
      const rng = new SplitMix64(wrapU64(phaseSeed + PREFIX_SEED_OFFSET));
      const doc = syntheticDocument(rng, `${idPrefix}-shared-prefix`, SHARED_PREFIX_TOPIC, target);
      sharedPrefix = tok.fit(SHARED_PREFIX_HEADER + doc, target, FILLER);
    }
    const contexts = [];
    if (config.contextTokens > 0) {
      const rng = new SplitMix64(wrapU64(phaseSeed + CONTEXT_SEED_OFFSET));
      for (let s = 0; s < sessions; s += 1) {
        const sid = sessionId(sessionPrefix, s);
        const topic = rng.pick(TOPICS);
        const doc = syntheticDocument(rng, `${sid}-context`, topic, config.contextTokens);
        const context =
          `Session Context:\nSession: ${sid}\nOpen files: the ${topic} module and its tests.\n\n` +
          doc;
        contexts.push(tok.fit(context, config.contextTokens, FILLER));
      }
    } else {
      for (let s = 0; s < sessions; s += 1) contexts.push(null);
    }
    const system = contexts.map((context) => {
      const parts = [sharedPrefix, context].filter((p) => p !== null);
      return parts.length === 0 ? null : parts.join('\n\n');
    });
    const prefixHash = contexts.map((context) => {
      const source = sharedPrefix ?? context;
      return source === null ? null : sha256Hex(source);
    });

    const rng = new SplitMix64(phaseSeed);
    const turns = [];
    const bySession = Array.from({ length: sessions }, () => []);
    for (let i = 0; i < count; i += 1) {
      const burst = Math.floor(i / config.burstSize);
      const position = i % config.burstSize;
      const session = burst % sessions;
      const turn = bySession[session].length + 1;
      const topic = rng.pick(TOPICS);
      const subject = rng.pick(SUBJECTS);
      const qualifier = rng.pick(QUALIFIERS);
      const action = rng.pick(ACTIONS);
      let arrival;
      if (position > 0) {
        arrival = { tag: 'after-previous-turn', val: config.thinkTimeMs };
      } else if (burst < sessions) {
        // Both factors are below 2^32; the f64 product rounds as Rust's does.
        arrival = { tag: 'at-offset-ms', val: burst * config.burstIntervalMs };
      } else {
        // `u64 as f64` in Rust; Number(BigInt) rounds to nearest the same way.
        arrival = { tag: 'after-previous-turn', val: Number(config.burstGapMs) };
      }
      const id = `${idPrefix}-${String(i).padStart(5, '0')}`;
      const sid = sessionId(sessionPrefix, session);
      turns.push({
        id,
        session,
        turn,
        burst,
        position,
        arrival,
        userText: turnText(sid, burstId(burst), turn, subject, action, topic, qualifier),
        syntheticReply: syntheticReply(id, subject, action, topic, qualifier),
      });
      bySession[session].push(i);
    }
    const labelsCommon = [
      label('workload', 'local_project_copilot_shared_prefix_burst'),
      label('prompt_set', 'local_copilot_burst'),
      label('history', config.history),
    ];
    if (config.sharedPrefixTokens !== null) {
      labelsCommon.push(label('shared_prefix_tokens', String(config.sharedPrefixTokens)));
    }
    if (config.contextTokens > 0) {
      labelsCommon.push(label('context_tokens', String(config.contextTokens)));
    }
    const plan = new Plan();
    Object.assign(plan, {
      phase,
      includeInSummary,
      sessionPrefix,
      sharedPrefix,
      system,
      prefixHash,
      turns,
      bySession,
      planned: new Array(sessions).fill(0),
      replies: Array.from({ length: sessions }, () => []),
      awaiting: new Array(sessions).fill(false),
      sessionOf: new Map(turns.map((t) => [t.id, t.session])),
      labelsCommon,
    });
    return plan;
  }

  /** Whether every turn of the phase is planned. */
  finished() {
    return this.planned.every((n, s) => n === this.bySession[s].length);
  }

  /**
   * Up to `max` further requests: among the sessions not awaiting an
   * answer, the turn with the lowest index first (PORTING.md §3.3).
   */
  nextRequests(config, max) {
    const out = [];
    while (out.length < max) {
      let next = null;
      for (let s = 0; s < this.bySession.length; s += 1) {
        if (this.awaiting[s] || this.planned[s] >= this.bySession[s].length) continue;
        const index = this.bySession[s][this.planned[s]];
        if (next === null || index < next) next = index;
      }
      if (next === null) break;
      out.push(this.request(config, next));
      const s = this.turns[next].session;
      this.planned[s] += 1;
      if (config.history === 'real') this.awaiting[s] = true;
    }
    return out;
  }

  /** The request of turn `index`; every earlier turn of its session has its answer. */
  request(config, index) {
    const turn = this.turns[index];
    const s = turn.session;
    const messages = [];
    if (this.system[s] !== null) messages.push(message('system', this.system[s]));
    this.bySession[s].slice(0, this.planned[s]).forEach((earlierIndex, k) => {
      const earlier = this.turns[earlierIndex];
      const reply = config.history === 'real' ? this.replies[s][k] : earlier.syntheticReply;
      messages.push(message('user', earlier.userText));
      messages.push(message('assistant', reply));
    });
    messages.push(message('user', turn.userText));
    const labels = [
      ...this.labelsCommon,
      label('session_turn_index', String(turn.turn)),
      label('turn', String(turn.turn)),
      label('burst_id', burstId(turn.burst)),
      label('burst_index', String(turn.burst + 1)),
      label('burst_position', String(turn.position + 1)),
      label('history_turns', String(turn.turn - 1)),
    ];
    return {
      id: turn.id,
      phase: this.phase,
      sessionId: sessionId(this.sessionPrefix, s),
      prefixHash: this.prefixHash[s] ?? undefined,
      prompt: config.format.render(messages),
      generation: config.generation,
      arrival: turn.arrival,
      labels,
    };
  }

  /** Records an answer; false when the id is not one of this phase's. */
  record(summary) {
    const s = this.sessionOf.get(summary.id);
    if (s === undefined) return false;
    this.replies[s].push(summary.text);
    this.awaiting[s] = false;
    return true;
  }
}

/** The planner of one run; builds its plans on the first nextBatch. */
export class LocalCopilotBurst {
  static describe() {
    return {
      name: 'local_copilot_burst',
      version: '0.1.0',
      description:
        'Developers on one project using a local copilot (test-plan family A): ' +
        'each session has an optional shared project prefix plus its own ' +
        'context, works in bursts of turns spaced in time with think time ' +
        'between turns, and sends its whole conversation each turn, the ' +
        "model's real answers included. Phases: warmup (excluded), " +
        'copilot_burst.',
      params: declaredParams(),
    };
  }

  static create(params, seed, tok = new HostTokenizer()) {
    return new LocalCopilotBurst(Config.fromParams(params), BigInt(seed), tok);
  }

  /** The phases' plans: warmup (seed + 17), if any, then copilot_burst (seed). */
  static build(config, seed, tok) {
    const plans = [];
    if (config.warmup > 0) {
      plans.push(
        Plan.build(
          config,
          'warmup',
          false,
          'copilot_warmup',
          'warmup_session_',
          wrapU64(seed + WARMUP_SEED_OFFSET),
          config.warmup,
          tok,
        ),
      );
    }
    plans.push(
      Plan.build(config, 'copilot_burst', true, 'copilot_main', 'session_', seed, config.requests, tok),
    );
    return plans;
  }

  /** Plans phase after phase: a later phase starts once the earlier is fully planned. */
  static next(plans, config, max) {
    const requests = [];
    for (const plan of plans) {
      if (requests.length === max) break;
      requests.push(...plan.nextRequests(config, max - requests.length));
      if (!plan.finished()) break;
    }
    return { requests, done: plans.every((p) => p.finished()) };
  }

  constructor(config, seed, tok) {
    this.config = config;
    this.seed = seed;
    this.tok = tok;
    this.plans = null;
  }

  phases() {
    const phases = [];
    if (this.config.warmup > 0) phases.push(['warmup', false]);
    phases.push(['copilot_burst', true]);
    // At most one turn per session is in flight, so this never delays a
    // turn: every session keeps its slot while it thinks.
    return phases.map(([name, includeInSummary]) => ({
      name,
      includeInSummary,
      load: { tag: 'closed', val: this.config.sessions },
    }));
  }

  nextBatch(max) {
    this.plans ??= LocalCopilotBurst.build(this.config, this.seed, this.tok);
    return LocalCopilotBurst.next(this.plans, this.config, max);
  }

  onResponse(summary) {
    const recorded = (this.plans ?? []).some((plan) => plan.record(summary));
    if (!recorded) {
      throw WorkloadError.internal(`response for unknown request ${debugStr(summary.id)}`);
    }
  }
}

export const planner = exportWorkload(LocalCopilotBurst);
