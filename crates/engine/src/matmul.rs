//! Every matrix product in the engine goes through here: the `gemm` crate for
//! anything with more than a few rows, a cache-friendly dot-product kernel for
//! the few-row products of decoding, and a counter of executed FLOPs that the
//! FLOP-accounting tests compare against the analytic formula.
//!
//! Conventions: matrices are row-major slices; a weight `W` of a linear layer
//! is `[out, in]` as in PyTorch / Hugging Face, so `y = x · Wᵀ`.

use crate::float::Float;
use crate::quant::{BlockQ8_0, WeightRef, Q8_0_BLOCK};
use crate::simd::{multiversion, Isa, Kernels};
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

/// [`linear_forward`] with the weights in any storage type: f32 goes straight
/// to it; f16 and q8_0 are widened a tile of output features at a time for
/// gemm (the prefill of a packed model; its decoding uses [`matvec`]).
pub(crate) fn linear_forward_weights<T: Float>(
    y: &mut [T],
    x: &[T],
    w: WeightRef<'_, T>,
    rows: usize,
    d_in: usize,
    d_out: usize,
    accumulate: bool,
) {
    use rayon::prelude::*;
    let w_full = match w {
        WeightRef::Full(w) => return linear_forward(y, x, w, rows, d_in, d_out, accumulate),
        _ => w,
    };
    assert!(y.len() >= rows * d_out && x.len() >= rows * d_in && w_full.holds(d_out, d_in));
    /// Output features widened per task: 64 rows of weights stay in L2.
    const TILE: usize = 64;
    let y_ptr = SyncPtr(y.as_mut_ptr());
    (0..d_out.div_ceil(TILE))
        .into_par_iter()
        .for_each_init(Vec::new, |tile: &mut Vec<T>, t| {
            let (start, end) = (t * TILE, ((t + 1) * TILE).min(d_out));
            tile.resize((end - start) * d_in, T::ZERO);
            for (o, row) in (start..end).zip(tile.chunks_exact_mut(d_in)) {
                w_full.row_into(o, row);
            }
            // SAFETY: bounded by the assert; tiles write disjoint columns of y.
            unsafe {
                gemm_raw(
                    rows,
                    end - start,
                    d_in,
                    y_ptr.get().add(start),
                    d_out,
                    accumulate,
                    Mat::rows(x, d_in),
                    Mat::transposed(tile, d_in),
                    T::ONE,
                    Par::Serial,
                )
            }
        });
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
    let kernels = Kernels::active();
    let y_ptr = SyncPtr(y.as_mut_ptr());
    let chunks = d_out.div_ceil(OUT_CHUNK);
    let run = |chunk: usize| {
        let start = chunk * OUT_CHUNK;
        let end = (start + OUT_CHUNK).min(d_out);
        // SAFETY: the caller's assert bounds y, x and w; chunks are disjoint.
        unsafe {
            matvec_rows(
                kernels,
                y_ptr,
                d_out,
                x,
                &[],
                WeightRef::Full(w),
                rows,
                d_in,
                start..end,
                accumulate,
            )
        };
    };
    if chunks > 1 && rayon::current_num_threads() > 1 {
        (0..chunks).into_par_iter().for_each(run);
    } else {
        (0..chunks).for_each(run);
    }
}

/// Output features computed together in [`matvec`]: they share each load of `x`.
const OUT_BLOCK: usize = 4;

