//! The few-row step of decoding in one parallel region.
//!
//! A decode step is ~20 small matrix-vector products whose weights (17 MB for
//! the reference model) stream from L3; handing each product to rayon costs a
//! wake-up and a join per product, as much as the math. Here every worker runs
//! the whole step over its own share of each product's output features (and of
//! the attention's KV groups), meeting the others at a spin barrier between
//! dependent phases — the shape of llama.cpp's thread pool.
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
//! change the numbers.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use crate::float::Float;
use crate::kernels::norm::rmsnorm_rows;
use crate::kv::{attend, KvCache, Scratch};
use crate::matmul::{matvec_rows, SyncPtr};
use crate::model::Model;

/// Only one fused step runs on the pool at a time: two of them interleaving
/// their per-thread jobs could each hold a worker spinning for the other's.
static POOL_IN_USE: AtomicBool = AtomicBool::new(false);

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
        let pool = rayon::current_num_threads();
        // Inside a pool task, or while another step holds the pool, run alone.
        let use_pool = pool > 1 && rayon::current_thread_index().is_none() && !POOL_IN_USE.swap(true, Ordering::Acquire);
        let workers = if use_pool { pool } else { 1 };
        let cfg = &self.cfg;
        let d = cfg.d_model;
        super::kv::grow(&mut sc.xn, workers * n * d);
        super::kv::grow(&mut sc.scores, workers * cache.max_len());
        let barrier = SpinBarrier::new(workers);
        let shared = Shared::new(cache, sc, logits);
        if use_pool {
            rayon::broadcast(|ctx| self.decode_worker(&shared, &barrier, n, ctx.index(), workers));
            POOL_IN_USE.store(false, Ordering::Release);
        } else {
            self.decode_worker(&shared, &barrier, n, 0, 1);
        }
    }

    fn decode_worker(&self, s: &Shared<'_, T>, barrier: &SpinBarrier, n: usize, t: usize, workers: usize) {
        let cfg = &self.cfg;
        let p = &self.params;
        let (d, qd, f, hd) = (cfg.d_model, cfg.qkv_dim(), cfg.ffn_hidden, cfg.head_dim());
        let (nh, nkv) = (cfg.n_heads, cfg.n_kv_heads);
        let rep = nh / nkv;
        let eps = T::from_f64(cfg.norm_eps);
        let scale = T::ONE / T::from_usize(hd).sqrt();
        let max_len = s.max_len;
        // SAFETY (all the slices below): `Shared` points at buffers sized by
        // `decode_step`'s callers; each phase writes only this worker's share
        // (its output features, its KV groups, its private norm and score rows)
        // and reads what other workers wrote before the barrier that ends
        // their phase.
        let xn = unsafe { s.slice(s.xn, t * n * d, n * d) };
        let scores = unsafe { s.slice(s.scores, t * max_len, max_len) };
        for (l, lo) in self.layout.layers.iter().enumerate() {
            let x = unsafe { s.slice(s.x, 0, n * d) };
            rmsnorm_rows(xn, x, &p[lo.input_norm..lo.input_norm + d], d, eps);
            let outs = share(qd, t, workers);
            unsafe { matvec_rows(s.qkv.get(), qd, xn, &p[lo.qkv..lo.qkv + qd * d], n, d, outs, false) };
            barrier.wait();

            for g in (t..nkv).step_by(workers) {
                for r in 0..n {
                    let (slot, pos) = (s.rows_slot[r], s.rows_pos[r]);
                    let row = unsafe { s.slice(s.qkv, r * qd, qd) };
                    let (k_at, v_at) = ((nh + g) * hd, (nh + nkv + g) * hd);
                    self.rope.apply(&mut row[k_at..k_at + hd], pos, false);
                    let at = s.cache_base(l, slot, g) + pos * hd;
                    unsafe {
                        s.slice(s.k, at, hd).copy_from_slice(&row[k_at..k_at + hd]);
                        s.slice(s.v, at, hd).copy_from_slice(&row[v_at..v_at + hd]);
                    }
                }
                for r in 0..n {
                    let (slot, pos) = (s.rows_slot[r], s.rows_pos[r]);
                    let base = s.cache_base(l, slot, g);
                    let keys = unsafe { s.slice(s.k, base, (pos + 1) * hd) };
                    let values = unsafe { s.slice(s.v, base, (pos + 1) * hd) };
                    for h in g * rep..(g + 1) * rep {
                        let q = unsafe { s.slice(s.qkv, r * qd + h * hd, hd) };
                        self.rope.apply(q, pos, false);
                        let out = unsafe { s.slice(s.o, r * nh * hd + h * hd, hd) };
                        attend(q, keys, values, hd, scale, &mut scores[..pos + 1], out);
                    }
                }
            }
            barrier.wait();

            let o = unsafe { s.slice(s.o, 0, n * nh * hd) };
            unsafe {
                matvec_rows(
                    s.x.get(),
                    d,
                    o,
                    &p[lo.o..lo.o + d * nh * hd],
                    n,
                    nh * hd,
                    share(d, t, workers),
                    true,
                )
            };
            barrier.wait();

            let x = unsafe { s.slice(s.x, 0, n * d) };
            rmsnorm_rows(xn, x, &p[lo.post_norm..lo.post_norm + d], d, eps);
            let hid = share(f, t, workers);
            let w = &p[lo.gate_up..lo.gate_up + 2 * f * d];
            unsafe {
                matvec_rows(s.gu.get(), 2 * f, xn, w, n, d, hid.clone(), false);
                matvec_rows(s.gu.get(), 2 * f, xn, w, n, d, f + hid.start..f + hid.end, false);
            }
            for r in 0..n {
                let gu = unsafe { s.slice(s.gu, r * 2 * f, 2 * f) };
                let h = unsafe { s.slice(s.h, r * f, f) };
                let (gate, up) = gu.split_at(f);
                for i in hid.clone() {
                    let g = gate[i];
                    h[i] = g / (T::ONE + (-g).exp()) * up[i];
                }
            }
            barrier.wait();

            let h = unsafe { s.slice(s.h, 0, n * f) };
            unsafe { matvec_rows(s.x.get(), d, h, &p[lo.down..lo.down + d * f], n, f, share(d, t, workers), true) };
            barrier.wait();
        }

        let rows = s.out_rows.len();
        let fnorm = self.layout.final_norm;
        let x = unsafe { s.slice(s.x, 0, n * d) };
        for (k, &r) in s.out_rows.iter().enumerate() {
            rmsnorm_rows(&mut xn[k * d..(k + 1) * d], &x[r * d..(r + 1) * d], &p[fnorm..fnorm + d], d, eps);
        }
        let (head, vocab) = (self.layout.lm_head, cfg.vocab_size);
        let outs = share(vocab, t, workers);
        unsafe {
            matvec_rows(
                s.logits.get(),
                vocab,
                &xn[..rows * d],
                &p[head..head + vocab * d],
                rows,
                d,
                outs,
                false,
            )
        };
    }
}

