//! The few-row step of decoding in one parallel region.
//!
//! A decode step is ~20 small matrix-vector products whose weights (17 MB for
//! the reference model in f32) stream from L3; handing each product to rayon
//! costs a wake-up and a join per product, as much as the math. Here every
//! worker runs the whole step over its own share of each product's output
//! features (and of the attention's KV groups), meeting the others at a spin
//! barrier between dependent phases — the shape of llama.cpp's thread pool.
//! The workers are the calling thread and the spinning helpers of `team`,
//! which start a step faster than a rayon broadcast wakes the pool.
//!
//! Per layer (`t` = this worker's share):
//! 1. `xn = rmsnorm(x)` (each worker privately), `qkv[t] = xn · Wqkvᵀ`      | barrier
//! 2. for KV groups `g` of `t`: RoPE, append K/V to the cache, attend       | barrier
//! 3. `x[t] += o · Woᵀ`                                                      | barrier
//! 4. `xn = rmsnorm(x)`, `gate[t], up[t] = xn · Wᵀ`, `h[t] = silu(gate)∘up`  | barrier
//! 5. `x[t] += h · Wdownᵀ`                                                   | barrier
//!
//! then the final norm and `logits[t] = xn · Wheadᵀ`. Each output element is
//! computed by the same code whatever the split, so the thread count does not
//! change the numbers. The whole step is one [`multiversion!`] function, so
//! its elementwise loops are compiled for the active kernel path along with
//! the explicit matrix-vector kernels; products with q8_0 weights take their
//! input quantized to q8_0 by each worker (privately, like the norm).

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use crate::float::Float;
use crate::kernels::norm::rmsnorm_rows_in;
use crate::kv::{attend, KvCache, KvElem, KvStore, Scratch};
use crate::matmul::{matvec, quantize_rows, SyncPtr};
use crate::model::Model;
use crate::packed::LayerMatrix;
use crate::quant::{BlockQ8_0, WeightRef, F16, Q8_0_BLOCK};
use crate::simd::{multiversion, Kernels};

/// Output features are split between workers in multiples of this, so each
/// share starts on a full block of the matvec kernel.
const SPLIT_ALIGN: usize = 16;