/// `y[r·ldy + o] (+)= x[r, :] · w[o, :]` for `o` in `outs` and `r < rows`, on
/// the calling thread — the matrix-vector products of decoding, where the
/// weights stream once from cache, in their storage type, and nothing is
/// packed. q8_0 weights multiply `xq`, `x` quantized by [`quantize_rows`]
/// (llama.cpp's scheme: exact integer products per block); f32 and f16
/// weights multiply `x` itself.
///
/// Every output is the canonical dot product of `simd` whichever block or
/// range it falls in, so results do not depend on how callers split `outs`
/// between threads.
///
/// # Safety
/// `y` must address `rows` rows of stride `ldy` covering the columns in `outs`,
/// written by no one else during the call; `x` holds `rows·d_in` values (and
/// `xq` its `rows·d_in/32` blocks for q8_0 weights); `w` holds at least
/// `outs.end` rows of `d_in`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matvec<I: Isa, T: Float>(
    isa: I,
    y: *mut T,
    ldy: usize,
    x: &[T],
    xq: &[BlockQ8_0],
    w: WeightRef<'_, T>,
    rows: usize,
    d_in: usize,
    outs: std::ops::Range<usize>,
    accumulate: bool,
) {
    debug_assert!(w.holds(outs.end, d_in));
    count(rows, outs.len(), d_in);
    match w {
        WeightRef::Full(w) => matvec_by(y, ldy, rows, outs, accumulate, w, d_in, |block, r| {
            T::dot_rows(isa, block, &x[r * d_in..(r + 1) * d_in])
        }),
        WeightRef::F16(w) => matvec_by(y, ldy, rows, outs, accumulate, w, d_in, |block, r| {
            T::dot_rows_f16(isa, block, &x[r * d_in..(r + 1) * d_in])
        }),
        WeightRef::Q8_0(w) => {
            let nb = d_in / Q8_0_BLOCK;
            matvec_by(y, ldy, rows, outs, accumulate, w, nb, |block, r| {
                isa.dot_rows_q8(block, &xq[r * nb..(r + 1) * nb]).map(T::from_f32)
            })
        }
    }
}

/// The loop of [`matvec`] over blocks of [`OUT_BLOCK`] output features; a
/// last, partial block repeats its last row (dot products are independent, so
/// the repeat changes nothing).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn matvec_by<T: Float, W>(
    y: *mut T,
    ldy: usize,
    rows: usize,
    outs: std::ops::Range<usize>,
    accumulate: bool,
    w: &[W],
    per_row: usize,
    dot: impl Fn(&[&[W]; OUT_BLOCK], usize) -> [T; OUT_BLOCK],
) {
    let mut o = outs.start;
    while o < outs.end {
        let take = (outs.end - o).min(OUT_BLOCK);
        let block: [&[W]; OUT_BLOCK] = std::array::from_fn(|j| {
            let row = o + j.min(take - 1);
            &w[row * per_row..(row + 1) * per_row]
        });
        for r in 0..rows {
            let sums = dot(&block, r);
            for (j, &v) in sums[..take].iter().enumerate() {
                let dst = y.add(r * ldy + o + j);
                *dst = if accumulate { *dst + v } else { v };
            }
        }
        o += take;
    }
}

multiversion! {
    /// [`matvec`] on `kernels`' path.
    ///
    /// # Safety
    /// As [`matvec`].
    pub(crate) unsafe fn matvec_rows<T: Float>(
        isa: Isa,
        y: SyncPtr<T>,
        ldy: usize,
        x: &[T],
        xq: &[BlockQ8_0],
        w: WeightRef<'_, T>,
        rows: usize,
        d_in: usize,
        outs: std::ops::Range<usize>,
        accumulate: bool,
    ) {
        matvec(isa, y.get(), ldy, x, xq, w, rows, d_in, outs, accumulate)
    }
}

/// `x` (rows of a multiple of 32 values) as q8_0 blocks in `xq`: the
/// activations' side of a q8_0 product, as llama.cpp quantizes them.
/// Identical on every path (only exact operations and one rounding rule).
#[inline(always)]
pub(crate) fn quantize_rows<T: Float>(x: &[T], xq: &mut [BlockQ8_0]) {
    for (out, chunk) in xq.iter_mut().zip(x.chunks_exact(Q8_0_BLOCK)) {
        let block: [f32; Q8_0_BLOCK] = std::array::from_fn(|i| chunk[i].to_f32());
        *out = crate::quant::quantize_block(&block);
    }
}

/// Dot product of the common prefix of `a` and `b` on `isa` (the canonical
/// sum of `simd`).
#[inline(always)]
pub(crate) fn dot_in<I: Isa, T: Float>(isa: I, a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    T::dot_rows(isa, &[&a[..n]], &b[..n])[0]
}

/// Dot product of the common prefix of `a` and `b`, on the active kernels.
pub fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    dot_active(Kernels::active(), a, b)
}

multiversion! {
    fn dot_active<T: Float>(isa: Isa, a: &[T], b: &[T]) -> T {
        dot_in(isa, a, b)
    }
}

/// `y += alpha · x`
#[inline(always)]
pub fn axpy<T: Float>(y: &mut [T], alpha: T, x: &[T]) {
    crate::simd::portable::axpy(y, alpha, x)
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
