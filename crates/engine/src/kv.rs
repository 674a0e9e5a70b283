//! Inference with a key/value cache shared by many sequences ("slots").
//!
//! One call of [`Model::forward_cached`] takes any mix of prefill chunks
//! (many tokens of one slot) and decode steps (one token of a slot), runs them
//! as one batch of rows through every matmul, appends their keys and values to
//! their slots, and returns logits — the basis of continuous batching.
//! Scratch buffers live in the cache and only grow, so steady-state decoding
//! does not allocate.

use crate::float::Float;
use crate::kernels::norm::rmsnorm_rows;
use crate::kernels::swiglu::swiglu_rows;
use crate::matmul::{axpy, dot, linear_forward, SyncPtr, SMALL_ROWS};
use crate::model::Model;
use crate::EngineError;
use rayon::prelude::*;

/// Cache layout: `[layer][slot][kv_head][position][head_dim]` for K and for V,
/// so the keys one query head scans are contiguous.
pub struct KvCache<T = f32> {
    n_layers: usize,
    n_kv_heads: usize,
    head_dim: usize,
    slots: usize,
    max_len: usize,
    k: Vec<T>,
    v: Vec<T>,
    lens: Vec<usize>,
    scratch: Scratch<T>,
}

/// Buffers of one call, kept between calls so decoding does not allocate.
#[derive(Default)]
pub(crate) struct Scratch<T> {
    pub(crate) x: Vec<T>,
    pub(crate) xn: Vec<T>,
    pub(crate) qkv: Vec<T>,
    pub(crate) o: Vec<T>,
    pub(crate) gu: Vec<T>,
    pub(crate) h: Vec<T>,
    pub(crate) scores: Vec<T>,
    pub(crate) rows_slot: Vec<usize>,
    pub(crate) rows_pos: Vec<usize>,
    pub(crate) out_rows: Vec<usize>,
    sel: Vec<T>,
}

/// Tokens to append to one slot.
#[derive(Clone, Copy, Debug)]
pub struct SeqChunk<'a> {
    pub slot: usize,
    pub tokens: &'a [u32],
}

/// Which positions' logits to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsFor {
    /// The last position of each chunk (generation).
    Last,
    /// Every position of every chunk, in order (scoring, `echo` log-probs).
    All,
}

impl<T: Float> KvCache<T> {
    pub fn new(cfg: &crate::ModelConfig, slots: usize, max_len: usize) -> Self {
        let size = cfg.n_layers * slots * cfg.n_kv_heads * max_len * cfg.head_dim();
        KvCache {
            n_layers: cfg.n_layers,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim(),
            slots,
            max_len,
            k: crate::huge::filled_huge(size, T::ZERO),
            v: crate::huge::filled_huge(size, T::ZERO),
            lens: vec![0; slots],
            scratch: Scratch::default(),
        }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }
    pub fn max_len(&self) -> usize {
        self.max_len
    }
    /// Tokens cached for `slot`.
    pub fn len(&self, slot: usize) -> usize {
        self.lens[slot]
    }
    pub fn is_empty(&self, slot: usize) -> bool {
        self.lens[slot] == 0
    }
    /// Forget a slot's tokens (the sequence finished or was cancelled).
    pub fn reset(&mut self, slot: usize) {
        self.lens[slot] = 0;
    }
    /// Keep only the first `len` tokens of a slot (e.g. to reuse a shared prompt prefix).
    pub fn truncate(&mut self, slot: usize, len: usize) {
        self.lens[slot] = self.lens[slot].min(len);
    }

    pub(crate) fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }
    pub(crate) fn head_dim(&self) -> usize {
        self.head_dim
    }
    pub(crate) fn kv_mut(&mut self) -> (&mut [T], &mut [T]) {
        (&mut self.k, &mut self.v)
    }

    /// Offset of `(layer, slot, kv_head)`'s keys (and values) in `k` (`v`).
    #[inline]
    fn base(&self, layer: usize, slot: usize, kvh: usize) -> usize {
        ((layer * self.slots + slot) * self.n_kv_heads + kvh) * self.max_len * self.head_dim
    }
}

pub(crate) fn grow<T: Float>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::ZERO);
    }
}

