//! Forward and backward kernels of the Llama block, each a pair of functions
//! over preallocated slices. Every backward is checked against central finite
//! differences in f64 (`tests` in each file) and, through the whole model,
//! against PyTorch (`tests/golden.rs`).

// Index loops here mirror the math (row i, column j) and index several
// arrays at once; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]

pub mod attention;
pub mod embedding;
pub mod norm;
pub mod post_training;
pub mod rope;
pub mod swiglu;
pub mod xent;

/// Rows per parallel task for row-wise kernels: a fixed size (not derived from
/// the thread count) keeps per-chunk partial sums, and so results, identical
/// whatever the number of threads.
pub const ROW_CHUNK: usize = 32;

#[cfg(test)]
pub(crate) mod testutil {
    use ferrogpt_rng::Xoshiro256StarStar;

    pub fn randn(n: usize, seed: u64) -> Vec<f64> {
        let mut r = Xoshiro256StarStar::new(seed);
        (0..n).map(|_| r.normal()).collect()
    }

    /// Central finite difference of `f` w.r.t. `x[i]`.
    pub fn fd(x: &mut [f64], i: usize, f: &mut dyn FnMut(&[f64]) -> f64) -> f64 {
        let h = 1e-6;
        let orig = x[i];
        x[i] = orig + h;
        let up = f(x);
        x[i] = orig - h;
        let down = f(x);
        x[i] = orig;
        (up - down) / (2.0 * h)
    }

    pub fn assert_close(analytic: f64, numeric: f64, what: &str) {
        let tol = 1e-6 * (1.0 + numeric.abs());
        assert!((analytic - numeric).abs() < tol, "{what}: analytic {analytic} vs numeric {numeric}");
    }

    pub fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }
}
