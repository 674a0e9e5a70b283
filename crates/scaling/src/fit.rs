//! Power-law fits in log space with a Huber loss and multi-start L-BFGS
//! (argmin), as in Hoffmann et al. (Chinchilla, 2022).
//!
//! Compute law: `L(C) = a·C^b + c`, written with `x = C/C₀` and positive
//! parameters through exponents, `log L̂ = LSE(α + b·ln x, γ)`
//! (`a = e^α·C₀^(−b)`, `c = e^γ`), minimising `Σ Huber_δ(log L̂ − log L)`.
//! Data law: `log L̂ = LSE(e, a − α·ln N, b − β·ln D)`.
//! The residual in log space makes every point count by its relative error,
//! and Huber (δ = 1e-3) keeps one noisy rung from dragging the fit.

use crate::ScalingError;
use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use ferrogpt_engine::rng::Rng;
use serde::{Deserialize, Serialize};

/// Huber loss threshold on log-loss residuals.
pub const HUBER_DELTA: f64 = 1e-3;

fn huber(r: f64) -> (f64, f64) {
    if r.abs() <= HUBER_DELTA {
        (0.5 * r * r, r)
    } else {
        (HUBER_DELTA * (r.abs() - 0.5 * HUBER_DELTA), HUBER_DELTA * r.signum())
    }
}

/// `ln(Σ exp(zᵢ))` and the softmax weights (the gradient of LSE).
fn lse(z: &[f64]) -> (f64, Vec<f64>) {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    (m + s.ln(), e.iter().map(|v| v / s).collect())
}

fn check(points: &[(f64, f64)], need: usize) -> Result<(), ScalingError> {
    if points.len() < need {
        return Err(ScalingError::TooFewPoints { need, got: points.len() });
    }
    for (i, &(c, l)) in points.iter().enumerate() {
        for v in [c, l] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ScalingError::BadPoint { index: i, value: v });
            }
        }
    }
    Ok(())
}

/// A fitted `L(C) = a·C^b + c`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComputeLaw {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    /// Huber objective at the optimum.
    pub objective: f64,
}

impl ComputeLaw {
    pub fn predict(&self, compute: f64) -> f64 {
        self.a * compute.powf(self.b) + self.c
    }
}

struct ComputeProblem<'a> {
    /// (ln(C/C₀), ln L)
    pts: &'a [(f64, f64)],
}

impl ComputeProblem<'_> {
    fn eval(&self, p: &[f64]) -> (f64, Vec<f64>) {
        let (mut cost, mut grad) = (0.0, vec![0.0; 3]);
        for &(lx, ll) in self.pts {
            let (pred, w) = lse(&[p[0] + p[1] * lx, p[2]]);
            let (h, dh) = huber(pred - ll);
            cost += h;
            grad[0] += dh * w[0];
            grad[1] += dh * w[0] * lx;
            grad[2] += dh * w[1];
        }
        (cost, grad)
    }
}

impl CostFunction for ComputeProblem<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(p).0)
    }
}

impl Gradient for ComputeProblem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.eval(p).1)
    }
}

/// Runs L-BFGS from each start and keeps the lowest objective.
fn best_of<P>(problem: impl Fn() -> P, starts: Vec<Vec<f64>>) -> Result<(Vec<f64>, f64), ScalingError>
where
    P: CostFunction<Param = Vec<f64>, Output = f64> + Gradient<Param = Vec<f64>, Gradient = Vec<f64>>,
{
    let mut best: Option<(Vec<f64>, f64)> = None;
    let mut last_err = String::from("no starts");
    for start in starts {
        let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
            .with_tolerance_cost(1e-14)
            .and_then(|s| s.with_tolerance_grad(1e-12));
        let solver = match solver {
            Ok(s) => s,
            Err(e) => return Err(ScalingError::Optimiser(e.to_string())),
        };
        match Executor::new(problem(), solver).configure(|s| s.param(start).max_iters(500)).run() {
            Ok(res) => {
                let cost = res.state().get_best_cost();
                if let Some(p) = res.state().get_best_param() {
                    if cost.is_finite() && best.as_ref().is_none_or(|b| cost < b.1) {
                        best = Some((p.clone(), cost));
                    }
                }
            }
            Err(e) => last_err = e.to_string(),
        }
    }
    best.ok_or(ScalingError::Optimiser(last_err))
}

