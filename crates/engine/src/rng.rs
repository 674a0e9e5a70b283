//! A small, fast, fully deterministic RNG (xoshiro256**, seeded by SplitMix64)
//! whose whole state is four words, so checkpoints can save and restore it and
//! a resumed run draws exactly the numbers the uninterrupted run would have.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (Lemire's multiply-shift; bias < 2^-64·n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal by Box-Muller (one draw per call, for simplicity of state).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_state_restores() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let saved = serde_json::to_string(&a).unwrap();
        let x: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let mut c: Rng = serde_json::from_str(&saved).unwrap();
        let y: Vec<u64> = (0..5).map(|_| c.next_u64()).collect();
        assert_eq!(x, y);
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.02, "mean {mean} var {var}");
    }
}

#[cfg(test)]
mod known_values {
    //! Streams as this generator produces them today, so a move or refactor can prove it
    //! keeps every stream (weight init, sampling, checkpoints) bit-identical.
    use super::*;

    #[test]
    fn stream_and_helpers() {
        let mut r = Rng::new(42);
        let v: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(
            v,
            [1546998764402558742, 6990951692964543102, 12544586762248559009, 17057574109182124193]
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"s":[7903954225905035531,9357853297271469720,2724644940759801119,10543582298886573110]}"#
        );
        let mut r = Rng::new(7);
        assert_eq!(r.uniform().to_bits(), 4604485451513454382);
        assert_eq!(r.below(1000), 278);
        assert_eq!(r.normal().to_bits(), 4611234616235720674);
        let mut v: Vec<u32> = (0..10).collect();
        Rng::new(3).shuffle(&mut v);
        assert_eq!(v, [9, 4, 8, 0, 7, 2, 3, 1, 5, 6]);
    }
}
