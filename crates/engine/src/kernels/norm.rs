//! RMSNorm: `y = x · r · w` with `r = 1/sqrt(mean(x²) + eps)` per row.
//!
//! Backward, with `g = dy ∘ w`:
//!   `dw += Σ_rows dy ∘ x · r`
//!   `dx  = r·g − x · r³ · mean(g ∘ x)`

use super::ROW_CHUNK;
use crate::float::Float;
use crate::matmul::dot_in;
use crate::simd::{multiversion, Isa, Kernels};
use rayon::prelude::*;

/// Writes `y` and the per-row `inv_rms` (kept for the backward pass).
pub fn rmsnorm_forward<T: Float>(y: &mut [T], inv_rms: &mut [T], x: &[T], w: &[T], d: usize, eps: T) {
    let kernels = Kernels::active();
    y.par_chunks_mut(ROW_CHUNK * d)
        .zip(inv_rms.par_chunks_mut(ROW_CHUNK))
        .zip(x.par_chunks(ROW_CHUNK * d))
        .for_each(|((y, r), x)| forward_chunk(kernels, y, r, x, w, d, eps));
}

multiversion! {
    fn forward_chunk<T: Float>(isa: Isa, y: &mut [T], inv_rms: &mut [T], x: &[T], w: &[T], d: usize, eps: T) {
        for ((yr, rr), xr) in y.chunks_exact_mut(d).zip(inv_rms.iter_mut()).zip(x.chunks_exact(d)) {
            *rr = normalize_row(isa, yr, xr, w, eps);
        }
    }
}

/// Forward for inference: no saved statistics.
pub fn rmsnorm_rows<T: Float>(y: &mut [T], x: &[T], w: &[T], d: usize, eps: T) {
    rows_active(Kernels::active(), y, x, w, d, eps)
}

multiversion! {
    fn rows_active<T: Float>(isa: Isa, y: &mut [T], x: &[T], w: &[T], d: usize, eps: T) {
        rmsnorm_rows_in(isa, y, x, w, d, eps)
    }
}

/// [`rmsnorm_rows`] inside a kernel already running on `isa`.
#[inline(always)]
pub(crate) fn rmsnorm_rows_in<I: Isa, T: Float>(isa: I, y: &mut [T], x: &[T], w: &[T], d: usize, eps: T) {
    for (yr, xr) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        normalize_row(isa, yr, xr, w, eps);
    }
}

/// `y = x · r · w`, returning `r`.
#[inline(always)]
fn normalize_row<I: Isa, T: Float>(isa: I, y: &mut [T], x: &[T], w: &[T], eps: T) -> T {
    let ss = dot_in(isa, x, x);
    let s = T::ONE / (ss / T::from_usize(x.len()) + eps).sqrt();
    for ((o, &xi), &wi) in y.iter_mut().zip(x).zip(w) {
        *o = xi * s * wi;
    }
    s
}

