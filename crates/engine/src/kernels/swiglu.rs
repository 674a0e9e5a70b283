//! SwiGLU: with `gu = [g | u]` per row (gate_proj and up_proj outputs side by
//! side), `h = silu(g) ∘ u`, `silu(g) = g·σ(g)`.
//!
//! Backward: `du = dh ∘ silu(g)`, `dg = dh ∘ u ∘ σ(g)·(1 + g·(1 − σ(g)))`.

use super::ROW_CHUNK;
use crate::float::Float;
use rayon::prelude::*;

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
}

pub fn swiglu_forward<T: Float>(h: &mut [T], gu: &[T], ffn: usize) {
    h.par_chunks_mut(ROW_CHUNK * ffn)
        .zip(gu.par_chunks(ROW_CHUNK * 2 * ffn))
        .for_each(|(h, gu)| {
            for (hr, gur) in h.chunks_exact_mut(ffn).zip(gu.chunks_exact(2 * ffn)) {
                let (g, u) = gur.split_at(ffn);
                for ((o, &gi), &ui) in hr.iter_mut().zip(g).zip(u) {
                    *o = gi * sigmoid(gi) * ui;
                }
            }
        });
}

/// Serial version for the few rows of decoding.
pub fn swiglu_rows<T: Float>(h: &mut [T], gu: &[T], ffn: usize) {
    for (hr, gur) in h.chunks_exact_mut(ffn).zip(gu.chunks_exact(2 * ffn)) {
        let (g, u) = gur.split_at(ffn);
        for ((o, &gi), &ui) in hr.iter_mut().zip(g).zip(u) {
            *o = gi * sigmoid(gi) * ui;
        }
    }
}

pub fn swiglu_backward<T: Float>(dgu: &mut [T], dh: &[T], gu: &[T], ffn: usize) {
    dgu.par_chunks_mut(ROW_CHUNK * 2 * ffn)
        .zip(dh.par_chunks(ROW_CHUNK * ffn))
        .zip(gu.par_chunks(ROW_CHUNK * 2 * ffn))
        .for_each(|((dgu, dh), gu)| {
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
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

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