/// Raw views of the step's buffers for the workers (see the SAFETY note in
/// `decode_worker`).
struct Shared<'a, T> {
    x: SyncPtr<T>,
    xn: SyncPtr<T>,
    qkv: SyncPtr<T>,
    o: SyncPtr<T>,
    gu: SyncPtr<T>,
    h: SyncPtr<T>,
    scores: SyncPtr<T>,
    logits: SyncPtr<T>,
    k: SyncPtr<T>,
    v: SyncPtr<T>,
    rows_slot: &'a [usize],
    rows_pos: &'a [usize],
    out_rows: &'a [usize],
    max_len: usize,
    /// Where each (layer, slot, group)'s keys start: see [`KvCache::base`].
    geometry: [usize; 3],
}

// SAFETY: workers touch disjoint parts between barriers (see decode_worker).
unsafe impl<T: Send> Sync for Shared<'_, T> {}

impl<'a, T: Float> Shared<'a, T> {
    fn new(cache: &'a mut KvCache<T>, sc: &'a mut Scratch<T>, logits: &'a mut [T]) -> Self {
        let geometry = [cache.slots(), cache.n_kv_heads(), cache.max_len() * cache.head_dim()];
        let max_len = cache.max_len();
        let (k, v) = cache.kv_mut();
        let (k, v) = (SyncPtr(k.as_mut_ptr()), SyncPtr(v.as_mut_ptr()));
        Shared {
            x: SyncPtr(sc.x.as_mut_ptr()),
            xn: SyncPtr(sc.xn.as_mut_ptr()),
            qkv: SyncPtr(sc.qkv.as_mut_ptr()),
            o: SyncPtr(sc.o.as_mut_ptr()),
            gu: SyncPtr(sc.gu.as_mut_ptr()),
            h: SyncPtr(sc.h.as_mut_ptr()),
            scores: SyncPtr(sc.scores.as_mut_ptr()),
            logits: SyncPtr(logits.as_mut_ptr()),
            k,
            v,
            rows_slot: &sc.rows_slot,
            rows_pos: &sc.rows_pos,
            out_rows: &sc.out_rows,
            max_len,
            geometry,
        }
    }

    /// # Safety
    /// `start + len` is within the buffer `ptr` came from, and no other worker
    /// touches that range until the next barrier (or only reads it, if this
    /// worker only reads).
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, ptr: SyncPtr<T>, start: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(ptr.get().add(start), len)
    }

    fn cache_base(&self, layer: usize, slot: usize, group: usize) -> usize {
        let [slots, groups, per_group] = self.geometry;
        ((layer * slots + slot) * groups + group) * per_group
    }
}