/// Adds this norm's input gradient into `dx` (the residual stream's gradient
/// already flowing there) and accumulates `dw`. `partial_dw` is scratch of
/// `ceil(rows/ROW_CHUNK)·d` elements for per-chunk sums, reduced in a fixed
/// order so the result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward<T: Float>(dx: &mut [T], dw: &mut [T], partial_dw: &mut [T], dy: &[T], x: &[T], inv_rms: &[T], w: &[T], d: usize) {
    let kernels = Kernels::active();
    let chunks = dx.len().div_ceil(ROW_CHUNK * d);
    let partial_dw = &mut partial_dw[..chunks * d];
    dx.par_chunks_mut(ROW_CHUNK * d)
        .zip(partial_dw.par_chunks_mut(d))
        .zip(dy.par_chunks(ROW_CHUNK * d))
        .zip(x.par_chunks(ROW_CHUNK * d))
        .zip(inv_rms.par_chunks(ROW_CHUNK))
        .for_each(|((((dx, pdw), dy), x), r)| backward_chunk(kernels, dx, pdw, dy, x, r, w, d));
    for part in partial_dw.chunks_exact(d) {
        for (a, &b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
}

multiversion! {
    fn backward_chunk<T: Float>(isa: Isa, dx: &mut [T], pdw: &mut [T], dy: &[T], x: &[T], r: &[T], w: &[T], d: usize) {
        let inv_d = T::ONE / T::from_usize(d);
        pdw.fill(T::ZERO);
        for (((dxr, dyr), xr), &s) in dx.chunks_exact_mut(d).zip(dy.chunks_exact(d)).zip(x.chunks_exact(d)).zip(r) {
            let mut gx = T::ZERO;
            for ((&g, &xi), &wi) in dyr.iter().zip(xr).zip(w) {
                gx += g * wi * xi;
            }
            let c = s * s * s * gx * inv_d;
            for ((((o, &g), &xi), &wi), pw) in dxr.iter_mut().zip(dyr).zip(xr).zip(w).zip(pdw.iter_mut()) {
                *o += s * g * wi - xi * c;
                *pw += g * xi * s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn every_kernel_path_agrees() {
        let (rows, d) = (5, 256);
        let f = |v: Vec<f64>| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let (x, w, dy) = (f(randn(rows * d, 4)), f(randn(d, 5)), f(randn(rows * d, 6)));
        let r: Vec<f32> = f(randn(rows, 7)).iter().map(|v| 1.0 + v.abs()).collect();
        let kernels = crate::simd::tests::all_kernels();
        let backward = |k| {
            let (mut dx, mut pdw) = (vec![0.5f32; rows * d], vec![0.0f32; d]);
            backward_chunk(k, &mut dx, &mut pdw, &dy, &x, &r, &w, d);
            (dx, pdw)
        };
        let forward = |k| {
            let (mut y, mut inv) = (vec![0.0f32; rows * d], vec![0.0f32; rows]);
            forward_chunk(k, &mut y, &mut inv, &x, &w, d, 1e-5);
            (y, inv)
        };
        let (want_b, want_f) = (backward(kernels[0]), forward(kernels[0]));
        for &k in &kernels[1..] {
            // Elementwise and sequential sums: the same bits.
            assert_eq!(backward(k), want_b, "{:?}", k.path());
            // The sum of squares is a dot product: fused or not (see `simd`),
            // within a few ulp.
            let (y, inv) = forward(k);
            for (a, b) in y.iter().chain(&inv).zip(want_f.0.iter().chain(&want_f.1)) {
                assert!(
                    (a - b).abs() <= 4.0 * f32::EPSILON * b.abs().max(1e-3),
                    "{:?}: {a} vs {b}",
                    k.path()
                );
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (rows, d) = (37, 8); // more rows than one chunk
        let mut x = randn(rows * d, 1);
        let mut w: Vec<f64> = randn(d, 2).iter().map(|v| 1.0 + 0.3 * v).collect();
        let up = randn(rows * d, 3);
        let eps = 1e-5;
        let loss = |x: &[f64], w: &[f64]| {
            let mut y = vec![0.0; rows * d];
            let mut r = vec![0.0; rows];
            rmsnorm_forward(&mut y, &mut r, x, w, d, eps);
            dot(&y, &up)
        };
        let mut y = vec![0.0; rows * d];
        let mut r = vec![0.0; rows];
        rmsnorm_forward(&mut y, &mut r, &x, &w, d, eps);
        let mut dx = vec![0.5; rows * d]; // backward adds into dx
        let mut dw = vec![0.0; d];
        let mut scratch = vec![0.0; rows.div_ceil(ROW_CHUNK) * d];
        rmsnorm_backward(&mut dx, &mut dw, &mut scratch, &up, &x, &r, &w, d);
        for i in (0..rows * d).step_by(7) {
            let wc = w.clone();
            let n = fd(&mut x, i, &mut |x| loss(x, &wc));
            assert_close(dx[i] - 0.5, n, &format!("dx[{i}]"));
        }
        for i in 0..d {
            let xc = x.clone();
            let n = fd(&mut w, i, &mut |w| loss(&xc, w));
            assert_close(dw[i], n, &format!("dw[{i}]"));
        }
        let mut y2 = vec![0.0; rows * d];
        rmsnorm_rows(&mut y2, &x, &w, d, eps);
        assert_eq!(y, y2);
    }
}
