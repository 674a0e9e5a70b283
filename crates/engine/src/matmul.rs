//! Every matrix product in the engine goes through here: the `gemm` crate for
//! anything with more than a few rows, a cache-friendly dot-product kernel for
//! the few-row products of decoding, and a counter of executed FLOPs that the
//! FLOP-accounting tests compare against the analytic formula.
//!
//! Conventions: matrices are row-major slices; a weight `W` of a linear layer
//! is `[out, in]` as in PyTorch / Hugging Face, so `y = x · Wᵀ`.

use crate::float::Float;
use gemm::Parallelism;
use std::sync::atomic::{AtomicU64, Ordering};

static FLOPS: AtomicU64 = AtomicU64::new(0);

/// Multiply-add FLOPs (2·m·n·k per product) executed since the process started.
pub fn flops_executed() -> u64 {
    FLOPS.load(Ordering::Relaxed)
}

#[inline]
fn count(m: usize, n: usize, k: usize) {
    FLOPS.fetch_add(2 * (m * n * k) as u64, Ordering::Relaxed);
}

/// Whether this call may spread over the rayon pool, or must stay on the
/// calling thread (it already runs inside a parallel loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    Pool,
    Serial,
}

impl Par {
    fn gemm(self) -> Parallelism {
        match self {
            Par::Pool => {
                let n = rayon::current_num_threads();
                if n > 1 {
                    Parallelism::Rayon(n)
                } else {
                    Parallelism::None
                }
            }
            Par::Serial => Parallelism::None,
        }
    }
}

/// A strided view of a matrix: element (r, c) lives at `ptr[r*rs + c*cs]`.
#[derive(Clone, Copy)]
pub struct Mat<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

impl<T> Mat<T> {
    /// Row-major `[rows, cols]` matrix with a row stride of `ld` elements.
    pub fn rows(data: &[T], ld: usize) -> Self {
        Mat {
            ptr: data.as_ptr(),
            rs: ld as isize,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with row stride `ld`.
    pub fn transposed(data: &[T], ld: usize) -> Self {
        Mat {
            ptr: data.as_ptr(),
            rs: 1,
            cs: ld as isize,
        }
    }
}

/// `C[m,n] = beta·A·B (+ C if accumulate)`, C row-major with row stride `ldc`.
///
/// # Safety
/// `a` and `b` must address at least the m×k and k×n elements their strides
/// reach, and `c` an m×n region with row stride `ldc` that no one else touches.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_raw<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    c: *mut T,
    ldc: usize,
    accumulate: bool,
    a: Mat<T>,
    b: Mat<T>,
    beta: T,
    par: Par,
) {
    if m == 0 || n == 0 {
        return;
    }
    count(m, n, k);
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                std::slice::from_raw_parts_mut(c.add(r * ldc), n).fill(T::ZERO);
            }
        }
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        ldc as isize,
        accumulate,
        a.ptr,
        a.cs,
        a.rs,
        b.ptr,
        b.cs,
        b.rs,
        T::ONE,
        beta,
        false,
        false,
        false,
        par.gemm(),
    );
}

/// `y[rows, out] (+)= x[rows, in] · Wᵀ` — the forward pass of a linear layer.
pub fn linear_forward<T: Float>(y: &mut [T], x: &[T], w: &[T], rows: usize, d_in: usize, d_out: usize, accumulate: bool) {
    assert!(y.len() >= rows * d_out && x.len() >= rows * d_in && w.len() >= d_out * d_in);
    if rows <= SMALL_ROWS {
        small_rows_linear(y, x, w, rows, d_in, d_out, accumulate);
        return;
    }
    // SAFETY: the asserts above bound every access of the three views.
    unsafe {
        gemm_raw(
            rows,
            d_out,
            d_in,
            y.as_mut_ptr(),
            d_out,
            accumulate,
            Mat::rows(x, d_in),
            Mat::transposed(w, d_in),
            T::ONE,
            Par::Pool,
        )
    }
}

/// `dx[rows, in] (+)= dy[rows, out] · W` — the input gradient of a linear layer.
pub fn linear_backward_input<T: Float>(dx: &mut [T], dy: &[T], w: &[T], rows: usize, d_in: usize, d_out: usize, accumulate: bool) {
    assert!(dx.len() >= rows * d_in && dy.len() >= rows * d_out && w.len() >= d_out * d_in);
    // SAFETY: bounded by the assert.
    unsafe {
        gemm_raw(
            rows,
            d_in,
            d_out,
            dx.as_mut_ptr(),
            d_in,
            accumulate,
            Mat::rows(dy, d_out),
            Mat::rows(w, d_in),
            T::ONE,
            Par::Pool,
        )
    }
}

