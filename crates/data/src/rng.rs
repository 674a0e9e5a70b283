//! A small deterministic RNG (SplitMix64) so that shuffles, splits and synthetic data are
//! identical on every platform and independent of any external crate's version.

/// SplitMix64: fast, statistically solid for shuffling and sampling, trivially seedable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// A generator for one of many independent streams derived from a seed (e.g. per epoch or
    /// per synthetic document), so streams can be produced in any order or in parallel.
    pub fn derived(seed: u64, stream: u64) -> Self {
        let mut r = Rng::new(seed ^ mix(stream.wrapping_add(0x5851_F42D_4C95_7F2D)));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in `0..n` (`n > 0`); the multiply-shift bias is below 2^-32 for any n used here.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi - lo) as u64 + 1;
        lo + self.below(span) as i64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// SplitMix64's finalizer: a strong 64-bit mixing function.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stable 64-bit hash of a string (FNV-1a, then mixed), for seeding and split decisions.
pub fn hash_str(seed: u64, s: &str) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64 ^ mix(seed);
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_bounds_hold() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
            let r = a.range(-3, 3);
            assert_eq!(r, b.range(-3, 3));
            assert!((-3..=3).contains(&r));
        }
        assert_ne!(Rng::derived(1, 0).next_u64(), Rng::derived(1, 1).next_u64());
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..100).collect();
        Rng::new(3).shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}

#[cfg(test)]
mod known_values {
    //! Streams as this generator produces them today, so a move or refactor can prove it
    //! keeps every stream (shuffles, splits, synthetic data) bit-identical.
    use super::*;

    #[test]
    fn stream_and_helpers() {
        let mut r = Rng::new(42);
        let v: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(
            v,
            [13679457532755275413, 2949826092126892291, 5139283748462763858, 6349198060258255764]
        );
        let mut r = Rng::derived(9, 3);
        assert_eq!([r.next_u64(), r.next_u64()], [9477503660928761673, 17472331091292834098]);
        let mut r = Rng::new(7);
        r.next_u64();
        assert_eq!(r.below(1000), 16);
        assert_eq!(r.range(-50, 50), 40);
        assert_eq!(*r.choose(&[10, 20, 30, 40, 50]), 30);
        let mut v: Vec<u32> = (0..10).collect();
        Rng::new(3).shuffle(&mut v);
        assert_eq!(v, [5, 7, 2, 8, 3, 9, 0, 4, 6, 1]);
        assert_eq!(mix(12345), 17540659726606785873);
        assert_eq!(hash_str(0, "code_task"), 12627140366130275549);
        assert_eq!(hash_str(17, ""), 8693356156725248917);
    }
}
