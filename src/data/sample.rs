//! Seeded sampling whose results never change with a dependency's version: `rand`'s `StdRng` is not
//! promised to be stable across releases, and a data split that silently changes makes runs incomparable.

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and fully specified by its seed.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for one named stream: each group gets its own, so adding or removing another group
    /// leaves its samples as they were.
    pub(crate) fn for_key(seed: u64, key: &str) -> SplitMix64 {
        // FNV-1a of the key, then one SplitMix64 step to spread it.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut g = SplitMix64(seed ^ h);
        g.next_u64();
        g
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for any list we sample).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Moves `k` uniformly chosen items to the front (a partial Fisher-Yates shuffle) and drops the rest.
    pub(crate) fn choose<T>(&mut self, mut items: Vec<T>, k: usize) -> Vec<T> {
        let k = k.min(items.len());
        for i in 0..k {
            let j = i + self.below(items.len() - i);
            items.swap(i, j);
        }
        items.truncate(k);
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_four(seed: u64, key: &str) -> Vec<u64> {
        let mut g = SplitMix64::for_key(seed, key);
        (0..4).map(|_| g.next_u64()).collect()
    }

    #[test]
    fn same_key_same_stream_other_key_other_stream() {
        assert_eq!(first_four(7, "red car"), first_four(7, "red car"));
        assert_ne!(first_four(7, "red car"), first_four(8, "red car"));
        assert_ne!(first_four(7, "red car"), first_four(7, "blue car"));
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // First outputs of SplitMix64 seeded with 0, from the reference C implementation (Vigna).
        let mut g = SplitMix64(0);
        assert_eq!(g.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(g.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn choose_takes_distinct_items_and_all_when_short() {
        let mut g = SplitMix64::for_key(1, "x");
        let picked = g.choose((0..100).collect::<Vec<_>>(), 10);
        let mut sorted = picked.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 10);
        let all = g.choose(vec![1, 2, 3], 10);
        assert_eq!(all.len(), 3);
    }
}