/// `dW[out, in] += dyᵀ · x` — the weight gradient of a linear layer, accumulated.
pub fn linear_backward_weight<T: Float>(dw: &mut [T], dy: &[T], x: &[T], rows: usize, d_in: usize, d_out: usize) {
    assert!(dw.len() >= d_out * d_in && dy.len() >= rows * d_out && x.len() >= rows * d_in);
    // SAFETY: bounded by the assert.
    unsafe {
        gemm_raw(
            d_out,
            d_in,
            rows,
            dw.as_mut_ptr(),
            d_in,
            true,
            Mat::transposed(dy, d_out),
            Mat::rows(x, d_in),
            T::ONE,
            Par::Pool,
        )
    }
}

/// Up to this many rows, a product is a handful of matrix-vector products:
/// decoding lives here, and gemm's packing would cost more than the math.
pub const SMALL_ROWS: usize = 4;

/// Output features per parallel task in the few-row kernel: large enough that
/// rayon's per-task cost is noise, small enough to keep both cores busy.
const OUT_CHUNK: usize = 64;

fn small_rows_linear<T: Float>(y: &mut [T], x: &[T], w: &[T], rows: usize, d_in: usize, d_out: usize, accumulate: bool) {
    use rayon::prelude::*;
    let y_ptr = SyncPtr(y.as_mut_ptr());
    let chunks = d_out.div_ceil(OUT_CHUNK);
    let run = |chunk: usize| {
        let start = chunk * OUT_CHUNK;
        let end = (start + OUT_CHUNK).min(d_out);
        // SAFETY: the caller's assert bounds y, x and w; chunks are disjoint.
        unsafe { matvec_rows(y_ptr.get(), d_out, x, w, rows, d_in, start..end, accumulate) };
    };
    if chunks > 1 && rayon::current_num_threads() > 1 {
        (0..chunks).into_par_iter().for_each(run);
    } else {
        (0..chunks).for_each(run);
    }
}

/// Lanes of one accumulator in [`matvec_rows`]: one AVX-512 register of f32.
const LANES: usize = 16;
/// Output features computed together in [`matvec_rows`]: eight independent
/// accumulators hide the FMA latency and share each load of `x`.
const OUT_BLOCK: usize = 8;

/// `y[r·ldy + o] (+)= x[r, :] · w[o, :]` for `o` in `outs` and `r < rows`, on
/// the calling thread — the matrix-vector products of decoding, where the
/// weights stream once from cache and nothing is packed.
///
/// Every output is computed the same way (16 lanes over the input in order,
/// then a fixed reduction) whichever block or range it falls in, so results
/// do not depend on how callers split `outs` between threads.
///
/// # Safety
/// `y` must address `rows` rows of stride `ldy` covering the columns in `outs`,
/// written by no one else during the call; `x` holds `rows·d_in` and `w` at
/// least `outs.end·d_in` elements.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matvec_rows<T: Float>(
    y: *mut T,
    ldy: usize,
    x: &[T],
    w: &[T],
    rows: usize,
    d_in: usize,
    outs: std::ops::Range<usize>,
    accumulate: bool,
) {
    count(rows, outs.len(), d_in);
    let store = |r: usize, o: usize, v: T| {
        let dst = y.add(r * ldy + o);
        *dst = if accumulate { *dst + v } else { v };
    };
    let mut o = outs.start;
    while o + OUT_BLOCK <= outs.end {
        let block: [&[T]; OUT_BLOCK] = std::array::from_fn(|j| &w[(o + j) * d_in..(o + j + 1) * d_in]);
        for r in 0..rows {
            let sums = T::dot_block(&block, &x[r * d_in..(r + 1) * d_in]);
            for (j, &v) in sums.iter().enumerate() {
                store(r, o + j, v);
            }
        }
        o += OUT_BLOCK;
    }
    while o < outs.end {
        let row = [&w[o * d_in..(o + 1) * d_in]];
        for r in 0..rows {
            store(r, o, T::dot_block(&row, &x[r * d_in..(r + 1) * d_in])[0]);
        }
        o += 1;
    }
}

