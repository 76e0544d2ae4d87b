// SplitMix64, the portable PRNG behind every random choice of a workload,
// ported bit for bit from the Rust SDK (sdk/src/rng.rs) with BigInt.

const MASK64 = 0xffffffffffffffffn;

/**
 * SplitMix64 (Steele, Lea and Flood, 2014), bit for bit as the Rust SDK.
 * Each draw consumes exactly one `nextU64`.
 */
export class SplitMix64 {
  /** @param {bigint|number} seed any u64; numbers must be safe integers. */
  constructor(seed) {
    this.state = BigInt.asUintN(64, BigInt(seed));
  }

  /** The next 64 random bits, as a BigInt. */
  nextU64() {
    this.state = (this.state + 0x9e3779b97f4a7c15n) & MASK64;
    let z = this.state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    return z ^ (z >> 31n);
  }

  /** A uniform number in [0, 1): the top 53 bits times 2^-53 (exact). */
  nextF64() {
    return Number(this.nextU64() >> 11n) * 2 ** -53;
  }

  /** A whole number in lo..=hi: `lo + nextU64() % (hi - lo + 1)`. */
  rangeU32(lo, hi) {
    if (!(lo <= hi)) throw new Error(`rangeU32: empty range ${lo}..=${hi}`);
    const span = BigInt(hi - lo) + 1n;
    return lo + Number(this.nextU64() % span);
  }

  /** `items[nextU64() % items.length]`. */
  pick(items) {
    if (items.length === 0) throw new Error('pick: empty list');
    return items[Number(this.nextU64() % BigInt(items.length))];
  }
}
