//! The machine's measured f32 matmul ceiling, the denominator of MFU.
//!
//! MFU here is "% of measured sgemm peak": model FLOPs per second divided by
//! what the engine's own gemm path reaches on a large square product with the
//! same thread pool. That is a ceiling this machine demonstrably attains, unlike
//! a datasheet figure that assumes every core at turbo with both FMA ports busy.

use std::sync::OnceLock;

use ferrogpt_engine::bench::measure_sgemm_gflops;

/// Side of the square product used to measure the peak.
const N: usize = 1024;
/// Timed products (the best counts): enough that a moment of contention on a
/// shared machine does not lower the ceiling and inflate MFU.
const REPEATS: usize = 12;

/// Best FLOP/s of a few `N×N×N` sgemms through the engine (measured once per process).
pub fn sgemm_peak_flops() -> f64 {
    static PEAK: OnceLock<f64> = OnceLock::new();
    *PEAK.get_or_init(|| measure_sgemm_gflops(N, REPEATS) * 1e9)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_is_positive_and_cached() {
        let a = super::sgemm_peak_flops();
        assert!(a.is_finite() && a > 0.0);
        assert_eq!(a, super::sgemm_peak_flops());
    }
}
