//! Inference with a key/value cache shared by many sequences ("slots").
//!
//! One call of [`Model::forward_cached`] takes any mix of prefill chunks
//! (many tokens of one slot) and decode steps (one token of a slot), runs them
//! as one batch of rows through every matmul, appends their keys and values to
//! their slots, and returns logits — the basis of continuous batching.
//! Scratch buffers live in the cache and only grow, so steady-state decoding
//! does not allocate. Keys and values are stored in the model's float type or,
//! to halve the cache, in f16 ([`KvCache::with_dtype`]); attention widens them
//! as it reads.

use crate::float::Float;
use crate::kernels::norm::rmsnorm_rows;
use crate::kernels::swiglu::swiglu_rows;
use crate::matmul::{linear_forward_weights, SyncPtr, SMALL_ROWS};
use crate::model::Model;
use crate::packed::LayerMatrix;
use crate::quant::{BlockQ8_0, DType, F16};
use crate::simd::{multiversion, Isa, Kernels};
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
    store: KvStore<T>,
    lens: Vec<usize>,
    scratch: Scratch<T>,
}

/// The cached keys and values, in the layout of [`KvCache`].
pub(crate) enum KvStore<T> {
    Full { k: Vec<T>, v: Vec<T> },
    F16 { k: Vec<F16>, v: Vec<F16> },
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
    /// Each decode worker's input to q8_0 products, quantized.
    pub(crate) xq: Vec<BlockQ8_0>,
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
    /// A cache holding keys and values in `T`.
    pub fn new(cfg: &crate::ModelConfig, slots: usize, max_len: usize) -> Self {
        let size = cfg.n_layers * slots * cfg.n_kv_heads * max_len * cfg.head_dim();
        let store = KvStore::Full {
            k: crate::huge::filled_huge(size, T::ZERO),
            v: crate::huge::filled_huge(size, T::ZERO),
        };
        Self::with_store(cfg, slots, max_len, store)
    }

    /// A cache holding keys and values as `dtype`: `F32` (the model's float
    /// type, as [`KvCache::new`]) or `F16` (half the memory; every cached
    /// value rounded to f16). q8_0 is not offered for the cache.
    pub fn with_dtype(cfg: &crate::ModelConfig, slots: usize, max_len: usize, dtype: DType) -> Result<Self, EngineError> {
        let size = cfg.n_layers * slots * cfg.n_kv_heads * max_len * cfg.head_dim();
        match dtype {
            DType::F32 => Ok(Self::new(cfg, slots, max_len)),
            DType::F16 => {
                let store = KvStore::F16 {
                    k: crate::huge::filled_huge(size, F16::default()),
                    v: crate::huge::filled_huge(size, F16::default()),
                };
                Ok(Self::with_store(cfg, slots, max_len, store))
            }
            DType::Q8_0 => Err(EngineError::Unsupported("a q8_0 KV cache (f32 and f16 caches exist)".into())),
        }
    }

    fn with_store(cfg: &crate::ModelConfig, slots: usize, max_len: usize, store: KvStore<T>) -> Self {
        KvCache {
            n_layers: cfg.n_layers,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim(),
            slots,
            max_len,
            store,
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

    /// How keys and values are stored (`F32` stands for the model's float type).
    pub fn dtype(&self) -> DType {
        match self.store {
            KvStore::Full { .. } => DType::F32,
            KvStore::F16 { .. } => DType::F16,
        }
    }

    /// Bytes one cached token takes (keys and values of every layer).
    pub fn bytes_per_token(&self) -> usize {
        let elem = match self.store {
            KvStore::Full { .. } => std::mem::size_of::<T>(),
            KvStore::F16 { .. } => std::mem::size_of::<F16>(),
        };
        2 * self.n_layers * self.n_kv_heads * self.head_dim * elem
    }

    /// Bytes of keys and values held for all slots at full length.
    pub fn bytes(&self) -> usize {
        self.bytes_per_token() * self.slots * self.max_len
    }

    /// `[slots, kv heads, max_len, head_dim]`: with the layer, where a
    /// (layer, slot, group)'s keys start (see `cache_offset`).
    pub(crate) fn geometry(&self) -> [usize; 4] {
        [self.slots, self.n_kv_heads, self.max_len, self.head_dim]
    }

    pub(crate) fn store_mut(&mut self) -> &mut KvStore<T> {
        &mut self.store
    }
}

pub(crate) fn grow<T: Float>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::ZERO);
    }
}

