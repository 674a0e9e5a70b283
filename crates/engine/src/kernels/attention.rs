//! Flash-style attention over the fused `q|k|v` activations, in blocks of
//! `BQ` queries × `BK` keys with an online softmax, so memory is O(T) (one
//! log-sum-exp per query row) rather than O(T²).
//!
//! Forward, per query row `i` over key blocks: `s = scale·q·Kᵀ`, running max
//! `m`, running sum `l`, `acc ← acc·e^(m_old−m) + e^(s−m)·V`; finally
//! `o = acc/l`, `lse = m + ln l`.
//!
//! Backward (FlashAttention-2): recompute `P = e^(scale·QKᵀ − lse)` block by
//! block; with `D_i = dO_i·O_i`:
//!   `dV += Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ∘ (dP − D)`,
//!   `dQ += scale·dS K`, `dK += scale·dSᵀ Q`.
//!
//! One parallel task per (sequence, key/value head): with grouped-query
//! attention all query heads sharing a K/V head accumulate into the same dK/dV,
//! so they must run in the same task.

use crate::float::Float;
use crate::mask::AttnMask;
use crate::matmul::{gemm_raw, Mat, Par, SyncPtr};
use crate::simd::{multiversion, Kernels};
use rayon::prelude::*;

pub const BQ: usize = 64;
pub const BK: usize = 64;

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub batch: usize,
    pub seq: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    fn ld_qkv(&self) -> usize {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
    }
    fn ld_o(&self) -> usize {
        self.n_heads * self.head_dim
    }
    fn tasks(&self) -> usize {
        self.batch * self.n_kv_heads
    }
    /// Scratch elements one task needs.
    pub fn scratch_per_task(&self) -> usize {
        2 * BQ * BK + BQ * self.head_dim + 3 * BQ
    }
    /// Scratch elements a whole forward or backward call needs.
    pub fn scratch_len(&self) -> usize {
        self.tasks() * self.scratch_per_task()
    }
    fn scale<T: Float>(&self) -> T {
        T::ONE / T::from_usize(self.head_dim).sqrt()
    }
}

/// Column offsets (in elements) of query head `h`, and of the key and value
/// heads it reads, within a row of the fused qkv activations.
#[inline]
fn head_cols(s: &AttnShape, h: usize) -> (usize, usize, usize) {
    let g = h / (s.n_heads / s.n_kv_heads);
    let hd = s.head_dim;
    (h * hd, (s.n_heads + g) * hd, (s.n_heads + s.n_kv_heads + g) * hd)
}

/// Union of the key windows of rows `q0..q1`: the key blocks worth visiting.
#[inline]
fn key_span(win: &[[u32; 2]], q0: usize, q1: usize) -> (usize, usize) {
    win[q0..q1]
        .iter()
        .fold((usize::MAX, 0), |(lo, hi), w| (lo.min(w[0] as usize), hi.max(w[1] as usize)))
}

/// `S = scale · Q[q0..q0+nq] · K[k0..k0+nk]ᵀ`, masked entries set to −∞.
///
/// # Safety
/// `qkv` must hold the whole batch at the shape's strides; `s` must hold BQ·BK.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn scores<T: Float>(
    sh: &AttnShape,
    qkv: *const T,
    row0: usize,
    h: usize,
    q0: usize,
    nq: usize,
    k0: usize,
    nk: usize,
    win: &[[u32; 2]],
    s: &mut [T],
) {
    let ld = sh.ld_qkv();
    let (qc, kc, _) = head_cols(sh, h);
    let q = Mat {
        ptr: qkv.add((row0 + q0) * ld + qc),
        rs: ld as isize,
        cs: 1,
    };
    let kt = Mat {
        ptr: qkv.add((row0 + k0) * ld + kc),
        rs: 1,
        cs: ld as isize,
    };
    gemm_raw(nq, nk, sh.head_dim, s.as_mut_ptr(), BK, false, q, kt, sh.scale(), Par::Serial);
    for i in 0..nq {
        let [lo, hi] = win[q0 + i];
        let (lo, hi) = (lo as usize, hi as usize);
        let row = &mut s[i * BK..i * BK + nk];
        for (j, v) in row.iter_mut().enumerate() {
            let key = k0 + j;
            if key < lo || key >= hi {
                *v = T::NEG_INFINITY;
            }
        }
    }
}

