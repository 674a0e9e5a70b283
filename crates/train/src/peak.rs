//! The denominator of MFU: this machine's f32 matmul ceiling.
//!
//! Two figures, and MFU uses the larger:
//! - the **measured sgemm peak**: the best FLOP/s the engine's own gemm path
//!   reaches on a `1024³` product with the process's thread pool, over short
//!   bursts spread through the process's training (one when a run starts, then
//!   whenever [`REMEASURE_EVERY`] has passed, and one at the end of a run when
//!   the process has had only one). One burst taken while another process is
//!   busy reads low: a speedrun once reported "MFU 94.7% of the measured sgemm
//!   peak (80.2 GFLOP/s)" on a host whose ceiling is ~170 GFLOP/s. The best is
//!   kept for the whole process, so the runs of a scaling ladder share one
//!   figure that only a faster burst can raise, and dozens of short runs cost
//!   no more bursts than one long run.
//! - the **FMA peak** at the CPU's reported clock: cores × clock × FLOPs per
//!   cycle of its widest FMA (AVX2: 2 units × 8 lanes × 2 = 32 f32 FLOPs per
//!   cycle; AVX-512: 64), read from `/proc/cpuinfo`. It involves no timing, so
//!   no noisy moment can lower it; turbo clocks can let gemm beat it, and then
//!   the measured figure is the larger. Unknown CPUs (no `/proc/cpuinfo`, no
//!   FMA) only have the measured figure.
//!
//! The report states both and which one MFU used ([`Peak::describe`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrogpt_engine::bench::measure_sgemm_gflops;

/// Side of the square product used to measure the peak.
const N: usize = 1024;
/// Timed products per burst (the best counts).
const REPEATS: usize = 5;
/// Training time between two bursts.
pub const REMEASURE_EVERY: Duration = Duration::from_secs(30);
/// FMA units per core assumed by the FMA peak (two on every x86 core since Haswell and Zen 2;
/// a CPU with one makes the FMA peak an overestimate, which only lowers MFU).
const FMA_UNITS: f64 = 2.0;

/// The bursts of this process so far.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bursts {
    /// Best FLOP/s.
    best: f64,
    count: usize,
    last: Option<Instant>,
}

impl Bursts {
    const NONE: Bursts = Bursts {
        best: 0.0,
        count: 0,
        last: None,
    };

    fn due(&self, now: Instant) -> bool {
        self.last.is_none_or(|t| now.duration_since(t) >= REMEASURE_EVERY)
    }

    fn record(&mut self, flops: f64, at: Instant) {
        if flops.is_finite() {
            self.best = self.best.max(flops);
        }
        self.count += 1;
        self.last = Some(at);
    }
}

static BURSTS: Mutex<Bursts> = Mutex::new(Bursts::NONE);

/// Runs a burst when `due` says so given the process's bursts, and returns them. The lock is
/// held through the burst, so two runs training at once never time their gemms together.
fn burst_when(due: impl FnOnce(&Bursts) -> bool) -> Bursts {
    // A poisoned lock only means a burst panicked; the figures recorded before are still good.
    let mut bursts = BURSTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if due(&bursts) {
        let flops = measure_sgemm_gflops(N, REPEATS) * 1e9;
        bursts.record(flops, Instant::now());
    }
    *bursts
}

/// The MFU denominator of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Peak {
    /// Best FLOP/s over the process's bursts so far.
    pub sgemm_flops: f64,
    /// How many bursts that best was taken from.
    pub bursts: usize,
    /// The CPU's FMA peak at its reported clock, when it can be known.
    pub fma: Option<FmaPeak>,
}

/// Cores × clock × FLOPs per cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct FmaPeak {
    /// Physical cores the thread pool can use.
    pub cores: usize,
    pub ghz: f64,
    /// `"AVX2+FMA"` or `"AVX-512"`.
    pub isa: &'static str,
    /// f32 FLOPs per cycle per core.
    pub flops_per_cycle: f64,
}

impl FmaPeak {
    pub fn flops(&self) -> f64 {
        self.cores as f64 * self.ghz * 1e9 * self.flops_per_cycle
    }
}