/// Fits `L(C) = a·C^b + c` to `(compute, loss)` points.
pub fn fit_compute_law(points: &[(f64, f64)]) -> Result<ComputeLaw, ScalingError> {
    check(points, 3)?;
    let c0 = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let pts: Vec<(f64, f64)> = points.iter().map(|&(c, l)| ((c / c0).ln(), l.ln())).collect();
    let min_l = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut starts = Vec::new();
    for frac in [0.1, 0.5, 0.9] {
        for b in [-0.05, -0.15, -0.3, -0.6] {
            let c = frac * min_l;
            starts.push(vec![(points[0].1 - c).max(1e-6).ln(), b, c.ln()]);
        }
    }
    let (p, objective) = best_of(|| ComputeProblem { pts: &pts }, starts)?;
    let (alpha, b, gamma) = (p[0], p[1], p[2]);
    Ok(ComputeLaw {
        a: alpha.exp() * c0.powf(-b),
        b,
        c: gamma.exp(),
        objective,
    })
}

/// A 90% interval (and median) for the loss at `target` compute, by refitting
/// on `resamples` bootstrap resamples of the points (seeded, so reproducible).
pub fn bootstrap_interval(points: &[(f64, f64)], target: f64, resamples: usize, seed: u64) -> Result<(f64, f64, f64), ScalingError> {
    check(points, 3)?;
    let mut rng = Rng::new(seed);
    let mut preds = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let sample: Vec<(f64, f64)> = (0..points.len()).map(|_| points[rng.below(points.len() as u64) as usize]).collect();
        // A resample with fewer than three distinct compute values cannot pin three parameters.
        let mut distinct: Vec<f64> = sample.iter().map(|p| p.0).collect();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        if distinct.len() < 3 {
            continue;
        }
        if let Ok(law) = fit_compute_law(&sample) {
            preds.push(law.predict(target));
        }
    }
    if preds.len() < 10 {
        return Err(ScalingError::Optimiser(format!("only {} bootstrap refits succeeded", preds.len())));
    }
    preds.sort_by(f64::total_cmp);
    let q = |f: f64| preds[((preds.len() - 1) as f64 * f).round() as usize];
    Ok((q(0.05), q(0.5), q(0.95)))
}

/// A fitted `L(N, D) = E + A/N^α + B/D^β`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataLaw {
    pub e: f64,
    pub a: f64,
    pub alpha: f64,
    pub b: f64,
    pub beta: f64,
    pub objective: f64,
}

impl DataLaw {
    pub fn predict(&self, params: f64, tokens: f64) -> f64 {
        self.e + self.a / params.powf(self.alpha) + self.b / tokens.powf(self.beta)
    }
}

struct DataProblem<'a> {
    /// (ln N, ln D, ln L)
    pts: &'a [(f64, f64, f64)],
}

impl DataProblem<'_> {
    /// p = [e, a, α, b, β] with E = eᵉ, A = eᵃ, B = eᵇ.
    fn eval(&self, p: &[f64]) -> (f64, Vec<f64>) {
        let (mut cost, mut g) = (0.0, vec![0.0; 5]);
        for &(ln_n, ln_d, ll) in self.pts {
            let (pred, w) = lse(&[p[0], p[1] - p[2] * ln_n, p[3] - p[4] * ln_d]);
            let (h, dh) = huber(pred - ll);
            cost += h;
            g[0] += dh * w[0];
            g[1] += dh * w[1];
            g[2] -= dh * w[1] * ln_n;
            g[3] += dh * w[2];
            g[4] -= dh * w[2] * ln_d;
        }
        (cost, g)
    }
}