/// How attention reads and writes one element type of the cache.
pub(crate) trait KvElem<T: Float>: Copy + Send + Sync + 'static {
    /// Stores `src` (rounding if the cache is narrower).
    fn store(src: &[T], dst: &mut [Self]);
    /// `B` keys' dot products with `q`.
    fn dot_rows<I: Isa, const B: usize>(isa: I, keys: &[&[Self]; B], q: &[T]) -> [T; B];
    /// `out += a · v`.
    fn axpy<I: Isa>(isa: I, out: &mut [T], a: T, v: &[Self]);
}

impl<T: Float> KvElem<T> for T {
    #[inline(always)]
    fn store(src: &[T], dst: &mut [T]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn dot_rows<I: Isa, const B: usize>(isa: I, keys: &[&[T]; B], q: &[T]) -> [T; B] {
        T::dot_rows(isa, keys, q)
    }
    #[inline(always)]
    fn axpy<I: Isa>(_: I, out: &mut [T], a: T, v: &[T]) {
        crate::simd::portable::axpy(out, a, v)
    }
}

impl<T: Float> KvElem<T> for F16 {
    #[inline(always)]
    fn store(src: &[T], dst: &mut [F16]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = F16::from_f32(s.to_f32());
        }
    }
    #[inline(always)]
    fn dot_rows<I: Isa, const B: usize>(isa: I, keys: &[&[F16]; B], q: &[T]) -> [T; B] {
        T::dot_rows_f16(isa, keys, q)
    }
    #[inline(always)]
    fn axpy<I: Isa>(isa: I, out: &mut [T], a: T, v: &[F16]) {
        T::axpy_f16(isa, out, a, v)
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
        let embed = self.embed_weight();
        let tokens = chunks.iter().flat_map(|c| c.tokens);
        for (row, &t) in sc.x[..n * d].chunks_exact_mut(d).zip(tokens) {
            // Ids were checked against the vocabulary above.
            embed.row_into(t as usize, row);
        }

        if n <= SMALL_ROWS {
            logits.resize(sc.out_rows.len() * cfg.head_rows(), T::ZERO);
            self.decode_step(cache, &mut sc, n, logits);
            for c in chunks {
                cache.lens[c.slot] += c.tokens.len();
            }
            cache.scratch = sc;
            return Ok(());
        }
        let kernels = Kernels::active();
        for l in 0..cfg.n_layers {
            rmsnorm_rows(&mut sc.xn[..n * d], &sc.x[..n * d], self.input_norm(l), d, eps);
            let qkv_w = self.layer_weight(l, LayerMatrix::Qkv);
            linear_forward_weights(&mut sc.qkv[..n * qd], &sc.xn[..n * d], qkv_w, n, d, qd, false);
            for (row, &pos) in sc.qkv[..n * qd].chunks_exact_mut(qd).zip(&sc.rows_pos) {
                self.rope.apply(&mut row[..(nh + nkv) * hd], pos, false);
            }
            let geometry = cache.geometry();
            for ((row, &slot), &pos) in sc.qkv[..n * qd].chunks_exact(qd).zip(&sc.rows_slot).zip(&sc.rows_pos) {
                for g in 0..nkv {
                    let at = cache_offset(geometry, l, slot, g) + pos * hd;
                    let (k, v) = (&row[(nh + g) * hd..][..hd], &row[(nh + nkv + g) * hd..][..hd]);
                    match &mut cache.store {
                        KvStore::Full { k: ks, v: vs } => {
                            <T as KvElem<T>>::store(k, &mut ks[at..at + hd]);
                            <T as KvElem<T>>::store(v, &mut vs[at..at + hd]);
                        }
                        KvStore::F16 { k: ks, v: vs } => {
                            <F16 as KvElem<T>>::store(k, &mut ks[at..at + hd]);
                            <F16 as KvElem<T>>::store(v, &mut vs[at..at + hd]);
                        }
                    }
                }
            }
            match &cache.store {
                KvStore::Full { k, v } => self.cached_attention(kernels, k, v, geometry, l, &mut sc, n),
                KvStore::F16 { k, v } => self.cached_attention(kernels, k, v, geometry, l, &mut sc, n),
            }
            let o_w = self.layer_weight(l, LayerMatrix::O);
            linear_forward_weights(&mut sc.x[..n * d], &sc.o[..n * nh * hd], o_w, n, nh * hd, d, true);
            rmsnorm_rows(&mut sc.xn[..n * d], &sc.x[..n * d], self.post_norm(l), d, eps);
            let gu_w = self.layer_weight(l, LayerMatrix::GateUp);
            linear_forward_weights(&mut sc.gu[..n * 2 * f], &sc.xn[..n * d], gu_w, n, d, 2 * f, false);
            swiglu_rows(&mut sc.h[..n * f], &sc.gu[..n * 2 * f], f);
            let down_w = self.layer_weight(l, LayerMatrix::Down);
            linear_forward_weights(&mut sc.x[..n * d], &sc.h[..n * f], down_w, n, f, d, true);
        }
        for c in chunks {
            cache.lens[c.slot] += c.tokens.len();
        }

        let rows = sc.out_rows.len();
        grow(&mut sc.sel, rows * d);
        for (k, &r) in sc.out_rows.iter().enumerate() {
            rmsnorm_rows(
                &mut sc.sel[k * d..(k + 1) * d],
                &sc.x[r * d..(r + 1) * d],
                self.final_norm(),
                d,
                eps,
            );
        }
        logits.resize(rows * cfg.head_rows(), T::ZERO);
        linear_forward_weights(logits, &sc.sel[..rows * d], self.head_weight(), rows, d, cfg.head_rows(), false);
        cache.scratch = sc;
        Ok(())
    }