/// A barrier that spins for a few microseconds (a phase lasts tens of them)
/// and then sleeps: spinning alone collapses when the machine is busy and a
/// worker waits for a partner the scheduler has parked behind other work.
struct SpinBarrier {
    workers: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Spins before sleeping: ~50 µs of `pause`.
const SPINS_BEFORE_SLEEP: u32 = 1 << 11;

impl SpinBarrier {
    fn new(workers: usize) -> Self {
        SpinBarrier {
            workers,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    fn wait(&self) {
        if self.workers == 1 {
            return;
        }
        let generation = self.generation.load(Ordering::SeqCst);
        if self.arrived.fetch_add(1, Ordering::SeqCst) + 1 == self.workers {
            self.arrived.store(0, Ordering::SeqCst);
            self.generation.fetch_add(1, Ordering::SeqCst);
            // A sleeper registers under the lock before its last check of the
            // generation, so taking the lock here cannot miss it.
            if self.sleepers.load(Ordering::SeqCst) > 0 {
                let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.wake.notify_all();
            }
            return;
        }
        for _ in 0..SPINS_BEFORE_SLEEP {
            if self.generation.load(Ordering::Acquire) != generation {
                return;
            }
            std::hint::spin_loop();
        }
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while self.generation.load(Ordering::SeqCst) == generation {
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Worker `t` of `workers`' share of `0..len`, cut at multiples of [`SPLIT_ALIGN`].
fn share(len: usize, t: usize, workers: usize) -> Range<usize> {
    let units = len.div_ceil(SPLIT_ALIGN);
    let at = |k: usize| (units * k / workers * SPLIT_ALIGN).min(len);
    at(t)..at(t + 1)
}

impl<T: Float> Model<T> {
    /// Every layer, the final norm and the LM head for the `n` rows already
    /// embedded in `sc.x` (rows described by `sc.rows_slot/rows_pos`), writing
    /// the logits of `sc.out_rows` into `logits`.
    pub(crate) fn decode_step(&self, cache: &mut KvCache<T>, sc: &mut Scratch<T>, n: usize, logits: &mut [T]) {
        // Inside a pool task run alone; otherwise as many workers as the pool has.
        let pool = rayon::current_num_threads();
        let workers = if rayon::current_thread_index().is_none() { pool } else { 1 };
        let cfg = &self.cfg;
        let d = cfg.d_model;
        let widest = d.max(cfg.n_heads * cfg.head_dim()).max(cfg.ffn_hidden);
        super::kv::grow(&mut sc.xn, workers * n * d);
        super::kv::grow(&mut sc.scores, workers * cache.max_len());
        let per_worker_blocks = n * widest.div_ceil(Q8_0_BLOCK);
        if sc.xq.len() < workers * per_worker_blocks {
            sc.xq.resize(workers * per_worker_blocks, BlockQ8_0::default());
        }
        let kernels = Kernels::active();
        let geometry = cache.geometry();
        match cache.store_mut() {
            KvStore::Full { k, v } => {
                let shared = Shared::new(sc, logits, k, v, geometry, per_worker_blocks);
                self.run_workers(kernels, &shared, n, workers);
            }
            KvStore::F16 { k, v } => {
                let shared = Shared::<T, F16>::new(sc, logits, k, v, geometry, per_worker_blocks);
                self.run_workers(kernels, &shared, n, workers);
            }
        }
    }

    /// The step on `workers` threads, or on this one alone if another step
    /// holds the helper threads (two steps interleaving their workers could
    /// each hold a thread spinning for the other's).
    fn run_workers<E: KvElem<T>>(&self, kernels: Kernels, shared: &Shared<'_, T, E>, n: usize, workers: usize) {
        if workers > 1 {
            let barrier = SpinBarrier::new(workers);
            let job = |t: usize| decode_worker(kernels, self, shared, &barrier, n, t, workers);
            if crate::team::run(workers, &job) {
                return;
            }
        }
        decode_worker(kernels, self, shared, &SpinBarrier::new(1), n, 0, 1);
    }
}

multiversion! {
    /// Worker `t`'s part of a decode step (see the module doc).
    fn decode_worker<T: Float, E: KvElem<T>>(
        isa: Isa,
        model: &Model<T>,
        s: &Shared<'_, T, E>,
        barrier: &SpinBarrier,
        n: usize,
        t: usize,
        workers: usize,
    ) {
        let cfg = &model.cfg;
        let (d, qd, f, hd) = (cfg.d_model, cfg.qkv_dim(), cfg.ffn_hidden, cfg.head_dim());
        let (nh, nkv) = (cfg.n_heads, cfg.n_kv_heads);
        let rep = nh / nkv;
        let eps = T::from_f64(cfg.norm_eps);
        let scale = T::ONE / T::from_usize(hd).sqrt();
        let max_len = s.max_len;
        // SAFETY (all the slices below): `Shared` points at buffers sized by
        // `decode_step` and its callers; each phase writes only this worker's
        // share (its output features, its KV groups, its private norm, score
        // and quantized-input rows) and reads what other workers wrote before
        // the barrier that ends their phase.
        let xn = unsafe { s.slice(s.xn, t * n * d, n * d) };
        let scores = unsafe { s.slice(s.scores, t * max_len, max_len) };
        let xq = unsafe { std::slice::from_raw_parts_mut(s.xq.get().add(t * s.xq_per_worker), s.xq_per_worker) };
        for l in 0..cfg.n_layers {
            let x = unsafe { s.slice(s.x, 0, n * d) };
            rmsnorm_rows_in(isa, xn, x, model.input_norm(l), d, eps);
            let w = model.layer_weight(l, LayerMatrix::Qkv);
            let blocks = q8_input(xn, &w, n, d, xq);
            unsafe { matvec(isa, s.qkv.get(), qd, xn, &xq[..blocks], w, n, d, share(qd, t, workers), false) };
            barrier.wait();

            for g in (t..nkv).step_by(workers) {
                for r in 0..n {
                    let (slot, pos) = (s.rows_slot[r], s.rows_pos[r]);
                    let row = unsafe { s.slice(s.qkv, r * qd, qd) };
                    let (k_at, v_at) = ((nh + g) * hd, (nh + nkv + g) * hd);
                    model.rope.apply(&mut row[k_at..k_at + hd], pos, false);
                    let at = s.cache_base(l, slot, g) + pos * hd;
                    unsafe {
                        E::store(&row[k_at..k_at + hd], s.slice(s.k, at, hd));
                        E::store(&row[v_at..v_at + hd], s.slice(s.v, at, hd));
                    }
                }
                for r in 0..n {
                    let (slot, pos) = (s.rows_slot[r], s.rows_pos[r]);
                    let base = s.cache_base(l, slot, g);
                    let keys = unsafe { s.slice(s.k, base, (pos + 1) * hd) };
                    let values = unsafe { s.slice(s.v, base, (pos + 1) * hd) };
                    for h in g * rep..(g + 1) * rep {
                        let q = unsafe { s.slice(s.qkv, r * qd + h * hd, hd) };
                        model.rope.apply(q, pos, false);
                        let out = unsafe { s.slice(s.o, r * nh * hd + h * hd, hd) };
                        attend(isa, q, keys, values, hd, scale, &mut scores[..pos + 1], out);
                    }
                }
            }
            barrier.wait();

            let o = unsafe { s.slice(s.o, 0, n * nh * hd) };
            let w = model.layer_weight(l, LayerMatrix::O);
            let blocks = q8_input(o, &w, n, nh * hd, xq);
            unsafe { matvec(isa, s.x.get(), d, o, &xq[..blocks], w, n, nh * hd, share(d, t, workers), true) };
            barrier.wait();

            let x = unsafe { s.slice(s.x, 0, n * d) };
            rmsnorm_rows_in(isa, xn, x, model.post_norm(l), d, eps);
            let hid = share(f, t, workers);
            let w = model.layer_weight(l, LayerMatrix::GateUp);
            let blocks = q8_input(xn, &w, n, d, xq);
            unsafe {
                matvec(isa, s.gu.get(), 2 * f, xn, &xq[..blocks], w, n, d, hid.clone(), false);
                matvec(isa, s.gu.get(), 2 * f, xn, &xq[..blocks], w, n, d, f + hid.start..f + hid.end, false);
            }
            for r in 0..n {
                let gu = unsafe { s.slice(s.gu, r * 2 * f, 2 * f) };
                let h = unsafe { s.slice(s.h, r * f, f) };
                crate::kernels::swiglu::swiglu_row_range(&mut h[hid.clone()], &gu[hid.clone()], &gu[f + hid.start..f + hid.end]);
            }
            barrier.wait();

            let h = unsafe { s.slice(s.h, 0, n * f) };
            let w = model.layer_weight(l, LayerMatrix::Down);
            let blocks = q8_input(h, &w, n, f, xq);
            unsafe { matvec(isa, s.x.get(), d, h, &xq[..blocks], w, n, f, share(d, t, workers), true) };
            barrier.wait();
        }

        let rows = s.out_rows.len();
        let x = unsafe { s.slice(s.x, 0, n * d) };
        for (k, &r) in s.out_rows.iter().enumerate() {
            rmsnorm_rows_in(isa, &mut xn[k * d..(k + 1) * d], &x[r * d..(r + 1) * d], model.final_norm(), d, eps);
        }
        let vocab = cfg.head_rows();
        let w = model.head_weight();
        let xs = &xn[..rows * d];
        let blocks = q8_input(xs, &w, rows, d, xq);
        unsafe { matvec(isa, s.logits.get(), vocab, xs, &xq[..blocks], w, rows, d, share(vocab, t, workers), false) };
    }
}

/// Quantizes `input` (`rows` rows of `d_in`) into `xq` when `w` is q8_0 (whose
/// product takes its input quantized); returns the number of blocks written.
#[inline(always)]
fn q8_input<T: Float>(input: &[T], w: &WeightRef<'_, T>, rows: usize, d_in: usize, xq: &mut [BlockQ8_0]) -> usize {
    if !matches!(w, WeightRef::Q8_0(_)) {
        return 0;
    }
    let blocks = rows * d_in / Q8_0_BLOCK;
    quantize_rows(&input[..rows * d_in], &mut xq[..blocks]);
    blocks
}

/// Raw views of the step's buffers for the workers (see the SAFETY note in
/// `decode_worker`); `E` is the KV cache's element type.
struct Shared<'a, T, E> {
    x: SyncPtr<T>,
    xn: SyncPtr<T>,
    qkv: SyncPtr<T>,
    o: SyncPtr<T>,
    gu: SyncPtr<T>,
    h: SyncPtr<T>,
    scores: SyncPtr<T>,
    logits: SyncPtr<T>,
    xq: SyncPtr<BlockQ8_0>,
    xq_per_worker: usize,
    k: SyncPtr<E>,
    v: SyncPtr<E>,
    rows_slot: &'a [usize],
    rows_pos: &'a [usize],
    out_rows: &'a [usize],
    max_len: usize,
    /// Where each (layer, slot, group)'s keys start: see [`KvCache::geometry`].
    geometry: [usize; 3],
}

// SAFETY: workers touch disjoint parts between barriers (see decode_worker).
unsafe impl<T: Send, E: Send> Sync for Shared<'_, T, E> {}

impl<'a, T: Float, E: KvElem<T>> Shared<'a, T, E> {
    fn new(
        sc: &'a mut Scratch<T>,
        logits: &'a mut [T],
        k: &'a mut [E],
        v: &'a mut [E],
        geometry: [usize; 4],
        xq_per_worker: usize,
    ) -> Self {
        let [slots, groups, max_len, head_dim] = geometry;
        Shared {
            x: SyncPtr(sc.x.as_mut_ptr()),
            xn: SyncPtr(sc.xn.as_mut_ptr()),
            qkv: SyncPtr(sc.qkv.as_mut_ptr()),
            o: SyncPtr(sc.o.as_mut_ptr()),
            gu: SyncPtr(sc.gu.as_mut_ptr()),
            h: SyncPtr(sc.h.as_mut_ptr()),
            scores: SyncPtr(sc.scores.as_mut_ptr()),
            logits: SyncPtr(logits.as_mut_ptr()),
            xq: SyncPtr(sc.xq.as_mut_ptr()),
            xq_per_worker,
            k: SyncPtr(k.as_mut_ptr()),
            v: SyncPtr(v.as_mut_ptr()),
            rows_slot: &sc.rows_slot,
            rows_pos: &sc.rows_pos,
            out_rows: &sc.out_rows,
            max_len,
            geometry: [slots, groups, max_len * head_dim],
        }
    }

    /// # Safety
    /// `start + len` is within the buffer `ptr` came from, and no other worker
    /// touches that range until the next barrier (or only reads it, if this
    /// worker only reads).
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice<U>(&self, ptr: SyncPtr<U>, start: usize, len: usize) -> &mut [U] {
        std::slice::from_raw_parts_mut(ptr.get().add(start), len)
    }

    fn cache_base(&self, layer: usize, slot: usize, group: usize) -> usize {
        let [slots, groups, per_group] = self.geometry;
        ((layer * slots + slot) * groups + group) * per_group
    }
}