/// `B` dot products of equal-length rows with one vector `x`: 16 lanes per
/// row over the input in order, a fixed reduction, then the tail — the
/// portable version of what [`Float::dot_block`] does with explicit SIMD.
#[inline(always)]
pub(crate) fn dot_block_portable<T: Float, const B: usize>(rows: &[&[T]; B], x: &[T]) -> [T; B] {
    let n = x.len();
    let (xc, xt) = x.as_chunks::<LANES>();
    let full = xc.len() * LANES;
    let mut acc = [[T::ZERO; LANES]; B];
    for j in 0..B {
        let (rc, _) = rows[j][..n].as_chunks::<LANES>();
        for (wv, xv) in rc.iter().zip(xc) {
            for i in 0..LANES {
                acc[j][i] = wv[i].mul_add(xv[i], acc[j][i]);
            }
        }
    }
    std::array::from_fn(|j| {
        let s = acc[j].iter().fold(T::ZERO, |s, &v| s + v);
        xt.iter().enumerate().fold(s, |s, (k, &xv)| rows[j][full + k].mul_add(xv, s))
    })
}

/// Dot product of the common prefix of `a` and `b`.
#[inline]
pub fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    T::dot_block(&[&a[..n]], &b[..n])[0]
}

/// `y += alpha · x`
#[inline]
pub fn axpy<T: Float>(y: &mut [T], alpha: T, x: &[T]) {
    for (a, b) in y.iter_mut().zip(x) {
        *a += alpha * *b;
    }
}

/// A raw pointer that may cross into rayon tasks. Users promise that tasks
/// write disjoint elements.
#[derive(Clone, Copy)]
pub struct SyncPtr<T>(pub *mut T);
// SAFETY: only used for disjoint writes from parallel tasks, as documented at each use.
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SyncPtr<T> {}
impl<T> SyncPtr<T> {
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f64], w: &[f64], rows: usize, d_in: usize, d_out: usize) -> Vec<f64> {
        let mut y = vec![0.0; rows * d_out];
        for r in 0..rows {
            for o in 0..d_out {
                y[r * d_out + o] = (0..d_in).map(|i| x[r * d_in + i] * w[o * d_in + i]).sum();
            }
        }
        y
    }

    fn seq(n: usize, salt: f64) -> Vec<f64> {
        (0..n).map(|i| (i as f64 * 0.37 + salt).sin()).collect()
    }

    #[test]
    fn linear_forward_matches_naive_for_small_and_large_row_counts() {
        for rows in [1, 3, 4, 5, 33] {
            let (d_in, d_out) = (37, 70);
            let x = seq(rows * d_in, 0.1);
            let w = seq(d_out * d_in, 0.7);
            let mut y = vec![0.0; rows * d_out];
            linear_forward(&mut y, &x, &w, rows, d_in, d_out, false);
            let want = naive(&x, &w, rows, d_in, d_out);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 1e-10, "rows={rows}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn backward_products_match_naive() {
        let (rows, d_in, d_out) = (9, 13, 6);
        let x = seq(rows * d_in, 0.3);
        let w = seq(d_out * d_in, 0.9);
        let dy = seq(rows * d_out, 1.7);
        let mut dx = vec![0.0; rows * d_in];
        linear_backward_input(&mut dx, &dy, &w, rows, d_in, d_out, false);
        for r in 0..rows {
            for i in 0..d_in {
                let want: f64 = (0..d_out).map(|o| dy[r * d_out + o] * w[o * d_in + i]).sum();
                assert!((dx[r * d_in + i] - want).abs() < 1e-10);
            }
        }
        let mut dw = vec![1.0; d_out * d_in];
        linear_backward_weight(&mut dw, &dy, &x, rows, d_in, d_out);
        for o in 0..d_out {
            for i in 0..d_in {
                let want: f64 = 1.0 + (0..rows).map(|r| dy[r * d_out + o] * x[r * d_in + i]).sum::<f64>();
                assert!((dw[o * d_in + i] - want).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn flop_counter_counts_two_mnk() {
        let before = flops_executed();
        let x = vec![1.0f32; 8 * 16];
        let w = vec![1.0f32; 4 * 16];
        let mut y = vec![0.0f32; 8 * 4];
        linear_forward(&mut y, &x, &w, 8, 16, 4, false);
        // Other tests may run concurrently; the counter only grows.
        assert!(flops_executed() - before >= 2 * 8 * 16 * 4);
        assert!(y.iter().all(|&v| v == 16.0));
    }
}
