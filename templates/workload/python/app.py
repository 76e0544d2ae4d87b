"""``{{name}}``: a sparkhost workload. It decides *what* is sent and in which
phases; sparkhost decides *when*, sends it and measures it.

This one sends ``requests`` short prompts in one phase whose load is left to
the command line (--concurrency, --rate). Edit ``plan`` to send something of
your own; ``sparkhost inspect {{name}}.wasm`` shows what ``describe`` says.
The SDK in ../lib/sparkhost is a port of sparkhost's Rust SDK.
"""

import sparkhost
from sparkhost import (
    TOPICS,
    PromptFormat,
    SplitMix64,
    generation_params,
    label,
    message,
    param,
    prompt_format_params,
)
from wit_world.imports import types


class Config:
    """The validated params of one run."""

    @classmethod
    def from_params(cls, p) -> "Config":
        c = cls()
        c.requests = p.get_u32_in("requests", 1, 1_000_000)
        c.generation = p.get_generation()
        c.format = PromptFormat.from_params(p)
        return c


def declared_params():
    return [
        param("requests", "How many requests phase `main` sends (1 to 1,000,000).", "8"),
        *generation_params(),
        *prompt_format_params("completions", "llama3"),
    ]


def plan(config: Config, seed: int):
    """Every request of the run, in order: request ``i`` asks about a topic
    drawn from SplitMix64(seed), so one seed always gives the same run."""
    rng = SplitMix64(seed)
    requests = []
    for i in range(config.requests):
        topic = rng.pick(TOPICS)
        text = f"Write two sentences about {topic}."
        requests.append(
            types.RequestSpec(
                id=f"{{name}}-{i:05}",
                phase="main",
                session_id=None,
                prefix_hash=None,
                prompt=config.format.render([message("user", text)]),
                generation=config.generation,
                arrival=types.Arrival_Asap(),
                labels=[label("topic", topic)],
            )
        )
    return requests


class MyWorkload:
    """The planner of one run; plans on the first ``next_batch``."""

    @staticmethod
    def describe() -> types.WorkloadInfo:
        return types.WorkloadInfo(
            name="{{name}}",
            version="0.1.0",
            description=(
                "Short prompts on synthetic topics, one phase (`main`) whose load "
                "is left to the command line."
            ),
            params=declared_params(),
        )

    @classmethod
    def create(cls, params, seed: int) -> "MyWorkload":
        return cls(Config.from_params(params), seed)

    def __init__(self, config: Config, seed: int):
        self.config = config
        self.seed = seed
        self.pending = None

    def phases(self):
        # load None: --concurrency / --rate decide.
        return [types.Phase(name="main", include_in_summary=True, load=None)]

    def next_batch(self, max: int) -> types.Batch:
        if self.pending is None:
            self.pending = plan(self.config, self.seed)
        requests, self.pending = self.pending[:max], self.pending[max:]
        return types.Batch(requests=requests, done=not self.pending)


Planner = sparkhost.export_workload(MyWorkload)
