"""Typed access to a workload's parameters, ported from the Rust SDK
(sdk/src/params.rs) with the same parsing rules and error messages, plus
``WorkloadError``, what a workload raises to fail a call."""

import struct

from wit_world.imports import types

from .rust import debug_str, display_f64, parse_f64, parse_u32, parse_u64, trim


class WorkloadError(Exception):
    """Raise it to fail a call with the WIT ``workload-error``; ``kind`` is
    ``invalid-config``, ``unsupported`` or ``internal``. (Raising
    ``componentize_py_types.Err(types.WorkloadError_…(message))`` works too.)"""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message

    @classmethod
    def invalid_config(cls, message: str) -> "WorkloadError":
        return cls("invalid-config", message)

    @classmethod
    def unsupported(cls, message: str) -> "WorkloadError":
        return cls("unsupported", message)

    @classmethod
    def internal(cls, message: str) -> "WorkloadError":
        return cls("internal", message)

    def to_wit(self):
        """The WIT ``workload-error`` value."""
        return {
            "invalid-config": types.WorkloadError_InvalidConfig,
            "unsupported": types.WorkloadError_Unsupported,
            "internal": types.WorkloadError_Internal,
        }[self.kind](self.message)


def invalid(name: str, value: str, expected: str) -> WorkloadError:
    """``parameter `name`: "value" is not valid; expected …``, as the Rust SDK."""
    return WorkloadError.invalid_config(
        f"parameter `{name}`: {debug_str(value)} is not valid; expected {expected}"
    )


def param(name: str, description: str, default_value: str) -> types.ParamInfo:
    """A ``param-info`` record for ``describe()``."""
    return types.ParamInfo(name=name, description=description, default_value=default_value)


def f32(x: float) -> float:
    """``x as f32`` in Rust: round to the nearest f32 (overflow gives an infinity)."""
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return float("inf") if x > 0 else float("-inf")


class Params:
    """The params of one run: the user's values over the declared defaults.

    ``declared``: objects with ``name`` and ``default_value`` (``describe()``'s
    ``ParamInfo``); ``given``: objects with ``name`` and ``value`` (the WIT
    ``param``) or ``(name, value)`` pairs.
    """

    def __init__(self, declared, given):
        self._entries = [[info.name, info.default_value, False] for info in declared]
        for item in given:
            name, value = item if isinstance(item, tuple) else (item.name, item.value)
            entry = next((e for e in self._entries if e[0] == name), None)
            if entry is None:
                known = [info.name for info in declared]
                raise WorkloadError.invalid_config(
                    f"unknown parameter `{name}`; this workload accepts: "
                    + (", ".join(known) if known else "no parameters")
                )
            if entry[2]:
                raise WorkloadError.invalid_config(f"parameter `{name}` is given more than once")
            entry[1] = value
            entry[2] = True

    def pairs(self):
        """All ``(name, value)`` pairs, in declaration order."""
        return [(e[0], e[1]) for e in self._entries]

    def is_set(self, name: str) -> bool:
        """Whether the user set ``name`` (rather than taking the default)."""
        return self._entry(name)[2]

    def get_str(self, name: str) -> str:
        return self._entry(name)[1]

    def get_choice(self, name: str, choices) -> str:
        value = self.get_str(name)
        if value in choices:
            return value
        raise invalid(name, value, "one of " + ", ".join(choices))

    def get_u32(self, name: str) -> int:
        value = self.get_str(name)
        n = parse_u32(trim(value))
        if n is None:
            raise invalid(name, value, "a whole number from 0 to 4294967295")
        return n

    def get_u32_min(self, name: str, lo: int) -> int:
        """A whole number of at least ``lo``."""
        value = self.get_str(name)
        n = parse_u32(trim(value))
        if n is None or n < lo:
            raise invalid(name, value, f"a whole number of at least {lo}")
        return n

    def get_u32_in(self, name: str, lo: int, hi: int) -> int:
        """A whole number in lo..=hi."""
        value = self.get_str(name)
        n = parse_u32(trim(value))
        if n is None or not lo <= n <= hi:
            raise invalid(name, value, f"a whole number from {lo} to {hi}")
        return n

    def get_opt_u32(self, name: str):
        """A whole number in 0..=u32::MAX, or None when the value is empty."""
        value = self.get_str(name)
        if value == "":
            return None
        n = parse_u32(trim(value))
        if n is None:
            raise invalid(name, value, "a whole number from 0 to 4294967295, or empty")
        return n

    def get_f64(self, name: str) -> float:
        value = self.get_str(name)
        x = _finite(value)
        if x is None:
            raise invalid(name, value, "a finite number such as 0.7")
        return x

    def get_opt_f64(self, name: str):
        """A finite float, or None when the value is empty."""
        value = self.get_str(name)
        if value == "":
            return None
        x = _finite(value)
        if x is None:
            raise invalid(name, value, "a finite number such as 0.7, or empty")
        return x

    def get_opt_u64(self, name: str):
        """A whole number in 0..=u64::MAX, or None when the value is empty."""
        value = self.get_str(name)
        if value == "":
            return None
        n = parse_u64(trim(value))
        if n is None:
            raise invalid(name, value, "a whole number from 0 to 18446744073709551615, or empty")
        return n

    def get_bool(self, name: str) -> bool:
        value = self.get_str(name)
        text = trim(value)
        if text == "true":
            return True
        if text == "false":
            return False
        raise invalid(name, value, "true or false")

    def get_range(self, name: str):
        """``MIN:MAX`` with whole numbers 1 <= MIN <= MAX, as ``(min, max)``."""
        value = self.get_str(name)
        expected = "MIN:MAX with whole numbers 1 <= MIN <= MAX, such as 512:2048"
        lo = hi = None
        if ":" in value:
            a, b = value.split(":", 1)
            lo, hi = parse_u32(trim(a)), parse_u32(trim(b))
        if lo is None or hi is None or lo == 0 or lo > hi:
            raise invalid(name, value, expected)
        return (lo, hi)

    def get_list(self, name: str):
        """Comma-separated, items verbatim; an empty value is an empty list."""
        value = self.get_str(name)
        return [] if value == "" else value.split(",")

    def get_sampling(self) -> "Sampling":
        """The sampling params declared by ``generation_params``: temperature,
        top-p (rounded to f32), stop and request-seed."""
        temperature = self.get_opt_f64("temperature")
        if temperature is not None and temperature < 0.0:
            raise invalid("temperature", display_f64(temperature), "0 or more, or empty")
        top_p = self.get_opt_f64("top-p")
        if top_p is not None and (top_p <= 0.0 or top_p > 1.0):
            raise invalid("top-p", display_f64(top_p), "above 0 and at most 1, or empty")
        return Sampling(
            temperature=None if temperature is None else f32(temperature),
            top_p=None if top_p is None else f32(top_p),
            stop=self.get_list("stop"),
            seed=self.get_opt_u64("request-seed"),
        )

    def get_generation(self) -> types.Generation:
        """All params declared by ``generation_params`` as one ``Generation``."""
        max_tokens = self.get_u32_min("max-tokens", 1)
        sampling = self.get_sampling()
        return sampling.generation(max_tokens, self.get_bool("ignore-eos"))

    def _entry(self, name: str):
        for e in self._entries:
            if e[0] == name:
                return e
        # The workload read a name it never declared: its bug, not the user's.
        raise WorkloadError.internal(f"parameter `{name}` is read but not declared in describe()")