/// Which figure MFU is a fraction of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeakSource {
    Sgemm,
    Fma,
}

impl Peak {
    /// At the start of a run: a burst unless one ran in the last [`REMEASURE_EVERY`], and the
    /// FMA peak for `threads` worker threads.
    pub fn measure(threads: usize) -> Peak {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let mut peak = Peak {
            sgemm_flops: 0.0,
            bursts: 0,
            fma: fma_peak(&cpuinfo, threads),
        };
        peak.take(burst_when(|b| b.due(Instant::now())));
        peak
    }

    /// During a run: a burst when [`REMEASURE_EVERY`] has passed since the process's last one.
    pub fn burst_if_due(&mut self) {
        self.take(burst_when(|b| b.due(Instant::now())));
    }

    /// At the end of a run: a burst when one is due, or when the process has had only one, so
    /// that even a single short run's figure is the best of two moments.
    pub fn finish_run(&mut self) {
        self.take(burst_when(|b| b.count < 2 || b.due(Instant::now())));
    }

    fn take(&mut self, bursts: Bursts) {
        self.sgemm_flops = bursts.best;
        self.bursts = bursts.count;
    }

    /// The larger of the two figures: what MFU divides by.
    pub fn flops(&self) -> f64 {
        match self.source() {
            PeakSource::Sgemm => self.sgemm_flops,
            PeakSource::Fma => self.fma.as_ref().map_or(self.sgemm_flops, FmaPeak::flops),
        }
    }

    pub fn source(&self) -> PeakSource {
        match &self.fma {
            Some(fma) if fma.flops() > self.sgemm_flops => PeakSource::Fma,
            _ => PeakSource::Sgemm,
        }
    }

    /// Both figures, and which one MFU uses, in one sentence for reports.
    pub fn describe(&self) -> String {
        let sgemm = format!(
            "measured sgemm peak {:.1} GFLOP/s (best of {} bursts spread over the process)",
            self.sgemm_flops / 1e9,
            self.bursts
        );
        let Some(fma) = &self.fma else {
            return format!("of the {sgemm}; the CPU's FMA peak is unknown here");
        };
        let fma_text = format!(
            "FMA peak {:.1} GFLOP/s ({} cores x {:.2} GHz x {} FLOP/cycle, {})",
            fma.flops() / 1e9,
            fma.cores,
            fma.ghz,
            fma.flops_per_cycle,
            fma.isa
        );
        match self.source() {
            PeakSource::Sgemm => format!("of the {sgemm}, above the {fma_text} at the reported clock"),
            PeakSource::Fma => format!("of the {fma_text}, above the {sgemm}"),
        }
    }
}

