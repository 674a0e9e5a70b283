//! A team of helper threads for the decode step: the calling thread runs
//! worker 0 itself and helpers, spinning between steps, run the others.
//!
//! A decode step lasts a few hundred microseconds, and handing it to rayon
//! (`broadcast`) costs a wake-up of every worker and a sleep and wake-up of the
//! caller each step. Here a step starts with one atomic increment that the
//! spinning helpers see within nanoseconds, the caller works instead of
//! sleeping, and helpers sleep only after [`SPINS_BEFORE_SLEEP`] of idleness
//! (so an idle server costs nothing) — as llama.cpp's thread pool does.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

/// Idle spins of a helper before it sleeps: ~100 µs of `pause`, longer than
/// the gap between decode steps (sampling, bookkeeping).
const SPINS_BEFORE_SLEEP: u32 = 1 << 12;

type Job<'a> = dyn Fn(usize) + Sync + 'a;

/// Low bits of [`State::generation`] that carry the job's worker count.
const WORKER_BITS: u32 = 16;
const WORKER_MASK: usize = (1 << WORKER_BITS) - 1;

struct State {
    /// Changed to publish a job (after `job` is written): a job counter above
    /// [`WORKER_BITS`], the job's worker count below. A helper reads the count
    /// from the very value that announced the job, so one that notices a job
    /// late cannot pair it with a later job's count.
    generation: AtomicUsize,
    /// The current job; valid while a `run` call waits for its helpers.
    job: UnsafeCell<Option<*const Job<'static>>>,
    /// Helpers of the current job that have not finished.
    pending: AtomicUsize,
    panicked: AtomicBool,
    /// Held by the one `run` in progress.
    busy: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    /// Helpers spawned so far (helper `i` runs worker `i`, from 1).
    spawned: Mutex<usize>,
}

// SAFETY (both): `job` is written only by the `run` call holding `busy`,
// before the generation bump that publishes it, and read by helpers only after
// they see that bump and before they decrement `pending`, which `run` waits
// for; the job itself is `Sync`.
unsafe impl Sync for State {}
unsafe impl Send for State {}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| State {
        generation: AtomicUsize::new(0),
        job: UnsafeCell::new(None),
        pending: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
        busy: AtomicBool::new(false),
        sleepers: AtomicUsize::new(0),
        lock: Mutex::new(()),
        wake: Condvar::new(),
        spawned: Mutex::new(0),
    })
}

/// Runs `job(0)` on this thread and `job(1)` … `job(workers − 1)` on helper
/// threads at the same time (the job's workers may wait for each other), and
/// returns when all are done. Returns `false` without running anything if
/// another `run` is in progress, helpers cannot be started or `workers` is
/// not in `1..2^16`; a panic in any worker is resumed here once all have stopped.
pub(crate) fn run(workers: usize, job: &Job<'_>) -> bool {
    let s = state();
    if workers == 0 || workers > WORKER_MASK || s.busy.swap(true, Ordering::Acquire) {
        return false;
    }
    if !ensure_helpers(s, workers.saturating_sub(1)) {
        s.busy.store(false, Ordering::Release);
        return false;
    }
    // SAFETY: see `State`. The pointer's lifetime is erased; this call does
    // not return (or unwind) before every helper is done with it.
    unsafe {
        let erased: *const Job<'static> = std::mem::transmute::<&Job<'_>, &Job<'static>>(job);
        *s.job.get() = Some(erased);
    }
    s.pending.store(workers - 1, Ordering::Relaxed);
    // Only the holder of `busy` writes the generation.
    let jobs = (s.generation.load(Ordering::Relaxed) >> WORKER_BITS) + 1;
    s.generation.store((jobs << WORKER_BITS) | workers, Ordering::SeqCst);
    if s.sleepers.load(Ordering::SeqCst) > 0 {
        let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
        s.wake.notify_all();
    }
    let own = catch_unwind(AssertUnwindSafe(|| job(0)));
    let mut spins = 0u32;
    while s.pending.load(Ordering::Acquire) != 0 {
        if spins < SPINS_BEFORE_SLEEP {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    // SAFETY: every helper is done with the job.
    unsafe { *s.job.get() = None };
    let helper_panicked = s.panicked.swap(false, Ordering::Relaxed);
    s.busy.store(false, Ordering::Release);
    if let Err(p) = own {
        resume_unwind(p);
    }
    if helper_panicked {
        panic!("a decode worker panicked");
    }
    true
}

/// Spawns helpers until there are `count`; false if the OS refuses a thread.
fn ensure_helpers(s: &'static State, count: usize) -> bool {
    let mut spawned = s.spawned.lock().unwrap_or_else(|e| e.into_inner());
    while *spawned < count {
        let index = *spawned + 1;
        let seen = s.generation.load(Ordering::SeqCst);
        let started = std::thread::Builder::new()
            .name(format!("ferrogpt-decode-{index}"))
            .spawn(move || helper(s, index, seen));
        if started.is_err() {
            return false;
        }
        *spawned += 1;
    }
    true
}

fn helper(s: &'static State, index: usize, mut seen: usize) {
    loop {
        let mut spins = 0u32;
        loop {
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            if spins < SPINS_BEFORE_SLEEP {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            // Register as a sleeper before the last check of the generation,
            // so `run`'s check of `sleepers` after its bump cannot miss us.
            let mut guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.generation.load(Ordering::SeqCst) == seen {
                guard = s.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            spins = 0;
        }
        if index < seen & WORKER_MASK {
            // SAFETY: see `State`; the generation we saw published this job.
            let job = unsafe { (*s.job.get()).map(|p| &*p) };
            if let Some(job) = job {
                if catch_unwind(AssertUnwindSafe(|| job(index))).is_err() {
                    s.panicked.store(true, Ordering::Relaxed);
                }
            }
            s.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_worker_runs_once_per_job_and_together() {
        for workers in [1, 2, 3] {
            for _ in 0..200 {
                let hits = AtomicU64::new(0);
                let arrived = AtomicUsize::new(0);
                let ran = run(workers, &|i| {
                    hits.fetch_add(1 << (8 * i), Ordering::Relaxed);
                    // Workers run at the same time: wait for all to arrive.
                    arrived.fetch_add(1, Ordering::SeqCst);
                    while arrived.load(Ordering::SeqCst) < workers {
                        std::hint::spin_loop();
                    }
                });
                if ran {
                    let want: u64 = (0..workers).map(|i| 1u64 << (8 * i)).sum();
                    assert_eq!(hits.load(Ordering::Relaxed), want);
                }
            }
        }
    }
}
