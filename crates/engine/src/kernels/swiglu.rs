//! SwiGLU: with `gu = [g | u]` per row (gate_proj and up_proj outputs side by
//! side), `h = silu(g) ∘ u`, `silu(g) = g·σ(g)`.
//!
//! Backward: `du = dh ∘ silu(g)`, `dg = dh ∘ u ∘ σ(g)·(1 + g·(1 − σ(g)))`.

use super::ROW_CHUNK;
use crate::float::Float;
use crate::simd::{multiversion, Kernels};
use rayon::prelude::*;

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
}

pub fn swiglu_forward<T: Float>(h: &mut [T], gu: &[T], ffn: usize) {
    let kernels = Kernels::active();
    h.par_chunks_mut(ROW_CHUNK * ffn)
        .zip(gu.par_chunks(ROW_CHUNK * 2 * ffn))
        .for_each(|(h, gu)| rows_on(kernels, h, gu, ffn));
}

/// Serial version for the few rows of decoding.
pub fn swiglu_rows<T: Float>(h: &mut [T], gu: &[T], ffn: usize) {
    rows_on(Kernels::active(), h, gu, ffn)
}

multiversion! {
    fn rows_on<T: Float>(isa: Isa, h: &mut [T], gu: &[T], ffn: usize) {
        for (hr, gur) in h.chunks_exact_mut(ffn).zip(gu.chunks_exact(2 * ffn)) {
            let (g, u) = gur.split_at(ffn);
            swiglu_row_range(hr, g, u);
        }
    }
}

/// `h = silu(gate) ∘ up` elementwise (any aligned sub-range of a row).
#[inline(always)]
pub(crate) fn swiglu_row_range<T: Float>(h: &mut [T], gate: &[T], up: &[T]) {
    for ((o, &gi), &ui) in h.iter_mut().zip(gate).zip(up) {
        *o = gi * sigmoid(gi) * ui;
    }
}

pub fn swiglu_backward<T: Float>(dgu: &mut [T], dh: &[T], gu: &[T], ffn: usize) {
    let kernels = Kernels::active();
    dgu.par_chunks_mut(ROW_CHUNK * 2 * ffn)
        .zip(dh.par_chunks(ROW_CHUNK * ffn))
        .zip(gu.par_chunks(ROW_CHUNK * 2 * ffn))
        .for_each(|((dgu, dh), gu)| backward_rows(kernels, dgu, dh, gu, ffn));
}

multiversion! {
    fn backward_rows<T: Float>(isa: Isa, dgu: &mut [T], dh: &[T], gu: &[T], ffn: usize) {
        for ((dr, dhr), gur) in dgu
            .chunks_exact_mut(2 * ffn)
            .zip(dh.chunks_exact(ffn))
            .zip(gu.chunks_exact(2 * ffn))
        {
            let (dg, du) = dr.split_at_mut(ffn);
            let (g, u) = gur.split_at(ffn);
            for i in 0..ffn {
                let s = sigmoid(g[i]);
                let silu = g[i] * s;
                du[i] = dhr[i] * silu;
                dg[i] = dhr[i] * u[i] * s * (T::ONE + g[i] * (T::ONE - s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn every_kernel_path_gives_the_same_bits() {
        let (rows, ffn) = (3, 37);
        let gu: Vec<f32> = randn(rows * 2 * ffn, 9).iter().map(|&v| (3.0 * v) as f32).collect();
        let dh: Vec<f32> = randn(rows * ffn, 10).iter().map(|&v| v as f32).collect();
        let run = |k| {
            let mut h = vec![0.0f32; rows * ffn];
            let mut dgu = vec![0.0f32; rows * 2 * ffn];
            rows_on(k, &mut h, &gu, ffn);
            backward_rows(k, &mut dgu, &dh, &gu, ffn);
            (h, dgu)
        };
        let kernels = crate::simd::tests::all_kernels();
        let want = run(kernels[0]);
        for &k in &kernels[1..] {
            assert_eq!(run(k), want, "{:?}", k.path());
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (rows, ffn) = (40, 5);
        let mut gu = randn(rows * 2 * ffn, 7);
        let up = randn(rows * ffn, 8);
        let mut dgu = vec![0.0; rows * 2 * ffn];
        swiglu_backward(&mut dgu, &up, &gu, ffn);
        for i in (0..gu.len()).step_by(3) {
            let n = fd(&mut gu, i, &mut |gu| {
                let mut h = vec![0.0; rows * ffn];
                swiglu_forward(&mut h, gu, ffn);
                dot(&h, &up)
            });
            assert_close(dgu[i], n, &format!("dgu[{i}]"));
        }
    }
}
