//! Aggregate metrics: upstream's accuracy and (misnamed, half-subsample) bootstrap std,
//! plus a real seeded bootstrap 95% interval, expected calibration error and pass@k.

use crate::pyrandom::PyRandom;

/// Mean of the values; NaN with none (upstream divides by zero the same way).
pub fn mean(vals: &[f64]) -> f64 {
    if vals.is_empty() {
        f64::NAN
    } else {
        vals.iter().sum::<f64>() / vals.len() as f64
    }
}

/// Population standard deviation (`np.std`).
fn std(vals: &[f64]) -> f64 {
    let m = mean(vals);
    (vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64).sqrt()
}

/// Upstream's `get_bootstrap_accuracy_std`: the std of 1000 means of half-size subsamples
/// drawn without replacement. Upstream draws from the unseeded global RNG; here the draws
/// come from a Mersenne Twister seeded with `seed`, so a run is reproducible.
pub fn bootstrap_std(vals: &[f64], seed: u64) -> f64 {
    if vals.is_empty() {
        return f64::NAN;
    }
    let half = vals.len() / 2;
    if half == 0 {
        return f64::NAN;
    }
    // Every subsample of constant data has the same mean: skip the 1000 draws.
    if vals.iter().all(|v| *v == vals[0]) {
        return 0.0;
    }
    let mut rng = PyRandom::new(u128::from(seed));
    let mut pool: Vec<f64> = vals.to_vec();
    let means: Vec<f64> = (0..1000)
        .map(|_| {
            // A partial Fisher-Yates shuffle draws `half` items without replacement.
            for i in 0..half {
                let j = i + rng.randbelow((pool.len() - i) as u64) as usize;
                pool.swap(i, j);
            }
            mean(&pool[..half])
        })
        .collect();
    std(&means)
}

/// Percentile bootstrap 95% interval of the mean: 1000 resamples with replacement.
pub fn bootstrap_ci95(vals: &[f64], seed: u64) -> Option<[f64; 2]> {
    if vals.is_empty() {
        return None;
    }
    if vals.iter().all(|v| *v == vals[0]) {
        return Some([vals[0], vals[0]]);
    }
    let mut rng = PyRandom::new(u128::from(seed) ^ 0x5eed_c195);
    let n = vals.len();
    let mut means: Vec<f64> = (0..1000)
        .map(|_| {
            let s: f64 = (0..n).map(|_| vals[rng.randbelow(n as u64) as usize]).sum();
            s / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    Some([means[24], means[974]])
}

/// The Wilson score 95% interval of a proportion, `successes` of `n`; `None` when `n` is 0.
/// Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or `n`.
pub fn wilson_ci95(successes: usize, n: usize) -> Option<[f64; 2]> {
    if n == 0 {
        return None;
    }
    const Z: f64 = 1.959_963_984_540_054; // the 97.5th percentile of the standard normal
    let (n, p) = (n as f64, successes.min(n) as f64 / n as f64);
    let z2 = Z * Z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some([(centre - half).max(0.0), (centre + half).min(1.0)])
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibrationBin {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    pub mean_confidence: f64,
    pub accuracy: f64,
}

/// Expected calibration error over `bins` equal-width confidence bins, and the bins.
pub fn calibration(confidence: &[f64], correct: &[bool], bins: usize) -> (f64, Vec<CalibrationBin>) {
    let bins = bins.max(1);
    let mut sums = vec![(0usize, 0.0f64, 0usize); bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c * bins as f64) as usize).min(bins - 1);
        sums[b].0 += 1;
        sums[b].1 += c;
        sums[b].2 += usize::from(ok);
    }
    let total = confidence.len().max(1) as f64;
    let mut ece = 0.0;
    let out = sums
        .iter()
        .enumerate()
        .map(|(i, &(count, conf_sum, hits))| {
            let (mc, acc) = if count == 0 {
                (0.0, 0.0)
            } else {
                (conf_sum / count as f64, hits as f64 / count as f64)
            };
            ece += count as f64 / total * (mc - acc).abs();
            CalibrationBin {
                lo: i as f64 / bins as f64,
                hi: (i + 1) as f64 / bins as f64,
                count,
                mean_confidence: mc,
                accuracy: acc,
            }
        })
        .collect();
    (ece, out)
}

/// The unbiased pass@k estimator (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n < k || k == 0 {
        return f64::NAN;
    }
    if n - c < k {
        return 1.0;
    }
    let mut prod = 1.0;
    for i in (n - c + 1)..=n {
        prod *= 1.0 - k as f64 / i as f64;
    }
    1.0 - prod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_is_seeded_and_sane() {
        let vals: Vec<f64> = (0..100).map(|i| f64::from(u8::from(i % 3 == 0))).collect();
        assert_eq!(bootstrap_std(&vals, 1), bootstrap_std(&vals, 1));
        let s = bootstrap_std(&vals, 1);
        // Half-subsample std of a Bernoulli(0.34) mean over 50 of 100: about 0.047.
        assert!((0.03..0.07).contains(&s), "{s}");
        assert_eq!(bootstrap_std(&[0.0; 10], 3), 0.0);
        let [lo, hi] = bootstrap_ci95(&vals, 7).unwrap();
        assert!(lo < 0.34 && 0.34 < hi && hi - lo < 0.25, "{lo} {hi}");
    }

    #[test]
    fn ece_of_perfect_and_overconfident() {
        let (e, bins) = calibration(&[1.0, 1.0], &[true, true], 10);
        assert_eq!(e, 0.0);
        assert_eq!(bins[9].count, 2);
        let (e, _) = calibration(&[0.9, 0.9], &[false, true], 10);
        assert!((e - 0.4).abs() < 1e-12);
    }

    #[test]
    fn pass_at_k_matches_closed_forms() {
        assert_eq!(pass_at_k(5, 0, 1), 0.0);
        assert!((pass_at_k(5, 1, 1) - 0.2).abs() < 1e-12);
        assert_eq!(pass_at_k(5, 1, 5), 1.0);
        assert!((pass_at_k(10, 3, 2) - (1.0 - 21.0 / 45.0)).abs() < 1e-12);
    }
}
