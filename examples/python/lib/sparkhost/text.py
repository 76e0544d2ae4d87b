"""Prompt text shared by workloads, ported from the Rust SDK's
sdk/src/text.rs: the seed harness's synthetic document, its size rules, and
the raw Llama-3 template. Pure, so it is checked against the Rust SDK's test
vectors under CPython."""

from .rust import word_count

__all__ = [
    "TOPICS",
    "SUBJECTS",
    "ACTIONS",
    "QUALIFIERS",
    "FILLER",
    "LLAMA3_USER_PREFIX",
    "LLAMA3_ASSISTANT_PREFIX",
    "LLAMA3_BEGIN",
    "LLAMA3_ASSISTANT_HEADER",
    "SHORT_CHOICES",
    "LONG_CHOICES",
    "llama3_completion_prompt",
    "llama3_chat_text",
    "choose_target",
    "document_min_words",
    "synthetic_document",
]

TOPICS = [
    "request scheduling",
    "token budget policy",
    "storage queue behavior",
    "cache eviction workflow",
    "fault tolerance and retries",
    "tenant isolation controls",
    "latency observability",
    "service degradation playbook",
    "throughput stabilization plan",
    "maintenance and incident response",
]

SUBJECTS = [
    "The runtime coordinator",
    "The storage planner",
    "The batch scheduler",
    "The policy engine",
    "The telemetry worker",
    "The frontend router",
    "The cache reconciler",
    "The replay evaluator",
    "The token allocator",
    "The audit process",
]

ACTIONS = [
    "records",
    "re-evaluates",
    "normalizes",
    "aggregates",
    "describes",
    "compares",
    "escalates",
    "bounds",
    "prioritizes",
    "documents",
]

QUALIFIERS = [
    "under bursty traffic",
    "during long-context prompts",
    "for mixed tenant load",
    "while preserving deterministic replay",
    "with explicit timeout guards",
    "while reducing tail latency spikes",
    "without changing request semantics",
    "under constrained memory tiers",
    "before and after eviction pressure",
    "for compatibility-mode file I/O",
]

#: What the host's fit_to_tokens repeats to extend a short document.
FILLER = (
    " deterministic checkpoint replay baseline cache latency throughput"
    " scheduler queue storage observability policy appendix"
)

LLAMA3_USER_PREFIX = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
LLAMA3_ASSISTANT_PREFIX = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
LLAMA3_BEGIN = "<|begin_of_text|>"
LLAMA3_ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"


def llama3_completion_prompt(user_text: str) -> str:
    """``user_text`` as a single-turn raw Llama-3 prompt; size it before."""
    return LLAMA3_USER_PREFIX + user_text + LLAMA3_ASSISTANT_PREFIX


def llama3_chat_text(messages) -> str:
    """``messages`` (objects with ``role`` and ``content``) in the raw Llama-3
    chat template, ready for the assistant."""
    out = [LLAMA3_BEGIN]
    for m in messages:
        out.append(f"<|start_header_id|>{m.role}<|end_header_id|>\n\n{m.content}<|eot_id|>")
    out.append(LLAMA3_ASSISTANT_HEADER)
    return "".join(out)


SHORT_CHOICES = [512, 768, 1024, 1536, 2048]
LONG_CHOICES = [8192, 12288, 16384, 24576, 32768]


def choose_target(size_set: str, rng, short_range, long_range):
    """The size class ("short" or "long") and target token count of the next
    prompt by the seed's rules. ``size_set`` is short, long or mixed."""
    if size_set == "mixed":
        short = rng.next_f64() < 0.5
    else:
        short = size_set == "short"
    if short:
        return ("short", _sample_target(rng, SHORT_CHOICES, short_range))
    return ("long", _sample_target(rng, LONG_CHOICES, long_range))


def _sample_target(rng, preferred, bounds):
    lo, hi = bounds
    in_range = [v for v in preferred if lo <= v <= hi]
    if not in_range:
        return rng.range_u32(lo, hi)
    return rng.pick(in_range)


def document_min_words(target_tokens: int) -> int:
    """``max(220, floor(target_tokens * 66 / 100))`` in integer arithmetic."""
    return max(target_tokens * 66 // 100, 220)


def synthetic_document(rng, doc_id: str, topic: str, target_tokens: int) -> str:
    """A synthetic document of at least ``document_min_words(target_tokens)``
    words, laid out and drawn exactly as the Rust SDK's ``synthetic_document``."""
    min_words = document_min_words(target_tokens)
    lines = [
        f"Document ID: {doc_id}",
        f"Topic: {topic}",
        "Instruction: summarize key controls, constraints, and ordered actions in clear prose.",
        "",
    ]
    words = sum(word_count(line) for line in lines)
    section = 1
    while words < min_words:
        start = len(lines)
        _push_section(lines, rng, section, topic)
        words += sum(word_count(line) for line in lines[start:])
        section += 1
    return "\n".join(lines)


def _push_section(lines, rng, section: int, topic: str) -> None:
    lines.append(f"Section {section}: {topic} operating notes")
    bullets = 7 if section % 2 == 0 else 6
    for index in range(1, bullets + 1):
        subject = rng.pick(SUBJECTS)
        action = rng.pick(ACTIONS)
        qualifier = rng.pick(QUALIFIERS)
        lines.append(
            f"{section}.{index} {subject} {action} the {topic} workflow {qualifier}, "
            "tracks queue depth and service latency, and emits deterministic replay markers."
        )
    lines.append(
        f"Checklist {section}: verify ordering, compare deltas, reconcile counters, "
        "and persist trace evidence."
    )
    lines.append("")