/// Writes `o` (`[B·T, H·hd]`) and `lse` (`[B, H, T]`).
pub fn attention_forward<T: Float>(o: &mut [T], lse: &mut [T], scratch: &mut [T], qkv: &[T], sh: AttnShape, mask: &AttnMask) {
    let t = sh.seq;
    assert!(qkv.len() >= sh.batch * t * sh.ld_qkv() && o.len() >= sh.batch * t * sh.ld_o());
    assert!(lse.len() >= sh.batch * sh.n_heads * t && scratch.len() >= sh.scratch_len());
    let (o_ptr, lse_ptr, qkv_ptr) = (SyncPtr(o.as_mut_ptr()), SyncPtr(lse.as_mut_ptr()), SyncPtr(qkv.as_ptr() as *mut T));
    let per_task = sh.scratch_per_task();
    let kernels = Kernels::active();
    scratch[..sh.scratch_len()]
        .par_chunks_mut(per_task)
        .enumerate()
        .for_each(|(task, scr)| forward_task(kernels, task, scr, sh, mask, qkv_ptr, o_ptr, lse_ptr));
}

multiversion! {
    /// One (sequence, KV head) task of [`attention_forward`].
    fn forward_task<T: Float>(
        isa: Isa,
        task: usize,
        scr: &mut [T],
        sh: AttnShape,
        mask: &AttnMask,
        qkv_ptr: SyncPtr<T>,
        o_ptr: SyncPtr<T>,
        lse_ptr: SyncPtr<T>,
    ) {
        let (t, hd) = (sh.seq, sh.head_dim);
        let rep = sh.n_heads / sh.n_kv_heads;
        let (b, g) = (task / sh.n_kv_heads, task % sh.n_kv_heads);
        let win = mask.windows(b);
        let row0 = b * t;
        let (s, rest) = scr.split_at_mut(BQ * BK);
        let (_, rest) = rest.split_at_mut(BQ * BK);
        let (acc, rest) = rest.split_at_mut(BQ * hd);
        let (m, rest) = rest.split_at_mut(BQ);
        let (l, _) = rest.split_at_mut(BQ);
        for h in g * rep..(g + 1) * rep {
            let (qc, _, vc) = head_cols(&sh, h);
            for q0 in (0..t).step_by(BQ) {
                let nq = BQ.min(t - q0);
                m[..nq].fill(T::NEG_INFINITY);
                l[..nq].fill(T::ZERO);
                acc[..nq * hd].fill(T::ZERO);
                let (lo, hi) = key_span(win, q0, q0 + nq);
                let mut k0 = lo;
                while k0 < hi {
                    let nk = BK.min(hi - k0);
                    // SAFETY: the asserts above bound all rows/cols touched; this task
                    // only writes its own scratch.
                    unsafe { scores(&sh, qkv_ptr.get(), row0, h, q0, nq, k0, nk, win, s) };
                    for i in 0..nq {
                        let row = &mut s[i * BK..i * BK + nk];
                        let m_new = m[i].max(super::xent::row_max(row));
                        if m_new == T::NEG_INFINITY {
                            row.fill(T::ZERO);
                            continue;
                        }
                        let corr = if m[i] == T::NEG_INFINITY { T::ZERO } else { (m[i] - m_new).exp() };
                        let sum = crate::float::exp_shifted_sum(row, m_new);
                        l[i] = l[i] * corr + sum;
                        m[i] = m_new;
                        if corr != T::ONE {
                            acc[i * hd..(i + 1) * hd].iter_mut().for_each(|a| *a *= corr);
                        }
                    }
                    let ld = sh.ld_qkv();
                    // SAFETY: V rows k0..k0+nk of this sequence exist; acc is task-local.
                    unsafe {
                        let v = Mat {
                            ptr: qkv_ptr.get().add((row0 + k0) * ld + vc) as *const T,
                            rs: ld as isize,
                            cs: 1,
                        };
                        gemm_raw(
                            nq,
                            hd,
                            nk,
                            acc.as_mut_ptr(),
                            hd,
                            true,
                            Mat {
                                ptr: s.as_ptr(),
                                rs: BK as isize,
                                cs: 1,
                            },
                            v,
                            T::ONE,
                            Par::Serial,
                        );
                    }
                    k0 += nk;
                }
                for i in 0..nq {
                    let (scale, lse_v) = if l[i] > T::ZERO {
                        (T::ONE / l[i], m[i] + l[i].ln())
                    } else {
                        (T::ZERO, T::INFINITY)
                    };
                    // SAFETY: row (row0+q0+i), columns of head h are written only by this task.
                    unsafe {
                        let dst = std::slice::from_raw_parts_mut(o_ptr.get().add((row0 + q0 + i) * sh.ld_o() + qc), hd);
                        for (d, &a) in dst.iter_mut().zip(&acc[i * hd..(i + 1) * hd]) {
                            *d = a * scale;
                        }
                        *lse_ptr.get().add((b * sh.n_heads + h) * t + q0 + i) = lse_v;
                    }
                }
            }
        }
    }
}

