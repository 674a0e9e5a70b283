//! The machine's measured f32 matmul ceiling, the denominator of MFU.
//!
//! MFU here is "% of measured sgemm peak": model FLOPs per second divided by
//! what the engine's own gemm path reaches on a large square product with the
//! same thread pool. That is a ceiling this machine demonstrably attains, unlike
//! a datasheet figure that assumes every core at turbo with both FMA ports busy.

use std::sync::OnceLock;
use std::time::Instant;

use ferrogpt_engine::matmul::linear_forward;

/// Side of the square product used to measure the peak.
const N: usize = 1024;
const REPEATS: usize = 4;

/// Best FLOP/s of a few `N×N×N` sgemms through the engine (measured once per process).
pub fn sgemm_peak_flops() -> f64 {
    static PEAK: OnceLock<f64> = OnceLock::new();
    *PEAK.get_or_init(measure)
}

fn measure() -> f64 {
    let x: Vec<f32> = (0..N * N).map(|i| ((i % 97) as f32 - 48.0) * 1e-2).collect();
    let w: Vec<f32> = (0..N * N).map(|i| ((i % 89) as f32 - 44.0) * 1e-2).collect();
    let mut y = vec![0.0f32; N * N];
    // The first product pays for page faults and thread wake-up; it is not timed.
    linear_forward(&mut y, &x, &w, N, N, N, false);
    let flops = 2.0 * (N * N * N) as f64;
    let mut best = f64::MAX;
    for _ in 0..REPEATS {
        let t = Instant::now();
        linear_forward(&mut y, &x, &w, N, N, N, false);
        best = best.min(t.elapsed().as_secs_f64());
    }
    flops / best.max(1e-9)
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
