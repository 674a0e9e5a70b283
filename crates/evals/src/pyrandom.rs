//! CPython's `random.Random` (MT19937 with `init_by_array` seeding), enough of it to
//! reproduce the sample order openai/evals derives from `random.Random(123).shuffle`,
//! so `--max_samples N` selects exactly the samples `oaieval` would.

const N: usize = 624;
const M: usize = 397;

/// A Mersenne Twister seeded the way CPython seeds it from a non-negative integer.
#[derive(Clone)]
pub struct PyRandom {
    mt: [u32; N],
    index: usize,
}

impl PyRandom {
    /// Equivalent of `random.Random(seed)` for an integer seed (CPython uses |seed|).
    pub fn new(seed: u128) -> Self {
        // CPython splits |seed| into 32-bit words, least significant first; 0 becomes [0].
        let mut key = Vec::new();
        let mut rest = seed;
        while rest > 0 {
            key.push(rest as u32);
            rest >>= 32;
        }
        if key.is_empty() {
            key.push(0);
        }
        Self::from_key(&key)
    }

    fn from_key(key: &[u32]) -> Self {
        let mut mt = [0u32; N];
        mt[0] = 19_650_218;
        for i in 1..N {
            mt[i] = 1_812_433_253u32.wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_add(i as u32);
        }
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            mt[i] = (mt[i] ^ (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            mt[i] = (mt[i] ^ (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
        PyRandom { mt, index: N }
    }

    fn twist(&mut self) {
        for k in 0..N {
            let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % N] & 0x7fff_ffff);
            let mut v = self.mt[(k + M) % N] ^ (y >> 1);
            if y & 1 == 1 {
                v ^= 0x9908_b0df;
            }
            self.mt[k] = v;
        }
        self.index = 0;
    }

    /// `genrand_uint32`: the raw 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `getrandbits(k)` for 1 <= k <= 64 (words are consumed least significant first).
    pub fn getrandbits(&mut self, k: u32) -> u64 {
        debug_assert!((1..=64).contains(&k));
        if k <= 32 {
            return u64::from(self.next_u32() >> (32 - k));
        }
        let low = u64::from(self.next_u32());
        let high = u64::from(self.next_u32() >> (64 - k));
        (high << 32) | low
    }

    /// `_randbelow(n)`: rejection sampling on `n.bit_length()` bits.
    pub fn randbelow(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let k = 64 - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }

    /// `random()`: a 53-bit float in [0, 1).
    pub fn random(&mut self) -> f64 {
        let a = u64::from(self.next_u32() >> 5);
        let b = u64::from(self.next_u32() >> 6);
        (a as f64 * 67_108_864.0 + b as f64) / 9_007_199_254_740_992.0
    }

    /// `shuffle(x)` in place, exactly as CPython 3.x does it.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.randbelow(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// The order in which openai/evals visits `n` samples (`_index_samples`, SHUFFLE_SEED = 123).
pub fn sample_order(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    PyRandom::new(123).shuffle(&mut order);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values printed by CPython 3.11's `random` module.
    #[test]
    fn matches_cpython_streams() {
        let mut r = PyRandom::new(123);
        assert_eq!(
            [r.next_u32(), r.next_u32(), r.next_u32()],
            [224_899_942, 1_149_664_691, 374_463_918]
        );
        assert_eq!(r.random(), 0.768_956_388_587_070_7);
        let mut big = PyRandom::new((1u128 << 40) + 5);
        assert_eq!([big.next_u32(), big.next_u32()], [2_166_296_868, 2_220_160_828]);
    }

    #[test]
    fn shuffle_matches_cpython() {
        assert_eq!(sample_order(3), vec![2, 1, 0]);
        assert_eq!(sample_order(5), vec![3, 1, 4, 2, 0]);
        assert_eq!(sample_order(10), vec![8, 7, 5, 9, 2, 3, 6, 1, 4, 0]);
        assert_eq!(
            sample_order(1000)[..12],
            [178, 830, 641, 410, 255, 470, 433, 580, 257, 450, 657, 316]
        );
    }
}
