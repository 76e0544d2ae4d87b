"""``local_copilot_burst`` in Python: a port of workloads/local_copilot_burst
(Rust) that produces byte-identical requests for the same params, seed and
tokenizer (algorithm: workloads/PORTING.md §3).

``sessions`` developers share one project context (an optional shared
prefix) and each has a context of their own. A developer works in bursts of
``burst-size`` turns, each sent ``think-time-ms`` after the previous answer,
then goes quiet for ``burst-gap-ms``. Every turn carries the session's whole
conversation so far, with the model's real answers (``history=real``) or a
fixed sentence per answer (``history=synthetic``).
"""

import sparkhost
from sparkhost import (
    ACTIONS,
    FILLER,
    QUALIFIERS,
    SUBJECTS,
    TOPICS,
    HostTokenizer,
    PromptFormat,
    SplitMix64,
    WorkloadError,
    debug_str,
    generation_params,
    label,
    message,
    param,
    prompt_format_params,
    sha256_hex,
    synthetic_document,
)
from wit_world.imports import types

#: Seed offsets (u64, wrapping) of the warmup phase, the shared prefix and the contexts.
WARMUP_SEED_OFFSET = 17
PREFIX_SEED_OFFSET = 1_000_003
CONTEXT_SEED_OFFSET = 2_000_003
_MASK64 = (1 << 64) - 1

#: The first lines of the shared prefix (the seed's).
SHARED_PREFIX_HEADER = (
    "Shared Project Context:\n"
    "Repository scope: inference runtime, telemetry, and runbook controls.\n"
    "Coding constraints: deterministic outputs, explicit guardrails, and operator-safe defaults.\n\n"
)
#: Topic of the shared-prefix document (the seed's).
SHARED_PREFIX_TOPIC = "local project copilot baseline context"


class Config:
    """The validated params of one run."""

    @classmethod
    def from_params(cls, p) -> "Config":
        c = cls()
        # Read in the Rust order, so the first bad param is the one reported.
        c.sessions = p.get_u32_min("sessions", 1)
        c.burst_interval_ms = p.get_u32("burst-interval-ms")
        gap = p.get_opt_u32("burst-gap-ms")
        c.burst_gap_ms = c.sessions * c.burst_interval_ms if gap is None else gap
        shared_prefix_tokens = p.get_u32_min("shared-prefix-tokens", 1)
        c.requests = p.get_u32_min("requests", 1)
        c.warmup = p.get_u32("warmup")
        c.burst_size = p.get_u32_min("burst-size", 1)
        c.shared_prefix_tokens = shared_prefix_tokens if p.get_bool("shared-prefix") else None
        c.context_tokens = p.get_u32("context-tokens")
        c.think_time_ms = p.get_u32("think-time-ms")
        c.history = p.get_choice("history", ["real", "synthetic"])
        c.generation = p.get_generation()
        c.format = PromptFormat.from_params(p)
        return c