impl<T: Float> Model<T> {
    /// Runs `chunks` through the model, appending to their slots' caches, and
    /// writes logits (`rows x vocab`, rows as `which` says) into `logits`.
    pub fn forward_cached(
        &self,
        cache: &mut KvCache<T>,
        chunks: &[SeqChunk],
        which: LogitsFor,
        logits: &mut Vec<T>,
    ) -> Result<(), EngineError> {
        let cfg = &self.cfg;
        if cache.n_layers != cfg.n_layers || cache.n_kv_heads != cfg.n_kv_heads || cache.head_dim != cfg.head_dim() {
            return Err(EngineError::Shape("KV cache was built for another model shape".into()));
        }
        for (i, c) in chunks.iter().enumerate() {
            if c.slot >= cache.slots {
                return Err(EngineError::Shape(format!(
                    "slot {} does not exist (cache has {})",
                    c.slot, cache.slots
                )));
            }
            // Quadratic, but a call carries at most a few dozen chunks and this
            // keeps the decode step free of allocation.
            if chunks[..i].iter().any(|o| o.slot == c.slot) {
                return Err(EngineError::Shape(format!("slot {} appears twice in one call", c.slot)));
            }
            let end = cache.lens[c.slot] + c.tokens.len();
            if end > cache.max_len.min(self.rope.max_pos()) {
                return Err(EngineError::Shape(format!(
                    "slot {} would hold {end} tokens, more than the context length {}",
                    c.slot,
                    cache.max_len.min(self.rope.max_pos())
                )));
            }
            if let Some(&t) = c.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                return Err(EngineError::Shape(format!(
                    "token id {t} is outside the vocabulary of {}",
                    cfg.vocab_size
                )));
            }
        }
        let (d, qd, f, hd) = (cfg.d_model, cfg.qkv_dim(), cfg.ffn_hidden, cfg.head_dim());
        let (nh, nkv) = (cfg.n_heads, cfg.n_kv_heads);
        let n: usize = chunks.iter().map(|c| c.tokens.len()).sum();
        let eps = T::from_f64(cfg.norm_eps);
        let p = &self.params;

        let mut sc = std::mem::take(&mut cache.scratch);
        grow(&mut sc.x, n * d);
        grow(&mut sc.xn, n * d);
        grow(&mut sc.qkv, n * qd);
        grow(&mut sc.o, n * nh * hd);
        grow(&mut sc.gu, n * 2 * f);
        grow(&mut sc.h, n * f);
        sc.rows_slot.clear();
        sc.rows_pos.clear();
        sc.out_rows.clear();
        for c in chunks {
            let start = cache.lens[c.slot];
            for i in 0..c.tokens.len() {
                sc.rows_slot.push(c.slot);
                sc.rows_pos.push(start + i);
                if which == LogitsFor::All || i + 1 == c.tokens.len() {
                    sc.out_rows.push(sc.rows_slot.len() - 1);
                }
            }
        }
        let e = self.layout.embed;
        let mut r = 0;
        for c in chunks {
            crate::kernels::embedding::embed_forward(
                &mut sc.x[r * d..(r + c.tokens.len()) * d],
                &p[e..e + cfg.vocab_size * d],
                c.tokens,
                d,
            )?;
            r += c.tokens.len();
        }

        if n <= SMALL_ROWS {
            logits.resize(sc.out_rows.len() * cfg.vocab_size, T::ZERO);
            self.decode_step(cache, &mut sc, n, logits);
            for c in chunks {
                cache.lens[c.slot] += c.tokens.len();
            }
            cache.scratch = sc;
            return Ok(());
        }
        for (l, lo) in self.layout.layers.iter().enumerate() {
            rmsnorm_rows(&mut sc.xn[..n * d], &sc.x[..n * d], &p[lo.input_norm..lo.input_norm + d], d, eps);
            linear_forward(&mut sc.qkv[..n * qd], &sc.xn[..n * d], &p[lo.qkv..lo.qkv + qd * d], n, d, qd, false);
            for (row, &pos) in sc.qkv[..n * qd].chunks_exact_mut(qd).zip(&sc.rows_pos) {
                self.rope.apply(&mut row[..(nh + nkv) * hd], pos, false);
            }
            for ((row, &slot), &pos) in sc.qkv[..n * qd].chunks_exact(qd).zip(&sc.rows_slot).zip(&sc.rows_pos) {
                for g in 0..nkv {
                    let at = cache.base(l, slot, g) + pos * hd;
                    cache.k[at..at + hd].copy_from_slice(&row[(nh + g) * hd..(nh + g + 1) * hd]);
                    cache.v[at..at + hd].copy_from_slice(&row[(nh + nkv + g) * hd..(nh + nkv + g + 1) * hd]);
                }
            }
            self.cached_attention(cache, l, &mut sc, n);
            linear_forward(
                &mut sc.x[..n * d],
                &sc.o[..n * nh * hd],
                &p[lo.o..lo.o + d * nh * hd],
                n,
                nh * hd,
                d,
                true,
            );
            rmsnorm_rows(&mut sc.xn[..n * d], &sc.x[..n * d], &p[lo.post_norm..lo.post_norm + d], d, eps);
            linear_forward(
                &mut sc.gu[..n * 2 * f],
                &sc.xn[..n * d],
                &p[lo.gate_up..lo.gate_up + 2 * f * d],
                n,
                d,
                2 * f,
                false,
            );
            swiglu_rows(&mut sc.h[..n * f], &sc.gu[..n * 2 * f], f);
            linear_forward(&mut sc.x[..n * d], &sc.h[..n * f], &p[lo.down..lo.down + d * f], n, f, d, true);
        }
        for c in chunks {
            cache.lens[c.slot] += c.tokens.len();
        }

