//! Power-law fits in log space with a Huber loss and multi-start L-BFGS
//! (argmin), as in Hoffmann et al. (Chinchilla, 2022).
//!
//! Compute law: `L(C) = a·C^b + c`, written with `x = C/C₀` and positive
//! parameters through exponents, `log L̂ = LSE(α + b·ln x, γ)`
//! (`a = e^α·C₀^(−b)`, `c = e^γ`), minimising `Σ Huber_δ(log L̂ − log L)`.
//! The pure power law `L(C) = a·C^b` is the same with `c = 0`: `log L̂ = α + b·ln x`.
//! Data law: `log L̂ = LSE(e, a − α·ln N, b − β·ln D)`.
//! The residual in log space makes every point count by its relative error,
//! and Huber (δ = 1e-3) keeps one noisy rung from dragging the fit.
//!
//! Which compute law to extrapolate with is decided by forward-chaining
//! cross-validation ([`select_compute_law`]): the offset `c` cannot be pinned
//! down by a narrow band of small runs, and a free `c` then soaks up noise and
//! curvature and flattens the extrapolation. Each form is fitted on the smaller
//! runs only and scored on how well it predicts the larger held-out ones — the
//! same task as the real prediction, at a smaller stretch.

use crate::ScalingError;
use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use ferrogpt_rng::Xoshiro256StarStar;
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

/// The shape of a compute law.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LawForm {
    /// `L(C) = a·C^b + c` with a free floor `c ≥ 0`.
    PowerPlusOffset,
    /// `L(C) = a·C^b` (`c = 0`).
    PurePower,
}

impl LawForm {
    /// Both forms, the issue's `a·C^b + c` first.
    pub const ALL: [LawForm; 2] = [LawForm::PowerPlusOffset, LawForm::PurePower];

    /// Free parameters.
    pub fn parameters(self) -> usize {
        match self {
            LawForm::PowerPlusOffset => 3,
            LawForm::PurePower => 2,
        }
    }

    /// The formula, for reports.
    pub fn formula(self) -> &'static str {
        match self {
            LawForm::PowerPlusOffset => "L = a·C^b + c",
            LawForm::PurePower => "L = a·C^b",
        }
    }
}

/// A fitted `L(C) = a·C^b + c` (`c = 0` for the pure power law).
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

    /// `L(C) = a·C^b + c` with the numbers, without the `+ c` of a pure power law.
    pub fn formula(&self) -> String {
        if self.c == 0.0 {
            format!("L(C) = {:.4}·C^{:.5}", self.a, self.b)
        } else {
            format!("L(C) = {:.4}·C^{:.5} + {:.4}", self.a, self.b, self.c)
        }
    }
}

struct ComputeProblem<'a> {
    /// (ln(C/C₀), ln L)
    pts: &'a [(f64, f64)],
    form: LawForm,
}