/// The FMA peak from `/proc/cpuinfo`'s text: physical cores (distinct `physical id`/`core id`
/// pairs, else processors) capped at `threads`, the highest `cpu MHz`, and the widest FMA the
/// `flags` list.
fn fma_peak(cpuinfo: &str, threads: usize) -> Option<FmaPeak> {
    let mut cores = std::collections::BTreeSet::new();
    let (mut processors, mut mhz, mut flags) = (0usize, 0.0f64, "");
    let (mut physical, mut core) = (None, None);
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => {
                processors += 1;
                (physical, core) = (None, None);
            }
            "physical id" => physical = Some(value.to_string()),
            "core id" => core = Some(value.to_string()),
            "cpu MHz" => mhz = mhz.max(value.parse().unwrap_or(0.0)),
            "flags" => flags = value,
            _ => {}
        }
        if let (Some(p), Some(c)) = (&physical, &core) {
            cores.insert((p.clone(), c.clone()));
        }
    }
    let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
    let (isa, lanes) = if has("avx512f") {
        ("AVX-512", 16.0)
    } else if has("avx2") && has("fma") {
        ("AVX2+FMA", 8.0)
    } else {
        return None;
    };
    let physical_cores = if cores.is_empty() { processors } else { cores.len() };
    let cores = physical_cores.min(threads.max(1));
    (cores > 0 && mhz > 0.0).then_some(FmaPeak {
        cores,
        ghz: mhz / 1000.0,
        isa,
        flops_per_cycle: FMA_UNITS * lanes * 2.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPYC_2_CORES: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2445.404\n\
        physical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n\n\
        processor\t: 1\ncpu MHz\t\t: 2445.404\nphysical id\t: 0\ncore id\t\t: 1\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n";

    fn peak(sgemm_gflops: f64, fma: Option<FmaPeak>) -> Peak {
        Peak {
            sgemm_flops: sgemm_gflops * 1e9,
            bursts: 1,
            fma,
        }
    }

    #[test]
    fn fma_peak_from_cpuinfo() {
        let fma = fma_peak(EPYC_2_CORES, 8).unwrap();
        assert_eq!((fma.cores, fma.isa, fma.flops_per_cycle), (2, "AVX2+FMA", 32.0));
        assert!((fma.flops() / 1e9 - 156.5).abs() < 0.1, "{}", fma.flops());
        // Fewer threads than cores: only those cores count.
        assert_eq!(fma_peak(EPYC_2_CORES, 1).unwrap().cores, 1);
        // Hyperthreads share a core's FMA units.
        let smt = EPYC_2_CORES.replace("core id\t\t: 1", "core id\t\t: 0");
        assert_eq!(fma_peak(&smt, 8).unwrap().cores, 1);
        let avx512 = EPYC_2_CORES.replace("avx2", "avx2 avx512f");
        assert_eq!(fma_peak(&avx512, 8).unwrap().flops_per_cycle, 64.0);
        // No FMA, or no cpuinfo at all: unknown.
        assert_eq!(fma_peak(&EPYC_2_CORES.replace(" fma", ""), 8), None);
        assert_eq!(fma_peak("", 8), None);
    }

    #[test]
    fn a_slow_burst_never_lowers_the_peak_and_bursts_wait_their_turn() {
        let t0 = Instant::now();
        let mut b = Bursts::NONE;
        assert!(b.due(t0));
        b.record(170.0e9, t0);
        b.record(80.0e9, t0);
        b.record(f64::NAN, t0);
        assert_eq!((b.best, b.count), (170.0e9, 3));
        assert!(!b.due(t0 + REMEASURE_EVERY / 2));
        assert!(b.due(t0 + REMEASURE_EVERY));
    }

    #[test]
    fn a_contended_measurement_cannot_inflate_mfu_below_the_fma_peak() {
        // The host: one burst at 80 GFLOP/s while another process ran.
        let p = peak(80.2, fma_peak(EPYC_2_CORES, 2));
        assert_eq!(p.source(), PeakSource::Fma);
        assert!((p.flops() / 1e9 - 156.5).abs() < 0.1);
        let d = p.describe();
        assert!(
            d.starts_with("of the FMA peak 156.5 GFLOP/s (2 cores x 2.45 GHz x 32 FLOP/cycle, AVX2+FMA)"),
            "{d}"
        );
        assert!(d.contains("measured sgemm peak 80.2 GFLOP/s (best of 1 bursts spread"), "{d}");
        // With turbo, gemm beats the FMA peak at the reported clock: the measured figure is used.
        let p = peak(171.0, fma_peak(EPYC_2_CORES, 2));
        assert_eq!(p.source(), PeakSource::Sgemm);
        assert_eq!(p.flops(), 171.0e9);
        assert!(p.describe().starts_with("of the measured sgemm peak 171.0 GFLOP/s"));
        let p = peak(50.0, None);
        assert_eq!(p.flops(), 50.0e9);
        assert!(p.describe().ends_with("the CPU's FMA peak is unknown here"));
    }

    #[test]
    fn every_run_of_a_process_gets_at_least_two_bursts_and_shares_the_best() {
        let mut first = Peak::measure(rayon::current_num_threads());
        assert!(first.sgemm_flops.is_finite() && first.sgemm_flops > 0.0);
        assert!(first.bursts >= 1);
        first.finish_run();
        assert!(first.bursts >= 2, "{first:?}");
        // A second run right after reuses the process's bursts instead of timing its own.
        let mut second = Peak::measure(rayon::current_num_threads());
        second.finish_run();
        assert!(second.bursts >= first.bursts && second.sgemm_flops >= first.sgemm_flops);
        assert!(second.flops() >= second.sgemm_flops);
    }
}