        let rows = sc.out_rows.len();
        grow(&mut sc.sel, rows * d);
        for (k, &r) in sc.out_rows.iter().enumerate() {
            let fnorm = self.layout.final_norm;
            rmsnorm_rows(
                &mut sc.sel[k * d..(k + 1) * d],
                &sc.x[r * d..(r + 1) * d],
                &p[fnorm..fnorm + d],
                d,
                eps,
            );
        }
        logits.resize(rows * cfg.vocab_size, T::ZERO);
        let head = self.layout.lm_head;
        linear_forward(
            logits,
            &sc.sel[..rows * d],
            &p[head..head + cfg.vocab_size * d],
            rows,
            d,
            cfg.vocab_size,
            false,
        );
        cache.scratch = sc;
        Ok(())
    }

    /// Each row's query heads against its slot's cached keys `0..=pos`.
    fn cached_attention(&self, cache: &KvCache<T>, layer: usize, sc: &mut Scratch<T>, n: usize) {
        let cfg = &self.cfg;
        let (qd, hd, nh, nkv) = (cfg.qkv_dim(), cfg.head_dim(), cfg.n_heads, cfg.n_kv_heads);
        let rep = nh / nkv;
        let scale = T::ONE / T::from_usize(hd).sqrt();
        let max_len = cache.max_len;
        let tasks = n * nh;
        grow(&mut sc.scores, tasks * max_len);
        let o_ptr = SyncPtr(sc.o.as_mut_ptr());
        let scores_ptr = SyncPtr(sc.scores.as_mut_ptr());
        let (qkv, rows_slot, rows_pos) = (&sc.qkv, &sc.rows_slot, &sc.rows_pos);
        let run = |task: usize| {
            let (r, h) = (task / nh, task % nh);
            let (slot, pos) = (rows_slot[r], rows_pos[r]);
            let g = h / rep;
            let q = &qkv[r * qd + h * hd..r * qd + (h + 1) * hd];
            let base = cache.base(layer, slot, g);
            // SAFETY: each task owns scores[task·max_len..] and o[r, head h].
            let (s, out) = unsafe {
                (
                    std::slice::from_raw_parts_mut(scores_ptr.get().add(task * max_len), pos + 1),
                    std::slice::from_raw_parts_mut(o_ptr.get().add(r * nh * hd + h * hd), hd),
                )
            };
            let len = (pos + 1) * hd;
            attend(q, &cache.k[base..base + len], &cache.v[base..base + len], hd, scale, s, out);
        };
        // Parallelism pays only when there is real work (prefill, big batches);
        // a single decode token's attention is a few microseconds.
        let work: usize = rows_pos[..n].iter().map(|p| p + 1).sum::<usize>() * nh * hd;
        if work > 1 << 16 && rayon::current_num_threads() > 1 {
            (0..tasks).into_par_iter().for_each(run);
        } else {
            (0..tasks).for_each(run);
        }
    }
}

/// One query head against `keys`/`values` (`scores.len()` positions of `hd`
/// each): `out = softmax(q·Kᵀ·scale) · V`, with `scores` as scratch.
pub(crate) fn attend<T: Float>(q: &[T], keys: &[T], values: &[T], hd: usize, scale: T, scores: &mut [T], out: &mut [T]) {
    let mut m = T::NEG_INFINITY;
    for (sj, k) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
        *sj = dot(q, k) * scale;
        m = m.max(*sj);
    }
    let z = crate::float::exp_shifted_sum(scores, m);
    out.fill(T::ZERO);
    let inv = T::ONE / z;
    for (&sj, v) in scores.iter().zip(values.chunks_exact(hd)) {
        axpy(out, sj * inv, v);
    }
}