    /// Each row's query heads against its slot's cached keys `0..=pos`.
    #[allow(clippy::too_many_arguments)]
    fn cached_attention<E: KvElem<T>>(
        &self,
        kernels: Kernels,
        k: &[E],
        v: &[E],
        geometry: [usize; 4],
        layer: usize,
        sc: &mut Scratch<T>,
        n: usize,
    ) {
        let cfg = &self.cfg;
        let (qd, hd, nh, nkv) = (cfg.qkv_dim(), cfg.head_dim(), cfg.n_heads, cfg.n_kv_heads);
        let rep = nh / nkv;
        let scale = T::ONE / T::from_usize(hd).sqrt();
        let max_len = geometry[2];
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
            let base = cache_offset(geometry, layer, slot, g);
            // SAFETY: each task owns scores[task·max_len..] and o[r, head h].
            let (s, out) = unsafe {
                (
                    std::slice::from_raw_parts_mut(scores_ptr.get().add(task * max_len), pos + 1),
                    std::slice::from_raw_parts_mut(o_ptr.get().add(r * nh * hd + h * hd), hd),
                )
            };
            let len = (pos + 1) * hd;
            attend_one(kernels, q, &k[base..base + len], &v[base..base + len], hd, scale, s, out);
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

/// Offset of a (layer, slot, kv head)'s keys in a cache of `geometry`
/// (see [`KvCache::geometry`]).
#[inline]
fn cache_offset(geometry: [usize; 4], layer: usize, slot: usize, kvh: usize) -> usize {
    let [slots, groups, max_len, hd] = geometry;
    ((layer * slots + slot) * groups + kvh) * max_len * hd
}

/// Keys scored together in [`attend`]: they share each load of the query.
const KEY_BLOCK: usize = 4;

/// One query head against `keys`/`values` (`scores.len()` positions of `hd`
/// each): `out = softmax(q·Kᵀ·scale) · V`, with `scores` as scratch.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend<I: Isa, T: Float, E: KvElem<T>>(
    isa: I,
    q: &[T],
    keys: &[E],
    values: &[E],
    hd: usize,
    scale: T,
    scores: &mut [T],
    out: &mut [T],
) {
    let positions = scores.len();
    let mut m = T::NEG_INFINITY;
    let mut j = 0;
    while j < positions {
        // A last, partial block repeats its last key; the repeat is not stored.
        let take = (positions - j).min(KEY_BLOCK);
        let block: [&[E]; KEY_BLOCK] = std::array::from_fn(|i| {
            let key = j + i.min(take - 1);
            &keys[key * hd..(key + 1) * hd]
        });
        let dots = E::dot_rows(isa, &block, q);
        for (s, &v) in scores[j..j + take].iter_mut().zip(&dots) {
            *s = v * scale;
            m = m.max(*s);
        }
        j += take;
    }
    let z = crate::float::exp_shifted_sum(scores, m);
    out.fill(T::ZERO);
    let inv = T::ONE / z;
    for (&sj, v) in scores.iter().zip(values.chunks_exact(hd)) {
        E::axpy(isa, out, sj * inv, v);
    }
}

multiversion! {
    /// [`attend`] on `kernels`' path.
    fn attend_one<T: Float, E: KvElem<T>>(
        isa: Isa,
        q: &[T],
        keys: &[E],
        values: &[E],
        hd: usize,
        scale: T,
        scores: &mut [T],
        out: &mut [T],
    ) {
        attend(isa, q, keys, values, hd, scale, scores, out)
    }
}