impl ComputeProblem<'_> {
    /// p = [α, b, γ] for the offset form, [α, b] for the pure power law.
    fn eval(&self, p: &[f64]) -> (f64, Vec<f64>) {
        let (mut cost, mut grad) = (0.0, vec![0.0; self.form.parameters()]);
        for &(lx, ll) in self.pts {
            match self.form {
                LawForm::PowerPlusOffset => {
                    let (pred, w) = lse(&[p[0] + p[1] * lx, p[2]]);
                    let (h, dh) = huber(pred - ll);
                    cost += h;
                    grad[0] += dh * w[0];
                    grad[1] += dh * w[0] * lx;
                    grad[2] += dh * w[1];
                }
                LawForm::PurePower => {
                    let (h, dh) = huber(p[0] + p[1] * lx - ll);
                    cost += h;
                    grad[0] += dh;
                    grad[1] += dh * lx;
                }
            }
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
    fit_compute_form(points, LawForm::PowerPlusOffset)
}

/// Fits a compute law of the given form to `(compute, loss)` points. The
/// offset form's fit includes its boundary `c = 0` (the pure power law, taken
/// when it fits at least as well), so it never fits worse than the pure law.
pub fn fit_compute_form(points: &[(f64, f64)], form: LawForm) -> Result<ComputeLaw, ScalingError> {
    check(points, form.parameters())?;
    let c0 = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let pts: Vec<(f64, f64)> = points.iter().map(|&(c, l)| ((c / c0).ln(), l.ln())).collect();
    let min_l = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut starts = Vec::new();
    for b in [-0.05, -0.15, -0.3, -0.6] {
        match form {
            LawForm::PowerPlusOffset => {
                for frac in [0.1, 0.5, 0.9] {
                    let c = frac * min_l;
                    starts.push(vec![(points[0].1 - c).max(1e-6).ln(), b, c.ln()]);
                }
            }
            LawForm::PurePower => starts.push(vec![points[0].1.ln(), b]),
        }
    }
    let interior = best_of(|| ComputeProblem { pts: &pts, form }, starts);
    if form == LawForm::PowerPlusOffset {
        // When the points steepen in log-log, the best offset is c → 0 (γ → −∞),
        // which L-BFGS can only chase, or fail on; that boundary is the pure power law.
        let boundary = fit_compute_form(points, LawForm::PurePower);
        match (&interior, boundary) {
            (Ok((_, obj)), Ok(pure)) if pure.objective <= *obj => return Ok(pure),
            (Err(_), Ok(pure)) => return Ok(pure),
            _ => {}
        }
    }
    let (p, objective) = interior?;
    let (alpha, b) = (p[0], p[1]);
    Ok(ComputeLaw {
        a: alpha.exp() * c0.powf(-b),
        b,
        c: match form {
            LawForm::PowerPlusOffset => p[2].exp(),
            LawForm::PurePower => 0.0,
        },
        objective,
    })
}

fn distinct_computes(points: &[(f64, f64)]) -> Vec<f64> {
    let mut d: Vec<f64> = points.iter().map(|p| p.0).collect();
    d.sort_by(f64::total_cmp);
    d.dedup();
    d
}

/// A 90% interval (and median) for the loss at `target` compute, by refitting
/// `L = a·C^b + c` on `resamples` bootstrap resamples of the points (seeded, so reproducible).
pub fn bootstrap_interval(points: &[(f64, f64)], target: f64, resamples: usize, seed: u64) -> Result<(f64, f64, f64), ScalingError> {
    bootstrap_interval_form(points, LawForm::PowerPlusOffset, target, resamples, seed)
}

/// [`bootstrap_interval`] for a law of the given form.
pub fn bootstrap_interval_form(
    points: &[(f64, f64)],
    form: LawForm,
    target: f64,
    resamples: usize,
    seed: u64,
) -> Result<(f64, f64, f64), ScalingError> {
    check(points, form.parameters())?;
    let mut rng = Xoshiro256StarStar::new(seed);
    let mut preds = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let sample: Vec<(f64, f64)> = (0..points.len()).map(|_| points[rng.below(points.len() as u64) as usize]).collect();
        // A resample with fewer distinct compute values than parameters cannot pin them.
        if distinct_computes(&sample).len() < form.parameters() {
            continue;
        }
        if let Ok(law) = fit_compute_form(&sample, form) {
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

/// At most this many forward-chaining folds: the largest distinct compute
/// values are held out in turn.
pub const CV_MAX_FOLDS: usize = 3;
/// A fold's fit needs this many distinct compute values, so that both forms
/// (the offset one has three parameters) are fitted on the same folds.
pub const CV_MIN_TRAIN_COMPUTES: usize = 3;
/// The offset form must beat the pure power law's score by a margin to be
/// chosen: the extra parameter has to earn its place, and near-ties go to the
/// simpler law. The margin is the largest of this fraction of the pure law's
/// score, [`CV_TIE_ABS`], and the scatter of the points about the offset fit
/// (its RMS log residual): over a narrow band, held-out errors that differ by
/// less than the points' own noise say nothing about which law extrapolates.
pub const CV_TIE_REL: f64 = 0.1;
/// Absolute part of the tie margin, in mean |log(pred/actual)| (0.01%).
pub const CV_TIE_ABS: f64 = 1e-4;

/// One forward-chaining fold: fit on every point with compute below
/// `held_out_from`, predict the mean loss at each distinct compute from it up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CvFold {
    /// The smallest held-out compute (the fold's k-th largest distinct compute).
    pub held_out_from: f64,
    pub fit_points: usize,
    /// (compute, predicted loss, actual mean loss) at each held-out compute;
    /// empty when the fit failed.
    pub predictions: Vec<(f64, f64, f64)>,
    /// Mean |ln(predicted/actual)| over the held-out computes.
    pub error: Option<f64>,
}

/// A candidate law: fitted on every point, and scored by cross-validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub form: LawForm,
    /// The fit on every point; `None` with `fit_error` when it failed.
    pub law: Option<ComputeLaw>,
    pub fit_error: Option<String>,
    /// RMS of ln(fit/actual) over every point, for the fit on every point.
    #[serde(default)]
    pub residual_rms: Option<f64>,
    pub folds: Vec<CvFold>,
    /// Mean fold error; `None` when there was no fold, or a fold's fit failed.
    pub cv_score: Option<f64>,
}

/// Both candidate laws and the one chosen to extrapolate with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LawSelection {
    pub candidates: Vec<Candidate>,
    pub chosen: LawForm,
    pub reason: String,
}

