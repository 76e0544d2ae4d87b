"""``reuse_verify`` in Python: a port of workloads/reuse_verify (Rust) that
produces byte-identical requests for the same params, seed and tokenizer
(algorithm: workloads/PORTING.md §2).

One prompt is sent ``repeats`` times, each in its own phase (reuse_1,
reuse_2, …) at concurrency 1: the first send is cold, every later one should
be served from the prefix cache.
"""

import sparkhost
from sparkhost import (
    FILLER,
    TOPICS,
    HostTokenizer,
    PromptFormat,
    SplitMix64,
    choose_target,
    generation_params,
    label,
    message,
    param,
    prompt_format_params,
    sha256_hex,
    synthetic_document,
)
from wit_world.imports import types

#: The seed's prompt id; the document carries it in its first line.
PROMPT_ID = "reuse-00000"


class Config:
    """The validated params of one run."""

    @classmethod
    def from_params(cls, p) -> "Config":
        c = cls()
        c.set = p.get_choice("prompt-set", ["short", "long"])
        c.repeats = p.get_u32_in("repeats", 2, 10)
        c.short_range = p.get_range("short-range")
        c.long_range = p.get_range("long-range")
        c.generation = p.get_generation()
        c.format = PromptFormat.from_params(p)
        return c


def declared_params():
    return [
        param(
            "repeats",
            "How many times the prompt is sent, each in its own phase reuse_1..reuse_N "
            "(2 to 10; the seed allowed only 2 or 3).",
            "3",
        ),
        param(
            "prompt-set",
            "Size rule of the prompt: short (from short-range) or long (from long-range).",
            "short",
        ),
        param(
            "short-range",
            "MIN:MAX target user-text tokens for a short prompt. A uniform pick among 512, "
            "768, 1024, 1536, 2048 inside the range; uniform in MIN..=MAX when none is inside.",
            "512:2048",
        ),
        param(
            "long-range",
            "MIN:MAX target user-text tokens for a long prompt. A uniform pick among 8192, "
            "12288, 16384, 24576, 32768 inside the range; uniform in MIN..=MAX when none is "
            "inside. The default does not fit an engine capped at 8192 tokens; use e.g. "
            "6000:7600 there.",
            "8192:32768",
        ),
        *generation_params(temperature="0"),
        *prompt_format_params("completions", "llama3"),
    ]


def phase_name(k: int) -> str:
    """Name of the phase of repeat ``k`` (1-based)."""
    return f"reuse_{k}"


def plan(config: Config, seed: int, tok):
    """Every request of the run, in order (see PORTING.md §2): one document
    drawn from SplitMix64(seed), fitted by ``tok``, sent ``repeats`` times."""
    rng = SplitMix64(seed)
    cls, target = choose_target(config.set, rng, config.short_range, config.long_range)
    topic = rng.pick(TOPICS)
    document = synthetic_document(rng, PROMPT_ID, topic, target)
    user_text = tok.fit(document, target, FILLER)
    prompt = config.format.render([message("user", user_text)])
    prefix_hash = sha256_hex(user_text)
    return [
        types.RequestSpec(
            id=f"{PROMPT_ID}-r{k}",
            phase=phase_name(k),
            session_id=None,
            prefix_hash=prefix_hash,
            prompt=prompt,
            generation=config.generation,
            arrival=types.Arrival_Asap(),
            labels=[
                label("prompt_set", cls),
                label("target_tokens", str(target)),
                label("reuse_prompt_id", PROMPT_ID),
                label("repeat", str(k)),
                label("repeats", str(config.repeats)),
            ],
        )
        for k in range(1, config.repeats + 1)
    ]


class ReuseVerify:
    """The planner of one run; plans on the first ``next_batch``."""

    @staticmethod
    def describe() -> types.WorkloadInfo:
        return types.WorkloadInfo(
            name="reuse_verify",
            version="0.1.0",
            description=(
                "One synthetic prompt sent `repeats` times, each in its own phase "
                "(reuse_1, reuse_2, …) at concurrency 1, temperature 0 by default: "
                "the first send is cold, the others should hit the prefix cache. "
                "Every repeat has the same prompt bytes and prefix_hash (the seed "
                "harness's reuse_verify scenario)."
            ),
            params=declared_params(),
        )

    @classmethod
    def create(cls, params, seed: int, tok=None) -> "ReuseVerify":
        return cls(Config.from_params(params), seed, tok or HostTokenizer())

    def __init__(self, config: Config, seed: int, tok):
        self.config = config
        self.seed = seed
        self.tok = tok
        # Planned on the first next_batch, so create makes no host calls.
        self.pending = None

    def phases(self):
        return [
            types.Phase(
                name=phase_name(k), include_in_summary=True, load=types.LoadModel_Closed(1)
            )
            for k in range(1, self.config.repeats + 1)
        ]

    def next_batch(self, max: int) -> types.Batch:
        if self.pending is None:
            self.pending = plan(self.config, self.seed, self.tok)
        requests, self.pending = self.pending[:max], self.pending[max:]
        return types.Batch(requests=requests, done=not self.pending)


Planner = sparkhost.export_workload(ReuseVerify)
