//! RMSNorm: `y = x · r · w` with `r = 1/sqrt(mean(x²) + eps)` per row.
//!
//! Backward, with `g = dy ∘ w`:
//!   `dw += Σ_rows dy ∘ x · r`
//!   `dx  = r·g − x · r³ · mean(g ∘ x)`

use super::ROW_CHUNK;
use crate::float::Float;
use rayon::prelude::*;

/// Writes `y` and the per-row `inv_rms` (kept for the backward pass).
pub fn rmsnorm_forward<T: Float>(y: &mut [T], inv_rms: &mut [T], x: &[T], w: &[T], d: usize, eps: T) {
    y.par_chunks_mut(ROW_CHUNK * d)
        .zip(inv_rms.par_chunks_mut(ROW_CHUNK))
        .zip(x.par_chunks(ROW_CHUNK * d))
        .for_each(|((y, r), x)| {
            for ((yr, rr), xr) in y.chunks_exact_mut(d).zip(r.iter_mut()).zip(x.chunks_exact(d)) {
                *rr = row_inv_rms(xr, eps);
                let s = *rr;
                for ((o, &xi), &wi) in yr.iter_mut().zip(xr).zip(w) {
                    *o = xi * s * wi;
                }
            }
        });
}

/// Forward for inference: no saved statistics.
pub fn rmsnorm_rows<T: Float>(y: &mut [T], x: &[T], w: &[T], d: usize, eps: T) {
    for (yr, xr) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let s = row_inv_rms(xr, eps);
        for ((o, &xi), &wi) in yr.iter_mut().zip(xr).zip(w) {
            *o = xi * s * wi;
        }
    }
}

#[inline]
fn row_inv_rms<T: Float>(x: &[T], eps: T) -> T {
    let ss = crate::matmul::dot(x, x);
    T::ONE / (ss / T::from_usize(x.len()) + eps).sqrt()
}

/// Adds this norm's input gradient into `dx` (the residual stream's gradient
/// already flowing there) and accumulates `dw`. `partial_dw` is scratch of
/// `ceil(rows/ROW_CHUNK)·d` elements for per-chunk sums, reduced in a fixed
/// order so the result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward<T: Float>(dx: &mut [T], dw: &mut [T], partial_dw: &mut [T], dy: &[T], x: &[T], inv_rms: &[T], w: &[T], d: usize) {
    let inv_d = T::ONE / T::from_usize(d);
    let chunks = dx.len().div_ceil(ROW_CHUNK * d);
    let partial_dw = &mut partial_dw[..chunks * d];
    dx.par_chunks_mut(ROW_CHUNK * d)
        .zip(partial_dw.par_chunks_mut(d))
        .zip(dy.par_chunks(ROW_CHUNK * d))
        .zip(x.par_chunks(ROW_CHUNK * d))
        .zip(inv_rms.par_chunks(ROW_CHUNK))
        .for_each(|((((dx, pdw), dy), x), r)| {
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
        });
    for part in partial_dw.chunks_exact(d) {
        for (a, &b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

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