impl LawSelection {
    /// The chosen form's fit on every point.
    pub fn chosen_law(&self) -> Result<ComputeLaw, ScalingError> {
        self.candidate(self.chosen)
            .and_then(|c| c.law)
            .ok_or_else(|| ScalingError::Optimiser(format!("the chosen form `{}` has no fit", self.chosen.formula())))
    }

    pub fn candidate(&self, form: LawForm) -> Option<&Candidate> {
        self.candidates.iter().find(|c| c.form == form)
    }
}

/// Forward-chaining folds for one form (see [`CvFold`]).
fn cross_validate(points: &[(f64, f64)], form: LawForm) -> Vec<CvFold> {
    let distinct = distinct_computes(points);
    let folds = distinct.len().saturating_sub(CV_MIN_TRAIN_COMPUTES).min(CV_MAX_FOLDS);
    (1..=folds)
        .map(|k| {
            let from = distinct[distinct.len() - k];
            let train: Vec<(f64, f64)> = points.iter().filter(|p| p.0 < from).cloned().collect();
            let predictions: Vec<(f64, f64, f64)> = match fit_compute_form(&train, form) {
                Ok(law) => distinct[distinct.len() - k..]
                    .iter()
                    .map(|&c| {
                        let held: Vec<f64> = points.iter().filter(|p| p.0 == c).map(|p| p.1).collect();
                        (c, law.predict(c), held.iter().sum::<f64>() / held.len() as f64)
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            let error = (!predictions.is_empty())
                .then(|| predictions.iter().map(|&(_, p, a)| (p / a).ln().abs()).sum::<f64>() / predictions.len() as f64)
                .filter(|e| e.is_finite());
            CvFold {
                held_out_from: from,
                fit_points: train.len(),
                predictions,
                error,
            }
        })
        .collect()
}

/// Fits both compute-law forms and chooses the one that extrapolated better
/// under forward-chaining cross-validation (the pure power law on near-ties,
/// or when there are too few distinct compute values to cross-validate).
pub fn select_compute_law(points: &[(f64, f64)]) -> Result<LawSelection, ScalingError> {
    check(points, LawForm::PowerPlusOffset.parameters())?;
    let candidates: Vec<Candidate> = LawForm::ALL
        .iter()
        .map(|&form| {
            let (law, fit_error) = match fit_compute_form(points, form) {
                Ok(l) => (Some(l), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let residual_rms =
                law.map(|l| (points.iter().map(|&(c, y)| (l.predict(c) / y).ln().powi(2)).sum::<f64>() / points.len() as f64).sqrt());
            let folds = cross_validate(points, form);
            let cv_score = (!folds.is_empty() && folds.iter().all(|f| f.error.is_some()))
                .then(|| folds.iter().filter_map(|f| f.error).sum::<f64>() / folds.len() as f64);
            Candidate {
                form,
                law,
                fit_error,
                residual_rms,
                folds,
                cv_score,
            }
        })
        .collect();
    let score = |form: LawForm| candidates.iter().find(|c| c.form == form && c.law.is_some()).map(|c| c.cv_score);
    let (chosen, reason) = match (score(LawForm::PowerPlusOffset), score(LawForm::PurePower)) {
        (None, None) => {
            return Err(ScalingError::Optimiser(
                candidates.iter().filter_map(|c| c.fit_error.clone()).collect::<Vec<_>>().join("; "),
            ))
        }
        (Some(_), None) => (LawForm::PowerPlusOffset, "the pure power law could not be fitted".to_string()),
        (None, Some(_)) => (LawForm::PurePower, "the offset law could not be fitted".to_string()),
        (Some(Some(off)), Some(Some(pure))) => {
            let noise = candidates
                .iter()
                .find(|c| c.form == LawForm::PowerPlusOffset)
                .and_then(|c| c.residual_rms)
                .unwrap_or(0.0);
            let margin = CV_TIE_ABS.max(CV_TIE_REL * pure).max(noise);
            let scores = format!(
                "cross-validated extrapolation error {:.3}% for the offset law vs {:.3}% for the pure power law, tie margin {:.3}% \
                 (the larger of {:.0}% of the latter, {:.3}%, and the points' RMS scatter about the offset fit, {:.3}%)",
                off * 100.0,
                pure * 100.0,
                margin * 100.0,
                CV_TIE_REL * 100.0,
                CV_TIE_ABS * 100.0,
                noise * 100.0
            );
            if off < pure - margin {
                (
                    LawForm::PowerPlusOffset,
                    format!("{scores}: the offset law is better by more than the margin"),
                )
            } else {
                (
                    LawForm::PurePower,
                    format!("{scores}: no better by more than the margin, so the simpler law"),
                )
            }
        }
        (Some(Some(_)), Some(None)) => (
            LawForm::PowerPlusOffset,
            "the pure power law failed a cross-validation fold".to_string(),
        ),
        (Some(None), Some(Some(_))) => (LawForm::PurePower, "the offset law failed a cross-validation fold".to_string()),
        (Some(None), Some(None)) => (
            LawForm::PurePower,
            if candidates.iter().all(|c| c.folds.is_empty()) {
                format!(
                    "{} distinct compute values leave no fold with {CV_MIN_TRAIN_COMPUTES} smaller ones to fit on, so the simpler law",
                    distinct_computes(points).len()
                )
            } else {
                "both forms failed a cross-validation fold, so the simpler law".to_string()
            },
        ),
    };
    Ok(LawSelection {
        candidates,
        chosen,
        reason,
    })
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

/// Largest exponent accepted in `L(N, D)`: published fits find α, β ≈ 0.3; an
/// exponent far above 1 means the runs' N and D moved together (20 tokens per
/// parameter everywhere) and the optimiser traded one term for the other.
const MAX_DATA_EXPONENT: f64 = 2.0;

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
    for (name, exponent) in [("alpha", p[2]), ("beta", p[4])] {
        if !(exponent > 0.0 && exponent <= MAX_DATA_EXPONENT) {
            return Err(ScalingError::Optimiser(format!(
                "degenerate fit: exponent {name} = {exponent:.3} is outside (0, {MAX_DATA_EXPONENT}]; \
                 these runs cannot tell the effect of parameters from that of tokens"
            )));
        }
    }
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
    fn a_data_law_with_an_absurd_exponent_is_refused() {
        // Every run at 20 tokens per parameter and a loss far steeper in N than any real law:
        // the only fits put an exponent near 3 on N or on D.
        let points: Vec<(f64, f64, f64)> = (0..8)
            .map(|i| {
                let n = 1e3 * 2f64.powi(i);
                (n, 20.0 * n, 1.0 + 1e9 * n.powf(-3.0))
            })
            .collect();
        let err = fit_data_law(&points).unwrap_err().to_string();
        assert!(err.contains("degenerate fit"), "{err}");
    }

    #[test]
    fn recovers_a_known_compute_law_from_noisy_points() {
        let truth = ComputeLaw {
            a: 40.0,
            b: -0.12,
            c: 1.6,
            objective: 0.0,
        };
        let mut rng = Xoshiro256StarStar::new(3);
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

    /// `seeds` noisy points at each compute, relative noise `sd`.
    fn noisy(truth: &ComputeLaw, computes: &[f64], seeds: usize, sd: f64, seed: u64) -> Vec<(f64, f64)> {
        let mut rng = Xoshiro256StarStar::new(seed);
        computes
            .iter()
            .flat_map(|&c| (0..seeds).map(move |_| c))
            .map(|c| (c, truth.predict(c) * (1.0 + sd * rng.normal())))
            .collect()
    }

    #[test]
    fn a_narrow_band_of_pure_power_law_points_selects_the_pure_law() {
        // Five compute values over 5x, like the ladder's smallest rungs, with seed noise.
        let truth = ComputeLaw {
            a: 30.0,
            b: -0.12,
            c: 0.0,
            objective: 0.0,
        };
        let computes = [2e9, 3e9, 4.5e9, 6.5e9, 1e10];
        let points = noisy(&truth, &computes, 3, 0.003, 7);
        let sel = select_compute_law(&points).unwrap();
        assert_eq!(sel.chosen, LawForm::PurePower, "{sel:?}");
        for cand in &sel.candidates {
            assert_eq!(cand.folds.len(), 2, "{cand:?}");
            assert!(cand.cv_score.is_some(), "{cand:?}");
        }
        // 1000x past the largest point the chosen law is within 3% (over 40 noise
        // seeds the pure law was always chosen and missed by at most 4%; the offset
        // law fitted to the same points missed by up to 39%).
        let target = 1e13;
        let law = sel.chosen_law().unwrap();
        assert_eq!(law.c, 0.0);
        let rel = (law.predict(target) - truth.predict(target)).abs() / truth.predict(target);
        assert!(rel < 0.03, "relative error {rel} ({law:?})");
        let (lo, _, hi) = bootstrap_interval_form(&points, sel.chosen, target, 200, 1).unwrap();
        assert!(lo < truth.predict(target) && truth.predict(target) < hi, "[{lo}, {hi}]");
    }

    #[test]
    fn strong_saturation_over_a_wide_range_selects_the_offset_law() {
        let truth = ComputeLaw {
            a: 500.0,
            b: -0.25,
            c: 1.5,
            objective: 0.0,
        };
        let computes: Vec<f64> = (0..11).map(|i| 1e9 * 10f64.powf(i as f64 * 0.5)).collect();
        let points = noisy(&truth, &computes, 1, 0.002, 11);
        let sel = select_compute_law(&points).unwrap();
        assert_eq!(sel.chosen, LawForm::PowerPlusOffset, "{sel:?}");
        let off = sel.candidate(LawForm::PowerPlusOffset).unwrap().cv_score.unwrap();
        let pure = sel.candidate(LawForm::PurePower).unwrap().cv_score.unwrap();
        assert!(off < pure, "{off} vs {pure}");
        let law = sel.chosen_law().unwrap();
        assert!((law.c - truth.c).abs() < 0.1, "{law:?}");
        let target = 1e16;
        let rel = (law.predict(target) - truth.predict(target)).abs() / truth.predict(target);
        assert!(rel < 0.01, "relative error {rel} ({law:?})");
    }

    #[test]
    fn too_few_compute_values_to_cross_validate_choose_the_simpler_law() {
        let truth = ComputeLaw {
            a: 30.0,
            b: -0.12,
            c: 0.0,
            objective: 0.0,
        };
        let points = noisy(&truth, &[1e9, 2e9, 4e9], 2, 0.001, 2);
        let sel = select_compute_law(&points).unwrap();
        assert_eq!(sel.chosen, LawForm::PurePower);
        assert!(sel.candidates.iter().all(|c| c.folds.is_empty() && c.cv_score.is_none()));
        assert!(sel.reason.contains("3 distinct compute values"), "{}", sel.reason);
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
        let mut rng = Xoshiro256StarStar::new(4);
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
