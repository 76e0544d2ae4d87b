"""Rust's text conventions, reproduced exactly where workload output or error
messages depend on them: ``str::trim``, ``split_whitespace``, ``{:?}`` of a
string, ``Display`` of an f64, and ``str::parse`` of integers and floats.

Python's own ``strip``, ``split``, ``repr``, ``int`` and ``float`` differ from
Rust's in corner cases (``\\x1c``-``\\x1f`` as whitespace, exponent notation,
underscores and non-ASCII digits in numbers), and the ports must produce the
same bytes as the Rust workloads.
"""

import bisect
import re
from decimal import Decimal

from .rust_escapes import ESCAPED_RANGES

# Unicode White_Space, which Rust's `char::is_whitespace` tests.
WHITE_SPACE = frozenset(
    chr(c)
    for c in [
        0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002,
        0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029,
        0x202F, 0x205F, 0x3000,
    ]
)
_WHITE_SPACE_TEXT = "".join(sorted(WHITE_SPACE))


def is_whitespace(ch: str) -> bool:
    """Rust's ``char::is_whitespace``."""
    return ch in WHITE_SPACE


def trim(text: str) -> str:
    """Rust's ``str::trim``."""
    return text.strip(_WHITE_SPACE_TEXT)


def split_whitespace(text: str) -> list:
    """Rust's ``str::split_whitespace``: the non-empty runs of non-whitespace."""
    words = []
    word = []
    for ch in text:
        if ch in WHITE_SPACE:
            if word:
                words.append("".join(word))
            word = []
        else:
            word.append(ch)
    if word:
        words.append("".join(word))
    return words


def word_count(text: str) -> int:
    """``split_whitespace().count()``, without building the words."""
    count = 0
    in_word = False
    for ch in text:
        space = ch in WHITE_SPACE
        if not space and not in_word:
            count += 1
        in_word = not space
    return count


def is_escaped(code_point: int) -> bool:
    """Whether Rust's ``{:?}`` writes the code point as ``\\u{…}``: core's
    ``is_printable`` and Grapheme_Extend, from the table ``rust_escapes``
    generated with the Rust toolchain (``unicodedata`` has no
    Grapheme_Extend, and its Unicode version may differ)."""
    i = bisect.bisect_right(_ESCAPED_STARTS, code_point) - 1
    return i >= 0 and code_point <= ESCAPED_RANGES[i][1]


_ESCAPED_STARTS = [lo for lo, _ in ESCAPED_RANGES]

_SIMPLE_ESCAPES = {"\0": "\\0", "\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"'}


def debug_str(text: str) -> str:
    """Rust's ``format!("{:?}", text)`` for a ``&str``, quotes included."""
    out = ['"']
    for ch in text:
        if ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif is_escaped(ord(ch)):
            out.append("\\u{%x}" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def display_f64(x: float) -> str:
    """Rust's ``Display`` for an f64 (``x.to_string()``): the shortest digits
    that round-trip, always in positional notation, without a trailing ``.0``."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    # repr() gives the shortest round-trip digits; Decimal lays them out.
    text = format(Decimal(repr(x)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


_UNSIGNED = re.compile(r"\+?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_SPECIAL = re.compile(r"[+-]?(inf|infinity|nan)", re.IGNORECASE)


def _parse_unsigned(text: str, max_value: int):
    if not _UNSIGNED.fullmatch(text):
        return None
    n = int(text)
    return n if n <= max_value else None


def parse_u32(text: str):
    """Rust's ``str::parse::<u32>``: an optional ``+``, then ASCII digits; None on failure."""
    return _parse_unsigned(text, 0xFFFFFFFF)


def parse_u64(text: str):
    """Rust's ``str::parse::<u64>``; None on failure."""
    return _parse_unsigned(text, 0xFFFFFFFFFFFFFFFF)


def parse_f64(text: str):
    """Rust's ``str::parse::<f64>``; None on failure."""
    if _SPECIAL.fullmatch(text):
        return float(text)
    if not _FLOAT.fullmatch(text):
        return None
    # Both parsers round correctly to the nearest double.
    return float(text)
