"""SplitMix64, the portable PRNG behind every random choice of a workload,
ported bit for bit from the Rust SDK (sdk/src/rng.rs)."""

_MASK64 = (1 << 64) - 1


class SplitMix64:
    """SplitMix64 (Steele, Lea and Flood, 2014). Each draw consumes exactly
    one ``next_u64``."""

    def __init__(self, seed: int):
        self.state = seed & _MASK64

    def next_u64(self) -> int:
        """The next 64 random bits."""
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def next_f64(self) -> float:
        """A uniform float in [0, 1): the top 53 bits times 2**-53 (exact)."""
        return (self.next_u64() >> 11) * (2.0**-53)

    def range_u32(self, lo: int, hi: int) -> int:
        """A whole number in lo..=hi: ``lo + next_u64() % (hi - lo + 1)``."""
        if lo > hi:
            raise ValueError(f"range_u32: empty range {lo}..={hi}")
        return lo + self.next_u64() % (hi - lo + 1)

    def pick(self, items):
        """``items[next_u64() % len(items)]``."""
        if not items:
            raise ValueError("pick: empty sequence")
        return items[self.next_u64() % len(items)]
