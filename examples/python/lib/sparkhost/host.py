"""The host's services (``sparkhost:workload/host@0.1.0``), identical whatever
language a workload is written in. They exist only inside a component."""

from wit_world.imports import host as _host


def log(level: str, message: str) -> None:
    """Writes to the host's log; ``level`` is trace, debug, info, warn or error."""
    _host.log(getattr(_host.Level, level.upper()), message)


def count_tokens(text: str) -> int:
    """Tokens in ``text`` under the run's tokenizer, without special tokens."""
    return _host.count_tokens(text)


def fit_to_tokens(text: str, target: int, filler: str) -> str:
    """``text`` cut or extended (by repeating ``filler``) to exactly ``target``
    tokens where the tokenizer allows it. Size prompts with it before applying
    any template, so the template is never cut or padded."""
    return _host.fit_to_tokens(text, target, filler)


def tokenizer_id() -> str:
    """``heuristic:v1``, or ``sha256:<hex>`` of the run's tokenizer file."""
    return _host.tokenizer_id()