def _finite(text: str):
    x = parse_f64(trim(text))
    if x is None or x != x or x in (float("inf"), float("-inf")):
        return None
    return x


class Sampling:
    """Sampling fields of a ``Generation``, as read by ``Params.get_sampling``."""

    def __init__(self, temperature, top_p, stop, seed):
        self.temperature = temperature
        self.top_p = top_p
        self.stop = stop
        self.seed = seed

    def generation(self, max_tokens: int, ignore_eos: bool) -> types.Generation:
        return types.Generation(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=list(self.stop),
            seed=self.seed,
            ignore_eos=ignore_eos,
        )


#: The seed harness's defaults of the generation params, as text.
SEED_GENERATION_DEFAULTS = {
    "max_tokens": "256",
    "temperature": "0.7",
    "top_p": "1.0",
    "stop": "<|eot_id|>",
    "ignore_eos": "false",
}


def generation_params(**overrides):
    """Declarations of max-tokens, temperature, top-p, stop, request-seed and
    ignore-eos (the names the host's shorthand flags set), read back with
    ``Params.get_generation``. Keyword arguments (``max_tokens``,
    ``temperature``, ``top_p``, ``stop``, ``ignore_eos``) override
    ``SEED_GENERATION_DEFAULTS``."""
    unknown = set(overrides) - set(SEED_GENERATION_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown generation defaults: {sorted(unknown)}")
    d = {**SEED_GENERATION_DEFAULTS, **overrides}
    return [
        param("max-tokens", "max_tokens sent with every request (at least 1).", d["max_tokens"]),
        param(
            "temperature",
            "temperature sent with every request; empty leaves it out.",
            d["temperature"],
        ),
        param("top-p", "top_p sent with every request, in (0, 1]; empty leaves it out.", d["top_p"]),
        param(
            "stop",
            "Comma-separated stop strings; empty sends none. Strings cannot contain a comma.",
            d["stop"],
        ),
        param(
            "request-seed",
            "Sampling seed sent as `seed` with every request; empty leaves it out.",
            "",
        ),
        param(
            "ignore-eos",
            "true asks the server to generate exactly max-tokens tokens.",
            d["ignore_eos"],
        ),
    ]