/// Writes the q, k and v gradients into `dqkv` (same layout as `qkv`; it is
/// zeroed here first).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Float>(
    dqkv: &mut [T],
    scratch: &mut [T],
    d_o: &[T],
    qkv: &[T],
    o: &[T],
    lse: &[T],
    sh: AttnShape,
    mask: &AttnMask,
) {
    let (t, ld, ld_o) = (sh.seq, sh.ld_qkv(), sh.ld_o());
    assert!(qkv.len() >= sh.batch * t * ld && dqkv.len() >= sh.batch * t * ld);
    assert!(o.len() >= sh.batch * t * ld_o && d_o.len() >= sh.batch * t * ld_o);
    assert!(lse.len() >= sh.batch * sh.n_heads * t && scratch.len() >= sh.scratch_len());
    dqkv[..sh.batch * t * ld].par_chunks_mut(ld * 64).for_each(|c| c.fill(T::ZERO));
    let dqkv_ptr = SyncPtr(dqkv.as_mut_ptr());
    let qkv_ptr = SyncPtr(qkv.as_ptr() as *mut T);
    let do_ptr = SyncPtr(d_o.as_ptr() as *mut T);
    let per_task = sh.scratch_per_task();
    let kernels = Kernels::active();
    scratch[..sh.scratch_len()]
        .par_chunks_mut(per_task)
        .enumerate()
        .for_each(|(task, scr)| backward_task(kernels, task, scr, sh, mask, d_o, o, lse, qkv_ptr, do_ptr, dqkv_ptr));
}