def declared_params():
    return [
        param("requests", "Requests in the measured phase `copilot_burst` (at least 1).", "64"),
        param(
            "warmup",
            "Requests in the phase `warmup`, sent first and left out of the summary; 0 drops "
            "the phase. Planned the same way with seed+17, so its prefix, sessions and turns "
            "differ from the measured phase's.",
            "8",
        ),
        param(
            "sessions",
            "Developers (sessions). Burst b belongs to session b mod sessions. Each phase runs "
            "at concurrency = sessions, so a session always has a slot.",
            "8",
        ),
        param(
            "burst-size",
            "Turns per burst: consecutive turns of one session, each sent think-time-ms after "
            "the previous answer.",
            "4",
        ),
        param(
            "shared-prefix",
            "true puts one project context, identical for every session, at the start of "
            "every prompt (its sha256 is the prefix_hash).",
            "true",
        ),
        param(
            "shared-prefix-tokens",
            "Tokens of the shared project context (fitted exactly with the run's tokenizer).",
            "3072",
        ),
        param(
            "context-tokens",
            "Tokens of each session's own context (its open files), after the shared prefix; "
            "0 for none.",
            "1024",
        ),
        param(
            "burst-interval-ms",
            "Session s starts its first burst s × this many ms after the phase starts.",
            "1000",
        ),
        param(
            "burst-gap-ms",
            "Idle time of a session between the answer ending one burst and the first turn of "
            "its next burst; empty means sessions × burst-interval-ms, so that bursts of "
            "consecutive sessions stay about one interval apart.",
            "",
        ),
        param(
            "think-time-ms",
            "Time between an answer and the next turn of the same burst.",
            "300",
        ),
        param(
            "history",
            "real: earlier answers in the history are the engine's (prompts depend on the "
            "answers and on their order). synthetic: a fixed sentence per answer, so the "
            "whole run is planned up front and its manifest is byte-identical across runs.",
            "real",
        ),
        *generation_params(),
        *prompt_format_params("chat", "llama3"),
    ]


def _ascii_lowercase(text: str) -> str:
    """Rust's ``str::to_ascii_lowercase``."""
    return "".join(c.lower() if "A" <= c <= "Z" else c for c in text)


def turn_text(session_id, burst_id, turn, subject, action, topic, qualifier) -> str:
    """The user message of a turn (the seed's text)."""
    return (
        f"Session ID: {session_id}\nBurst ID: {burst_id}\nTurn: {turn}\n"
        f"Task: In 5 bullets, explain how {_ascii_lowercase(subject)} {action} the {topic} "
        f"pipeline {qualifier}. Call out one concrete risk and one mitigation."
    )


def synthetic_reply(request_id, subject, action, topic, qualifier) -> str:
    """The answer recorded in the history with ``history=synthetic``."""
    return (
        f"Reply to {request_id}: five bullets on how {_ascii_lowercase(subject)} {action} the "
        f"{topic} pipeline {qualifier}, one concrete risk, and one mitigation."
    )


def session_id(session_prefix: str, session: int) -> str:
    """``session_01``, … (1-based); more digits from 100 on."""
    return f"{session_prefix}{session + 1:02}"


def burst_id(burst: int) -> str:
    """``burst_0001``, … (1-based)."""
    return f"burst_{burst + 1:04}"


class Turn:
    """What is fixed about one request before any answer exists."""

    __slots__ = ("id", "session", "turn", "burst", "position", "arrival", "user_text", "synthetic_reply")

    def __init__(self, **fields):
        for k, v in fields.items():
            setattr(self, k, v)


