//! Rotary position embedding in Hugging Face Llama's "rotate half" layout:
//! within a head, element `i` pairs with `i + hd/2` and the pair is rotated by
//! `pos · θ^(−2i/hd)`. Backward is the rotation by the opposite angle.

use super::ROW_CHUNK;
use crate::float::Float;
use crate::simd::{multiversion, Kernels};
use rayon::prelude::*;

/// cos/sin of every (position, frequency) pair, `[max_pos, hd/2]` each.
#[derive(Clone, Debug)]
pub struct RopeTable<T> {
    half: usize,
    cos: Vec<T>,
    sin: Vec<T>,
}

impl<T: Float> RopeTable<T> {
    pub fn new(head_dim: usize, max_pos: usize, theta: f64) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for i in 0..half {
                let inv_freq = theta.powf(-2.0 * i as f64 / head_dim as f64);
                let a = p as f64 * inv_freq;
                cos.push(T::from_f64(a.cos()));
                sin.push(T::from_f64(a.sin()));
            }
        }
        RopeTable { half, cos, sin }
    }

    pub fn max_pos(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    /// Rotates the q and k heads (the first `qk` values) of every `ld`-long
    /// row of `rows`, row `r` being at position `r mod seq`, in parallel.
    pub fn rotate_rows(&self, rows: &mut [T], ld: usize, qk: usize, seq: usize, inverse: bool) {
        let kernels = Kernels::active();
        rows.par_chunks_mut(ROW_CHUNK * ld)
            .enumerate()
            .for_each(|(c, chunk)| rotate_chunk(kernels, self, chunk, c * ROW_CHUNK, ld, qk, seq, inverse));
    }

    /// Rotate `n_heads` consecutive heads of one token at position `pos`
    /// (`x` is `n_heads · hd` long). `inverse` rotates backwards (the gradient).
    #[inline(always)]
    pub fn apply(&self, x: &mut [T], pos: usize, inverse: bool) {
        let half = self.half;
        let c = &self.cos[pos * half..(pos + 1) * half];
        let s = &self.sin[pos * half..(pos + 1) * half];
        for head in x.chunks_exact_mut(2 * half) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                let sn = if inverse { -s[i] } else { s[i] };
                a[i] = x1 * c[i] - x2 * sn;
                b[i] = x2 * c[i] + x1 * sn;
            }
        }
    }
}

multiversion! {
    fn rotate_chunk<T: Float>(
        isa: Isa,
        table: &RopeTable<T>,
        rows: &mut [T],
        first: usize,
        ld: usize,
        qk: usize,
        seq: usize,
        inverse: bool,
    ) {
        for (i, row) in rows.chunks_exact_mut(ld).enumerate() {
            table.apply(&mut row[..qk], (first + i) % seq, inverse);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn every_kernel_path_gives_the_same_bits() {
        let t = RopeTable::<f32>::new(64, 40, 10_000.0);
        let (ld, qk, rows) = (64 * 5, 64 * 3, 7);
        let x: Vec<f32> = randn(rows * ld, 8).iter().map(|&v| v as f32).collect();
        let run = |k, inverse| {
            let mut y = x.clone();
            rotate_chunk(k, &t, &mut y, 30, ld, qk, 40, inverse);
            y
        };
        let kernels = crate::simd::tests::all_kernels();
        for inverse in [false, true] {
            let want = run(kernels[0], inverse);
            for &k in &kernels[1..] {
                assert_eq!(run(k, inverse), want, "{:?}", k.path());
            }
        }
    }

    #[test]
    fn gradient_is_the_inverse_rotation() {
        let (hd, heads) = (8, 3);
        let t = RopeTable::<f64>::new(hd, 16, 10_000.0);
        let mut x = randn(hd * heads, 4);
        let up = randn(hd * heads, 5);
        let pos = 11;
        let mut g = up.clone();
        t.apply(&mut g, pos, true);
        for i in 0..x.len() {
            let n = fd(&mut x, i, &mut |x| {
                let mut y = x.to_vec();
                t.apply(&mut y, pos, false);
                dot(&y, &up)
            });
            assert_close(g[i], n, &format!("dx[{i}]"));
        }
    }

    #[test]
    fn position_zero_is_identity_and_norm_is_preserved() {
        let t = RopeTable::<f64>::new(8, 4, 10_000.0);
        let x = randn(8, 6);
        let mut y = x.clone();
        t.apply(&mut y, 0, false);
        assert_eq!(x, y);
        t.apply(&mut y, 3, false);
        assert!((dot(&x, &x) - dot(&y, &y)).abs() < 1e-12);
    }
}