multiversion! {
    /// One (sequence, KV head) task of [`attention_backward`].
    fn backward_task<T: Float>(
        isa: Isa,
        task: usize,
        scr: &mut [T],
        sh: AttnShape,
        mask: &AttnMask,
        d_o: &[T],
        o: &[T],
        lse: &[T],
        qkv_ptr: SyncPtr<T>,
        do_ptr: SyncPtr<T>,
        dqkv_ptr: SyncPtr<T>,
    ) {
        let (t, hd, ld, ld_o) = (sh.seq, sh.head_dim, sh.ld_qkv(), sh.ld_o());
        let rep = sh.n_heads / sh.n_kv_heads;
        let scale: T = sh.scale();
        let (b, g) = (task / sh.n_kv_heads, task % sh.n_kv_heads);
        let win = mask.windows(b);
        let row0 = b * t;
        let (p, rest) = scr.split_at_mut(BQ * BK);
        let (dp, rest) = rest.split_at_mut(BQ * BK);
        let (_, rest) = rest.split_at_mut(BQ * hd);
        let (dsum, _) = rest.split_at_mut(BQ);
        for h in g * rep..(g + 1) * rep {
            let (qc, kc, vc) = head_cols(&sh, h);
            for q0 in (0..t).step_by(BQ) {
                let nq = BQ.min(t - q0);
                for i in 0..nq {
                    let r = row0 + q0 + i;
                    dsum[i] = crate::matmul::dot_in(isa, &d_o[r * ld_o + qc..r * ld_o + qc + hd], &o[r * ld_o + qc..r * ld_o + qc + hd]);
                }
                let lse_row = &lse[(b * sh.n_heads + h) * t + q0..(b * sh.n_heads + h) * t + q0 + nq];
                let (lo, hi) = key_span(win, q0, q0 + nq);
                let mut k0 = lo;
                while k0 < hi {
                    let nk = BK.min(hi - k0);
                    // SAFETY: all views stay within this sequence's rows and this task's
                    // heads; the task owns the dq/dk/dv columns of its K/V group.
                    unsafe {
                        scores(&sh, qkv_ptr.get(), row0, h, q0, nq, k0, nk, win, p);
                        for i in 0..nq {
                            let m = lse_row[i];
                            for v in &mut p[i * BK..i * BK + nk] {
                                *v = (*v - m).exp();
                            }
                        }
                        let p_t = Mat {
                            ptr: p.as_ptr(),
                            rs: 1,
                            cs: BK as isize,
                        };
                        let do_rows = Mat {
                            ptr: do_ptr.get().add((row0 + q0) * ld_o + qc) as *const T,
                            rs: ld_o as isize,
                            cs: 1,
                        };
                        let dv = dqkv_ptr.get().add((row0 + k0) * ld + vc);
                        gemm_raw(nk, hd, nq, dv, ld, true, p_t, do_rows, T::ONE, Par::Serial);
                        let v_t = Mat {
                            ptr: qkv_ptr.get().add((row0 + k0) * ld + vc) as *const T,
                            rs: 1,
                            cs: ld as isize,
                        };
                        gemm_raw(nq, nk, hd, dp.as_mut_ptr(), BK, false, do_rows, v_t, T::ONE, Par::Serial);
                        for i in 0..nq {
                            for j in 0..nk {
                                let idx = i * BK + j;
                                dp[idx] = p[idx] * (dp[idx] - dsum[i]);
                            }
                        }
                        let ds = Mat {
                            ptr: dp.as_ptr(),
                            rs: BK as isize,
                            cs: 1,
                        };
                        let ds_t = Mat {
                            ptr: dp.as_ptr(),
                            rs: 1,
                            cs: BK as isize,
                        };
                        let k_rows = Mat {
                            ptr: qkv_ptr.get().add((row0 + k0) * ld + kc) as *const T,
                            rs: ld as isize,
                            cs: 1,
                        };
                        let q_rows = Mat {
                            ptr: qkv_ptr.get().add((row0 + q0) * ld + qc) as *const T,
                            rs: ld as isize,
                            cs: 1,
                        };
                        gemm_raw(
                            nq,
                            hd,
                            nk,
                            dqkv_ptr.get().add((row0 + q0) * ld + qc),
                            ld,
                            true,
                            ds,
                            k_rows,
                            scale,
                            Par::Serial,
                        );
                        gemm_raw(
                            nk,
                            hd,
                            nq,
                            dqkv_ptr.get().add((row0 + k0) * ld + kc),
                            ld,
                            true,
                            ds_t,
                            q_rows,
                            scale,
                            Par::Serial,
                        );
                    }
                    k0 += nk;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    /// Plain O(T²) attention in f64 as the reference.
    fn naive(qkv: &[f64], sh: AttnShape, mask: &AttnMask) -> Vec<f64> {
        let (t, hd, ld) = (sh.seq, sh.head_dim, sh.ld_qkv());
        let mut o = vec![0.0; sh.batch * t * sh.ld_o()];
        for b in 0..sh.batch {
            let win = mask.windows(b);
            for h in 0..sh.n_heads {
                let (qc, kc, vc) = head_cols(&sh, h);
                for i in 0..t {
                    let q = &qkv[(b * t + i) * ld + qc..][..hd];
                    let [lo, hi] = win[i];
                    let s: Vec<f64> = (lo as usize..hi as usize)
                        .map(|j| dot(q, &qkv[(b * t + j) * ld + kc..][..hd]) / (hd as f64).sqrt())
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for (jj, j) in (lo as usize..hi as usize).enumerate() {
                        for c in 0..hd {
                            o[(b * t + i) * sh.ld_o() + qc + c] += e[jj] / z * qkv[(b * t + j) * ld + vc + c];
                        }
                    }
                }
            }
        }
        o
    }

    fn run(qkv: &[f64], sh: AttnShape, mask: &AttnMask) -> (Vec<f64>, Vec<f64>) {
        let mut o = vec![0.0; sh.batch * sh.seq * sh.ld_o()];
        let mut lse = vec![0.0; sh.batch * sh.n_heads * sh.seq];
        let mut scratch = vec![0.0; sh.scratch_len()];
        attention_forward(&mut o, &mut lse, &mut scratch, qkv, sh, mask);
        (o, lse)
    }

    fn shapes() -> Vec<(AttnShape, AttnMask)> {
        // Longer than one block so the online softmax and block skipping are exercised;
        // GQA (4 query heads over 2 K/V heads); a bidirectional span and per-sequence windows.
        let sh = AttnShape {
            batch: 2,
            seq: 150,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 4,
        };
        let causal = AttnMask::causal(150);
        let spans = AttnMask::causal_with_bidirectional_spans(150, &[(10, 80)]).unwrap();
        let mut w = Vec::new();
        for b in 0..2u32 {
            for i in 0..150u32 {
                let doc_start = if b == 1 && i >= 70 { 70 } else { 0 };
                w.push([doc_start, i + 1]);
            }
        }
        let docs = AttnMask::from_windows(150, w).unwrap();
        vec![(sh, causal), (sh, spans), (sh, docs)]
    }

    #[test]
    fn forward_matches_naive_attention() {
        for (sh, mask) in shapes() {
            let qkv = randn(sh.batch * sh.seq * sh.ld_qkv(), 10);
            let (o, _) = run(&qkv, sh, &mask);
            let want = naive(&qkv, sh, &mask);
            for (i, (a, b)) in o.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-10, "o[{i}]: {a} vs {b}");
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (sh, mask) in shapes() {
            let mut qkv = randn(sh.batch * sh.seq * sh.ld_qkv(), 11);
            let up = randn(sh.batch * sh.seq * sh.ld_o(), 12);
            let (o, lse) = run(&qkv, sh, &mask);
            let mut dqkv = vec![7.0; qkv.len()];
            let mut scratch = vec![0.0; sh.scratch_len()];
            attention_backward(&mut dqkv, &mut scratch, &up, &qkv, &o, &lse, sh, &mask);
            for i in (0..qkv.len()).step_by(97) {
                let n = fd(&mut qkv, i, &mut |x| dot(&run(x, sh, &mask).0, &up));
                assert_close(dqkv[i], n, &format!("dqkv[{i}]"));
            }
        }
    }
}
