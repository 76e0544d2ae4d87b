//! A deterministic pseudo-random generator that other languages can copy bit
//! for bit.
//!
//! Workloads are meant to be rewritten in JavaScript and Python with
//! byte-identical output for the same seed, so nothing here may depend on a
//! Rust crate's sampling algorithm or on floating-point rounding beyond a
//! single exact multiplication.

/// SplitMix64 (Steele, Lea and Flood, 2014; the variant in Vigna's
/// `splitmix64.c`), the generator behind every random choice of a workload.
///
/// All arithmetic is on unsigned 64-bit integers and wraps modulo 2^64:
///
/// ```text
/// state = state + 0x9E3779B97F4A7C15
/// z = state
/// z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
/// z = (z ^ (z >> 27)) * 0x94D049BB133111EB
/// return z ^ (z >> 31)
/// ```
///
/// The derived draws are defined so that they port exactly:
///
/// - [`next_f64`](Self::next_f64): `(next_u64() >> 11) * 2^-53`, the top 53
///   bits as a fraction in `[0, 1)`; the product is exact in IEEE doubles.
/// - [`range_u32`](Self::range_u32)`(lo, hi)`: `lo + next_u64() % (hi - lo + 1)`,
///   computed in 64 bits. The modulo bias is below 2^-32 and is accepted in
///   exchange for a one-line port.
/// - [`pick`](Self::pick)`(items)`: `items[next_u64() % len]`.
///
/// Each draw consumes exactly one `next_u64`. A Python port:
///
/// ```text
/// M = (1 << 64) - 1
/// def next_u64(self):
///     self.state = (self.state + 0x9E3779B97F4A7C15) & M
///     z = self.state
///     z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
///     z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
///     return z ^ (z >> 31)
/// ```
///
/// In JavaScript, use `BigInt` and `BigInt.asUintN(64, …)` after each add and
/// multiply; `next_f64` is `Number(x >> 11n) * 2 ** -53`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose first output is the first SplitMix64 output for `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A value in `lo..=hi`.
    ///
    /// # Panics
    ///
    /// When `lo > hi`.
    pub fn range_u32(&mut self, lo: u32, hi: u32) -> u32 {
        assert!(lo <= hi, "range_u32: empty range {lo}..={hi}");
        let span = u64::from(hi - lo) + 1;
        // The remainder is below `span`, which fits in u32 after the offset.
        lo + (self.next_u64() % span) as u32
    }

    /// One element of `items`.
    ///
    /// # Panics
    ///
    /// When `items` is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        assert!(!items.is_empty(), "pick: empty slice");
        let index = self.next_u64() % items.len() as u64;
        &items[index as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed with the Python port in the type's documentation.
    #[test]
    fn first_outputs_seed_0() {
        let mut rng = SplitMix64::new(0);
        let got: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f,
                0xf88b_b8a8_724c_81ec
            ]
        );
    }

    #[test]
    fn first_outputs_seed_1337() {
        let mut rng = SplitMix64::new(1337);
        let got: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                0xb6a8_a9b3_13ca_a00b,
                0xcb7f_284b_67d6_05c9,
                0x3440_fccf_5408_2b5a,
                0x7702_6dc1_feef_c262
            ]
        );
    }

    #[test]
    fn next_f64_uses_top_53_bits() {
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_f64(), 0.8833108082136426);
        assert_eq!(rng.next_f64(), 0.43152799704850997);
        let mut rng = SplitMix64::new(1337);
        assert_eq!(rng.next_f64(), 0.7135110914421525);
        assert_eq!(rng.next_f64(), 0.794909017953465);
    }

    #[test]
    fn range_u32_is_offset_modulo() {
        let mut rng = SplitMix64::new(0);
        let got: Vec<u32> = (0..4).map(|_| rng.range_u32(512, 2048)).collect();
        assert_eq!(got, [1054, 1501, 1649, 1815]);
        let mut rng = SplitMix64::new(1337);
        let got: Vec<u32> = (0..8).map(|_| rng.range_u32(1, 6)).collect();
        assert_eq!(got, [2, 6, 3, 3, 1, 6, 6, 2]);
    }

    #[test]
    fn range_u32_covers_the_full_u32_domain() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..1000 {
            rng.range_u32(0, u32::MAX);
        }
        assert_eq!(rng.range_u32(5, 5), 5);
    }

    #[test]
    fn pick_indexes_by_modulo() {
        let items = [10, 20, 30, 40, 50, 60];
        let mut rng = SplitMix64::new(1337);
        let got: Vec<i32> = (0..8).map(|_| *rng.pick(&items)).collect();
        // Same draws as `range_u32(1, 6)` above, shifted to indices.
        assert_eq!(got, [20, 60, 30, 30, 10, 60, 60, 20]);
    }
}