class Plan:
    """One phase of the run: its prefix, contexts, turns and history state."""

    @classmethod
    def build(cls, config, phase, include_in_summary, id_prefix, session_prefix, phase_seed, count, tok):
        """See PORTING.md §3.1."""
        sessions = config.sessions
        shared_prefix = None
        if config.shared_prefix_tokens is not None:
            target = config.shared_prefix_tokens
            rng = SplitMix64((phase_seed + PREFIX_SEED_OFFSET) & _MASK64)
            doc = synthetic_document(rng, f"{id_prefix}-shared-prefix", SHARED_PREFIX_TOPIC, target)
            shared_prefix = tok.fit(SHARED_PREFIX_HEADER + doc, target, FILLER)
        contexts = []
        if config.context_tokens > 0:
            rng = SplitMix64((phase_seed + CONTEXT_SEED_OFFSET) & _MASK64)
            for s in range(sessions):
                sid = session_id(session_prefix, s)
                topic = rng.pick(TOPICS)
                doc = synthetic_document(rng, f"{sid}-context", topic, config.context_tokens)
                context = (
                    f"Session Context:\nSession: {sid}\nOpen files: the {topic} module and its tests.\n\n"
                    + doc
                )
                contexts.append(tok.fit(context, config.context_tokens, FILLER))
        else:
            contexts = [None] * sessions
        system = []
        prefix_hash = []
        for context in contexts:
            parts = [p for p in (shared_prefix, context) if p is not None]
            system.append("\n\n".join(parts) if parts else None)
            source = shared_prefix if shared_prefix is not None else context
            prefix_hash.append(None if source is None else sha256_hex(source))

        rng = SplitMix64(phase_seed)
        turns = []
        by_session = [[] for _ in range(sessions)]
        for i in range(count):
            burst = i // config.burst_size
            position = i % config.burst_size
            session = burst % sessions
            turn = len(by_session[session]) + 1
            topic = rng.pick(TOPICS)
            subject = rng.pick(SUBJECTS)
            qualifier = rng.pick(QUALIFIERS)
            action = rng.pick(ACTIONS)
            if position > 0:
                arrival = types.Arrival_AfterPreviousTurn(float(config.think_time_ms))
            elif burst < sessions:
                # Both factors are below 2**32; the f64 product rounds as Rust's does.
                arrival = types.Arrival_AtOffsetMs(float(burst) * float(config.burst_interval_ms))
            else:
                # `u64 as f64` in Rust; float(int) rounds to nearest the same way.
                arrival = types.Arrival_AfterPreviousTurn(float(config.burst_gap_ms))
            request_id = f"{id_prefix}-{i:05}"
            sid = session_id(session_prefix, session)
            turns.append(
                Turn(
                    id=request_id,
                    session=session,
                    turn=turn,
                    burst=burst,
                    position=position,
                    arrival=arrival,
                    user_text=turn_text(sid, burst_id(burst), turn, subject, action, topic, qualifier),
                    synthetic_reply=synthetic_reply(request_id, subject, action, topic, qualifier),
                )
            )
            by_session[session].append(i)
        labels_common = [
            label("workload", "local_project_copilot_shared_prefix_burst"),
            label("prompt_set", "local_copilot_burst"),
            label("history", config.history),
        ]
        if config.shared_prefix_tokens is not None:
            labels_common.append(label("shared_prefix_tokens", str(config.shared_prefix_tokens)))
        if config.context_tokens > 0:
            labels_common.append(label("context_tokens", str(config.context_tokens)))
        plan = cls()
        plan.phase = phase
        plan.include_in_summary = include_in_summary
        plan.session_prefix = session_prefix
        plan.shared_prefix = shared_prefix
        plan.system = system
        plan.prefix_hash = prefix_hash
        plan.turns = turns
        plan.by_session = by_session
        plan.planned = [0] * sessions
        plan.replies = [[] for _ in range(sessions)]
        plan.awaiting = [False] * sessions
        plan.session_of = {t.id: t.session for t in turns}
        plan.labels_common = labels_common
        return plan

    def finished(self) -> bool:
        """Whether every turn of the phase is planned."""
        return all(n == len(turns) for n, turns in zip(self.planned, self.by_session))

    def next_requests(self, config, max: int):
        """Up to ``max`` further requests: among the sessions not awaiting an
        answer, the turn with the lowest index first (PORTING.md §3.3)."""
        out = []
        while len(out) < max:
            eligible = [
                self.by_session[s][self.planned[s]]
                for s in range(len(self.by_session))
                if not self.awaiting[s] and self.planned[s] < len(self.by_session[s])
            ]
            if not eligible:
                break
            index = min(eligible)
            out.append(self.request(config, index))
            s = self.turns[index].session
            self.planned[s] += 1
            if config.history == "real":
                self.awaiting[s] = True
        return out

    def request(self, config, index: int) -> types.RequestSpec:
        """The request of turn ``index``; every earlier turn of its session has its answer."""
        turn = self.turns[index]
        s = turn.session
        messages = []
        if self.system[s] is not None:
            messages.append(message("system", self.system[s]))
        for k, earlier_index in enumerate(self.by_session[s][: self.planned[s]]):
            earlier = self.turns[earlier_index]
            reply = self.replies[s][k] if config.history == "real" else earlier.synthetic_reply
            messages.append(message("user", earlier.user_text))
            messages.append(message("assistant", reply))
        messages.append(message("user", turn.user_text))
        labels = [
            *self.labels_common,
            label("session_turn_index", str(turn.turn)),
            label("turn", str(turn.turn)),
            label("burst_id", burst_id(turn.burst)),
            label("burst_index", str(turn.burst + 1)),
            label("burst_position", str(turn.position + 1)),
            label("history_turns", str(turn.turn - 1)),
        ]
        return types.RequestSpec(
            id=turn.id,
            phase=self.phase,
            session_id=session_id(self.session_prefix, s),
            prefix_hash=self.prefix_hash[s],
            prompt=config.format.render(messages),
            generation=config.generation,
            arrival=turn.arrival,
            labels=labels,
        )

    def record(self, summary) -> bool:
        """Records an answer; False when the id is not one of this phase's."""
        s = self.session_of.get(summary.id)
        if s is None:
            return False
        self.replies[s].append(summary.text)
        self.awaiting[s] = False
        return True


