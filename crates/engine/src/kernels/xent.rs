//! Softmax cross-entropy over the LM head's logits, fused with its backward:
//! `loss = logsumexp(z) − z_y`, `dz = (softmax(z) − onehot(y)) · scale`.
//! Rows whose target is [`IGNORE`] contribute neither loss nor gradient (the
//! prompt part of a fine-tuning example, padding).

use super::ROW_CHUNK;
use crate::float::{exp_shifted_sum, Float};
use crate::simd::{multiversion, Kernels};
use rayon::prelude::*;

/// Target id meaning "no loss at this position".
pub const IGNORE: u32 = u32::MAX;

/// Per-row loss (0 for ignored rows). `logits` is untouched.
pub fn xent_forward<T: Float>(row_loss: &mut [T], logits: &[T], targets: &[u32], vocab: usize) {
    let kernels = Kernels::active();
    row_loss
        .par_chunks_mut(ROW_CHUNK)
        .zip(logits.par_chunks(ROW_CHUNK * vocab))
        .zip(targets.par_chunks(ROW_CHUNK))
        .for_each(|((loss, z), t)| forward_chunk(kernels, loss, z, t, vocab));
}

multiversion! {
    fn forward_chunk<T: Float>(isa: Isa, loss: &mut [T], z: &[T], t: &[u32], vocab: usize) {
        for ((l, zr), &y) in loss.iter_mut().zip(z.chunks_exact(vocab)).zip(t) {
            *l = if y == IGNORE { T::ZERO } else { logsumexp(zr) - zr[y as usize] };
        }
    }
}

/// Turns `logits` into their gradient in place (scaled by `scale`, usually
/// 1/number-of-targets) and writes the per-row loss.
pub fn xent_backward_inplace<T: Float>(row_loss: &mut [T], logits: &mut [T], targets: &[u32], vocab: usize, scale: T) {
    let kernels = Kernels::active();
    row_loss
        .par_chunks_mut(ROW_CHUNK)
        .zip(logits.par_chunks_mut(ROW_CHUNK * vocab))
        .zip(targets.par_chunks(ROW_CHUNK))
        .for_each(|((loss, z), t)| backward_chunk(kernels, loss, z, t, vocab, scale));
}

multiversion! {
    fn backward_chunk<T: Float>(isa: Isa, loss: &mut [T], z: &mut [T], t: &[u32], vocab: usize, scale: T) {
        for ((l, zr), &y) in loss.iter_mut().zip(z.chunks_exact_mut(vocab)).zip(t) {
            if y == IGNORE {
                *l = T::ZERO;
                zr.fill(T::ZERO);
                continue;
            }
            let m = row_max(zr);
            let sum = exp_shifted_sum(zr, m);
            let py = zr[y as usize] / sum;
            *l = -(py.ln());
            let k = scale / sum;
            for v in zr.iter_mut() {
                *v *= k;
            }
            zr[y as usize] -= scale;
        }
    }
}

#[inline(always)]
pub fn row_max<T: Float>(z: &[T]) -> T {
    // Lane-wise maxima vectorise; a single running max would not.
    const L: usize = 16;
    let mut acc = [T::NEG_INFINITY; L];
    let (chunks, tail) = z.as_chunks::<L>();
    for c in chunks {
        for i in 0..L {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let m = acc.iter().fold(T::NEG_INFINITY, |m, &v| m.max(v));
    tail.iter().fold(m, |m, &v| m.max(v))
}

#[inline(always)]
pub fn logsumexp<T: Float>(z: &[T]) -> T {
    let m = row_max(z);
    const L: usize = 16;
    let mut acc = [T::ZERO; L];
    let (chunks, tail) = z.as_chunks::<L>();
    for c in chunks {
        for i in 0..L {
            acc[i] += (c[i] - m).exp();
        }
    }
    let s = tail.iter().fold(acc.iter().fold(T::ZERO, |s, &a| s + a), |s, &v| s + (v - m).exp());
    m + s.ln()
}

/// Sum of a loss vector in f64 with a fixed order (deterministic).
pub fn total<T: Float>(row_loss: &[T]) -> f64 {
    row_loss.iter().map(|v| v.to_f64()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn every_kernel_path_gives_the_same_bits() {
        let (rows, vocab) = (4, 301);
        let z: Vec<f32> = randn(rows * vocab, 3).iter().map(|&v| (4.0 * v) as f32).collect();
        let targets = [3, IGNORE, 300, 0];
        let run = |k| {
            let mut fwd = vec![0.0f32; rows];
            forward_chunk(k, &mut fwd, &z, &targets, vocab);
            let (mut bwd, mut g) = (vec![0.0f32; rows], z.clone());
            backward_chunk(k, &mut bwd, &mut g, &targets, vocab, 0.5);
            (fwd, bwd, g)
        };
        let kernels = crate::simd::tests::all_kernels();
        let want = run(kernels[0]);
        for &k in &kernels[1..] {
            assert_eq!(run(k), want, "{:?}", k.path());
        }
    }

    #[test]
    fn gradient_matches_finite_differences_and_ignores_masked_rows() {
        let (rows, vocab) = (35, 11);
        let mut z = randn(rows * vocab, 9);
        let targets: Vec<u32> = (0..rows)
            .map(|r| if r % 5 == 2 { IGNORE } else { (r * 7 % vocab) as u32 })
            .collect();
        let scale = 0.25;
        let mut loss = vec![0.0; rows];
        let mut g = z.clone();
        xent_backward_inplace(&mut loss, &mut g, &targets, vocab, scale);
        let mut loss_fwd = vec![0.0; rows];
        xent_forward(&mut loss_fwd, &z, &targets, vocab);
        for (a, b) in loss.iter().zip(&loss_fwd) {
            assert!((a - b).abs() < 1e-12);
        }
        for i in (0..z.len()).step_by(5) {
            let n = fd(&mut z, i, &mut |z| {
                let mut l = vec![0.0; rows];
                xent_forward(&mut l, z, &targets, vocab);
                scale * l.iter().sum::<f64>()
            });
            assert_close(g[i], n, &format!("dz[{i}]"));
        }
        assert!(g[2 * vocab..3 * vocab].iter().all(|&v| v == 0.0));
    }
}
