"""Token counting and fitting behind one interface, ported from the Rust SDK
(sdk/src/tokens.rs), so planning logic runs natively with ``WordTokenizer``
and inside a component with ``HostTokenizer``."""

from .rust import WHITE_SPACE, word_count


class HostTokenizer:
    """The run's tokenizer (the host's imports); only works inside a component."""

    def count(self, text: str) -> int:
        from wit_world.imports import host

        return host.count_tokens(text)

    def fit(self, text: str, target: int, filler: str) -> str:
        from wit_world.imports import host

        return host.fit_to_tokens(text, target, filler)


class WordTokenizer:
    """A test double: one token per run of non-whitespace (Rust's notion of
    whitespace). Fitting keeps the original text up to the end of the
    ``target``-th word, extending it by repeating ``filler`` first if needed."""

    def count(self, text: str) -> int:
        return word_count(text)

    def fit(self, text: str, target: int, filler: str) -> str:
        out = text
        # A filler without words could never reach the target.
        if word_count(filler) > 0:
            while self.count(out) < target:
                out += filler
        return _cut_after_words(out, target)


def _cut_after_words(text: str, n: int) -> str:
    if n == 0:
        return ""
    words = 0
    in_word = False
    for i, ch in enumerate(text):
        if ch in WHITE_SPACE:
            if in_word:
                words += 1
                if words == n:
                    return text[:i]
            in_word = False
        else:
            in_word = True
    return text