class LocalCopilotBurst:
    """The planner of one run; builds its plans on the first ``next_batch``."""

    @staticmethod
    def describe() -> types.WorkloadInfo:
        return types.WorkloadInfo(
            name="local_copilot_burst",
            version="0.1.0",
            description=(
                "Developers on one project using a local copilot (test-plan family A): "
                "each session has an optional shared project prefix plus its own "
                "context, works in bursts of turns spaced in time with think time "
                "between turns, and sends its whole conversation each turn, the "
                "model's real answers included. Phases: warmup (excluded), "
                "copilot_burst."
            ),
            params=declared_params(),
        )

    @classmethod
    def create(cls, params, seed: int, tok=None) -> "LocalCopilotBurst":
        return cls(Config.from_params(params), seed, tok or HostTokenizer())

    @staticmethod
    def build(config, seed: int, tok):
        """The phases' plans: warmup (seed + 17), if any, then copilot_burst (seed)."""
        plans = []
        if config.warmup > 0:
            plans.append(
                Plan.build(
                    config,
                    "warmup",
                    False,
                    "copilot_warmup",
                    "warmup_session_",
                    (seed + WARMUP_SEED_OFFSET) & _MASK64,
                    config.warmup,
                    tok,
                )
            )
        plans.append(
            Plan.build(config, "copilot_burst", True, "copilot_main", "session_", seed, config.requests, tok)
        )
        return plans

    @staticmethod
    def next(plans, config, max: int) -> types.Batch:
        """Plans phase after phase: a later phase starts once the earlier is fully planned."""
        requests = []
        for plan in plans:
            if len(requests) == max:
                break
            requests.extend(plan.next_requests(config, max - len(requests)))
            if not plan.finished():
                break
        return types.Batch(requests=requests, done=all(p.finished() for p in plans))

    def __init__(self, config, seed: int, tok):
        self.config = config
        self.seed = seed
        self.tok = tok
        self.plans = None

    def phases(self):
        phases = []
        if self.config.warmup > 0:
            phases.append(("warmup", False))
        phases.append(("copilot_burst", True))
        # At most one turn per session is in flight, so this never delays a
        # turn: every session keeps its slot while it thinks.
        return [
            types.Phase(
                name=name,
                include_in_summary=include,
                load=types.LoadModel_Closed(self.config.sessions),
            )
            for name, include in phases
        ]

    def next_batch(self, max: int) -> types.Batch:
        if self.plans is None:
            self.plans = self.build(self.config, self.seed, self.tok)
        return self.next(self.plans, self.config, max)

    def on_response(self, summary) -> None:
        if not any(plan.record(summary) for plan in self.plans or []):
            raise WorkloadError.internal(f"response for unknown request {debug_str(summary.id)}")


Planner = sparkhost.export_workload(LocalCopilotBurst)