impl CostFunction for DataProblem<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(p).0)
    }
}

impl Gradient for DataProblem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.eval(p).1)
    }
}

/// Fits Chinchilla's `L(N, D)` to `(params, tokens, loss)` points, from the
/// grid of starts Hoffmann et al. used (scaled down).
pub fn fit_data_law(points: &[(f64, f64, f64)]) -> Result<DataLaw, ScalingError> {
    let flat: Vec<(f64, f64)> = points.iter().flat_map(|&(n, d, l)| [(n, l), (d, l)]).collect();
    check(&flat, 10)?;
    let pts: Vec<(f64, f64, f64)> = points.iter().map(|&(n, d, l)| (n.ln(), d.ln(), l.ln())).collect();
    let mut starts = Vec::new();
    for e in [-1.0, 0.0, 0.5] {
        for a in [0.0, 5.0, 10.0] {
            for alpha in [0.1, 0.4] {
                for b in [0.0, 5.0, 10.0] {
                    for beta in [0.1, 0.4] {
                        starts.push(vec![e, a, alpha, b, beta]);
                    }
                }
            }
        }
    }
    let (p, objective) = best_of(|| DataProblem { pts: &pts }, starts)?;
    Ok(DataLaw {
        e: p[0].exp(),
        a: p[1].exp(),
        alpha: p[2],
        b: p[3].exp(),
        beta: p[4],
        objective,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_compute_law_from_noisy_points() {
        let truth = ComputeLaw {
            a: 40.0,
            b: -0.12,
            c: 1.6,
            objective: 0.0,
        };
        let mut rng = Rng::new(3);
        let points: Vec<(f64, f64)> = (0..12)
            .map(|i| {
                let c = 1e9 * 10f64.powf(i as f64 * 0.4);
                (c, truth.predict(c) * (1.0 + 0.002 * rng.normal()))
            })
            .collect();
        let law = fit_compute_law(&points).unwrap();
        // Extrapolate 100x beyond the largest point.
        let target = points.last().unwrap().0 * 100.0;
        let rel = (law.predict(target) - truth.predict(target)).abs() / truth.predict(target);
        assert!(rel < 0.01, "relative error {rel} (fit {law:?})");
        assert!((law.b - truth.b).abs() < 0.05 && (law.c - truth.c).abs() < 0.2, "{law:?}");
        let (lo, mid, hi) = bootstrap_interval(&points, target, 200, 1).unwrap();
        assert!(lo <= mid && mid <= hi);
        assert!(
            lo < truth.predict(target) * 1.01 && hi > truth.predict(target) * 0.99,
            "[{lo}, {hi}] vs {}",
            truth.predict(target)
        );
    }

    #[test]
    fn recovers_a_known_chinchilla_law() {
        let truth = DataLaw {
            e: 1.7,
            a: 400.0,
            alpha: 0.34,
            b: 410.0,
            beta: 0.28,
            objective: 0.0,
        };
        let mut rng = Rng::new(4);
        let mut points = Vec::new();
        for i in 0..6 {
            for j in 0..5 {
                let (n, d) = (1e4 * 4f64.powi(i), 1e5 * 3f64.powi(j + i));
                points.push((n, d, truth.predict(n, d) * (1.0 + 0.001 * rng.normal())));
            }
        }
        let law = fit_data_law(&points).unwrap();
        let (n, d) = (1e8, 1e10);
        let rel = (law.predict(n, d) - truth.predict(n, d)).abs() / truth.predict(n, d);
        assert!(rel < 0.02, "relative error {rel} ({law:?})");
    }

    #[test]
    fn bad_points_are_errors() {
        assert!(matches!(fit_compute_law(&[(1.0, 2.0)]), Err(ScalingError::TooFewPoints { .. })));
        let e = fit_compute_law(&[(1.0, 2.0), (2.0, f64::NAN), (3.0, 1.0)]).unwrap_err().to_string();
        assert!(e.contains("fit point 1"), "{e}");
    }
}
