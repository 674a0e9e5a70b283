//! Registered predictions and their verification.
//!
//! `prediction.json` is written before the target trains: the fitted law (the
//! form chosen by cross-validation, with both candidates and their scores), the
//! predicted final loss with a bootstrap 90% interval, the exact fit points,
//! sha256 of the ladder file and of the data manifest, and the time. Every fit
//! point must have used at most `max_fraction` of the target's compute; a point
//! above it is refused, never silently dropped. `verification.json` compares
//! the target's final loss with the registered numbers.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::capability::CapabilityVerification;
use crate::fit::{bootstrap_interval_form, fit_data_law, select_compute_law, ComputeLaw, DataLaw, LawSelection};
use crate::ladder::{Ladder, RunPlan};
use crate::measure::{register_capability, CapabilityRegistration};
use crate::sweep::{read_json, rung_points, started_at, write_json, RunRecord, RungPoint, Stamp};
use crate::ScalingError;

pub const PREDICTIONS_DIR: &str = "predictions";
pub const PREDICTION_FILE: &str = "prediction.json";
pub const VERIFICATION_FILE: &str = "verification.json";
/// Bootstrap resamples behind every interval.
pub const RESAMPLES: usize = 1000;

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, ScalingError> {
    let bytes = std::fs::read(path).map_err(|source| ScalingError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(sha256_hex(&bytes))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One point of a registered fit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitPoint {
    pub rung: String,
    pub train_flops: f64,
    pub val_bpb: f64,
    pub val_bpb_std: f64,
    pub seeds: usize,
    pub matmul_params: usize,
    pub tokens: u64,
    /// `train_flops / target's train_flops`.
    pub fraction_of_target: f64,
}

/// Chinchilla's `L(N, D)` fitted on the same runs (off-recipe rungs included).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataView {
    pub law: Option<DataLaw>,
    pub predicted_bpb: Option<f64>,
    /// Why there is no law, when the fit failed.
    pub error: Option<String>,
    pub points: usize,
}

/// The registered prediction for one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub name: String,
    pub target: String,
    pub target_flops: f64,
    pub target_matmul_params: usize,
    pub target_tokens: u64,
    pub max_fraction: f64,
    /// Target compute over the largest fit point's.
    pub extrapolation: f64,
    pub created: Stamp,
    pub ladder_sha256: String,
    pub data_manifest_sha256: String,
    /// The chosen law (see `selection`), fitted on every point.
    pub law: ComputeLaw,
    /// Both candidate forms, their cross-validation scores and the choice;
    /// absent in predictions registered before model selection existed, whose
    /// `law` is always `a·C^b + c`.
    #[serde(default)]
    pub selection: Option<LawSelection>,
    pub predicted_bpb: f64,
    /// Bootstrap 90% interval (5th and 95th percentiles) and median.
    pub interval90: [f64; 2],
    pub bootstrap_median: f64,
    pub bootstrap_resamples: usize,
    pub points: Vec<FitPoint>,
    pub chinchilla: DataView,
    /// The GPT-4-style capability prediction, when the ladder measures capability.
    #[serde(default)]
    pub capability: Option<CapabilityRegistration>,
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub name: String,
    pub target: String,
    pub prediction_created: Stamp,
    pub target_started: Stamp,
    /// The prediction predates the target's first training step.
    pub registered_before_training: bool,
    pub extrapolation: f64,
    pub predicted_bpb: f64,
    pub actual_bpb: f64,
    /// `|predicted − actual| / actual`.
    pub relative_error: f64,
    /// `(predicted − actual) / actual`: negative when the fit was optimistic.
    pub signed_relative_error: f64,
    /// `(predicted − c) / (actual − c) − 1`: the miss on the part of the loss that scales.
    pub reducible_relative_error: f64,
    /// Compute at which the fitted law reaches the actual loss, over the target's
    /// compute (1 is perfect; `None` when the actual loss is below the fit's floor `c`).
    pub equivalent_compute_factor: Option<f64>,
    pub interval90: [f64; 2],
    pub inside_interval: bool,
    pub target_flops: f64,
    pub target_train_secs: f64,
    pub checked: Stamp,
    #[serde(default)]
    pub capability: Option<CapabilityVerification>,
}

pub fn prediction_dir(out: &Path, name: &str) -> PathBuf {
    out.join(PREDICTIONS_DIR).join(name)
}

/// Chooses the fit points: every on-recipe rung within `max_fraction` of the
/// target's compute, or exactly the `requested` rungs — and then any requested
/// rung above the fraction is an error.
pub fn select_points(
    points: &[RungPoint],
    target_flops: f64,
    max_fraction: f64,
    requested: Option<&[String]>,
) -> Result<Vec<RungPoint>, ScalingError> {
    let limit = max_fraction * target_flops;
    let chosen: Vec<RungPoint> = match requested {
        Some(names) => {
            let mut v = Vec::new();
            for n in names {
                let p = points
                    .iter()
                    .find(|p| &p.name == n)
                    .ok_or_else(|| ScalingError::Refused(format!("rung `{n}` has no finished run to fit")))?;
                v.push(p.clone());
            }
            v
        }
        None => points.iter().filter(|p| p.on_recipe && p.train_flops <= limit).cloned().collect(),
    };
    for p in &chosen {
        if p.train_flops > limit {
            return Err(ScalingError::Refused(format!(
                "fit point `{}` used {:.3e} FLOPs = {:.2e} of the target's {:.3e}, above --max-fraction {:e}",
                p.name,
                p.train_flops,
                p.train_flops / target_flops,
                target_flops,
                max_fraction
            )));
        }
        if !p.on_recipe {
            return Err(ScalingError::Refused(format!(
                "fit point `{}` is off the recipe's tokens_per_param; the compute law takes recipe runs only",
                p.name
            )));
        }
    }
    if chosen.len() < 3 {
        return Err(ScalingError::Refused(format!(
            "only {} finished on-recipe rungs within {:e} of the target's {:.3e} FLOPs; the law needs 3",
            chosen.len(),
            max_fraction,
            target_flops
        )));
    }
    Ok(chosen)
}

/// Everything `register` needs besides the runs.
pub struct RegisterInput<'a> {
    pub ladder: &'a Ladder,
    /// The ladder file's exact bytes.
    pub ladder_text: &'a str,
    pub manifest: &'a Path,
    pub out: &'a Path,
    pub name: &'a str,
    pub target: &'a RunPlan,
    pub max_fraction: f64,
    /// Compute limit of the capability fit, as a fraction of the target's.
    pub capability_max_fraction: f64,
    pub requested: Option<&'a [String]>,
    /// Replace an existing prediction (only while the target has not started).
    pub force: bool,
}

/// Fits, and writes `prediction.json` — unless one is already registered, which
/// is returned unchanged (so a resumed ladder keeps its original prediction).
pub fn register(input: &RegisterInput, records: &[RunRecord]) -> Result<(Prediction, PathBuf), ScalingError> {
    let dir = prediction_dir(input.out, input.name);
    let path = dir.join(PREDICTION_FILE);
    if let Some(s) = started_at(input.out, &input.target.name, 0)? {
        if !path.exists() || input.force {
            return Err(ScalingError::Refused(format!(
                "target `{}` started training at {}; a prediction registered now would not be a prediction",
                input.target.name, s.utc
            )));
        }
    }
    if path.exists() && !input.force {
        return Ok((read_json(&path)?, path));
    }
    let target_flops = input.target.train_flops;
    let all = rung_points(records);
    let chosen = select_points(&all, target_flops, input.max_fraction, input.requested)?;
    let xy: Vec<(f64, f64)> = chosen.iter().map(|p| (p.train_flops, p.val_bpb)).collect();
    let selection = select_compute_law(&xy)?;
    let law = selection.chosen_law()?;
    let (lo, median, hi) = bootstrap_interval_form(&xy, selection.chosen, target_flops, RESAMPLES, 0)?;
    let predicted = law.predict(target_flops);
    let max_fit = chosen.iter().map(|p| p.train_flops).fold(0.0, f64::max);

    // The L(N, D) view uses every run under the same compute limit, off-recipe
    // ones included (they are what separate N from D).
    let limit = input.max_fraction * target_flops;
    let nd: Vec<(f64, f64, f64)> = all
        .iter()
        .filter(|p| p.train_flops <= limit)
        .map(|p| (p.matmul_params as f64, p.tokens as f64, p.val_bpb))
        .collect();
    let chinchilla = match fit_data_law(&nd) {
        Ok(l) => DataView {
            predicted_bpb: Some(l.predict(input.target.matmul_params as f64, input.target.tokens as f64)),
            law: Some(l),
            error: None,
            points: nd.len(),
        },
        Err(e) => DataView {
            law: None,
            predicted_bpb: None,
            error: Some(e.to_string()),
            points: nd.len(),
        },
    };
    let prediction = Prediction {
        name: input.name.to_string(),
        target: input.target.name.clone(),
        target_flops,
        target_matmul_params: input.target.matmul_params,
        target_tokens: input.target.tokens,
        max_fraction: input.max_fraction,
        extrapolation: target_flops / max_fit,
        created: Stamp::now(),
        ladder_sha256: sha256_hex(input.ladder_text.as_bytes()),
        data_manifest_sha256: sha256_file(input.manifest)?,
        law,
        selection: Some(selection),
        predicted_bpb: predicted,
        interval90: [lo, hi],
        bootstrap_median: median,
        bootstrap_resamples: RESAMPLES,
        points: chosen
            .iter()
            .map(|p| FitPoint {
                rung: p.name.clone(),
                train_flops: p.train_flops,
                val_bpb: p.val_bpb,
                val_bpb_std: p.val_bpb_std,
                seeds: p.seeds,
                matmul_params: p.matmul_params,
                tokens: p.tokens,
                fraction_of_target: p.train_flops / target_flops,
            })
            .collect(),
        chinchilla,
        capability: register_capability(input.ladder, input.out, records, target_flops, input.capability_max_fraction)?,
    };
    write_json(&path, &prediction)?;
    Ok((prediction, path))
}

/// One larger run checked against a [`backtest`] fit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BacktestRow {
    pub run: String,
    pub train_flops: f64,
    /// The run's compute over the largest fit point's.
    pub extrapolation: f64,
    /// Mean over the run's finished seeds.
    pub actual_bpb: f64,
    /// The chosen law's prediction.
    pub predicted_bpb: f64,
    pub relative_error: f64,
    /// Each candidate form's prediction, in [`crate::fit::LawForm::ALL`] order.
    pub by_form: Vec<(crate::fit::LawForm, Option<f64>)>,
}

/// A fit on the on-recipe runs at or below `max_flops`, checked against every
/// larger finished run — a development aid for choosing a ladder or a fitter.
/// It is hindsight, not a registered prediction: nothing is written, and the
/// larger runs have already been seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backtest {
    pub max_flops: f64,
    pub fit_runs: Vec<String>,
    pub selection: LawSelection,
    pub rows: Vec<BacktestRow>,
}

/// See [`Backtest`]. `records` are finished runs (rungs and targets, any seeds).
pub fn backtest(records: &[RunRecord], max_flops: f64) -> Result<Backtest, ScalingError> {
    let all = rung_points(records);
    let fit: Vec<&RungPoint> = all.iter().filter(|p| p.on_recipe && p.train_flops <= max_flops).collect();
    if fit.len() < 3 {
        return Err(ScalingError::Refused(format!(
            "only {} finished on-recipe runs at or below {max_flops:.3e} FLOPs; the law needs 3",
            fit.len()
        )));
    }
    let xy: Vec<(f64, f64)> = fit.iter().map(|p| (p.train_flops, p.val_bpb)).collect();
    let selection = select_compute_law(&xy)?;
    let law = selection.chosen_law()?;
    let max_fit = xy.iter().map(|p| p.0).fold(0.0, f64::max);
    let mut rows: Vec<BacktestRow> = all
        .iter()
        .filter(|p| p.on_recipe && p.train_flops > max_flops)
        .map(|p| {
            let predicted = law.predict(p.train_flops);
            BacktestRow {
                run: p.name.clone(),
                train_flops: p.train_flops,
                extrapolation: p.train_flops / max_fit,
                actual_bpb: p.val_bpb,
                predicted_bpb: predicted,
                relative_error: (predicted - p.val_bpb).abs() / p.val_bpb,
                by_form: selection
                    .candidates
                    .iter()
                    .map(|c| (c.form, c.law.map(|l| l.predict(p.train_flops))))
                    .collect(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.train_flops.total_cmp(&b.train_flops));
    Ok(Backtest {
        max_flops,
        fit_runs: fit.iter().map(|p| p.name.clone()).collect(),
        selection,
        rows,
    })
}

/// Compares a finished target with its registered prediction.
pub fn verify(prediction: &Prediction, target: &RunRecord) -> Result<Verification, ScalingError> {
    if target.name != prediction.target {
        return Err(ScalingError::Refused(format!(
            "run `{}` is not the prediction's target `{}`",
            target.name, prediction.target
        )));
    }
    let (p, a, law) = (prediction.predicted_bpb, target.val_bpb, &prediction.law);
    let equivalent_compute_factor = if a > law.c && law.a > 0.0 && law.b != 0.0 {
        Some(((a - law.c) / law.a).powf(1.0 / law.b) / prediction.target_flops)
    } else {
        None
    };
    Ok(Verification {
        name: prediction.name.clone(),
        target: prediction.target.clone(),
        prediction_created: prediction.created.clone(),
        target_started: target.started.clone(),
        registered_before_training: prediction.created.unix < target.started.unix,
        extrapolation: prediction.extrapolation,
        predicted_bpb: p,
        actual_bpb: a,
        relative_error: (p - a).abs() / a,
        signed_relative_error: (p - a) / a,
        reducible_relative_error: (p - law.c) / (a - law.c) - 1.0,
        equivalent_compute_factor,
        interval90: prediction.interval90,
        inside_interval: prediction.interval90[0] <= a && a <= prediction.interval90[1],
        target_flops: target.train_flops,
        target_train_secs: target.train_secs,
        checked: Stamp::now(),
        capability: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(name: &str, flops: f64, on_recipe: bool) -> RungPoint {
        RungPoint {
            name: name.into(),
            train_flops: flops,
            val_bpb: 2.0 + 1e3 * flops.powf(-0.3),
            val_bpb_std: 0.0,
            seeds: 1,
            matmul_params: 1000,
            non_embedding_params: 800,
            tokens: 20_000,
            on_recipe,
        }
    }

    fn ladder_points() -> Vec<RungPoint> {
        vec![
            point("a", 1e9, true),
            point("b", 3e9, true),
            point("c", 1e10, true),
            point("off", 2e9, false),
            point("d", 1e11, true),
        ]
    }

    #[test]
    fn selection_keeps_recipe_rungs_under_the_fraction() {
        let chosen = select_points(&ladder_points(), 1e14, 1e-4, None).unwrap();
        let names: Vec<&str> = chosen.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn a_requested_point_above_the_fraction_is_refused() {
        let req = vec!["a".to_string(), "b".to_string(), "d".to_string()];
        let e = select_points(&ladder_points(), 1e14, 1e-4, Some(&req)).unwrap_err().to_string();
        assert!(e.contains("`d`") && e.contains("max-fraction"), "{e}");
        // Too few points under a tight fraction is refused too, not fitted on two.
        let e = select_points(&ladder_points(), 1e14, 2e-5, None).unwrap_err().to_string();
        assert!(e.contains("needs 3"), "{e}");
    }

    fn prediction(c: f64) -> Prediction {
        Prediction {
            name: "p".into(),
            target: "t".into(),
            target_flops: 1e12,
            target_matmul_params: 1,
            target_tokens: 1,
            max_fraction: 0.01,
            extrapolation: 100.0,
            created: Stamp {
                utc: "x".into(),
                unix: 1.0,
            },
            ladder_sha256: String::new(),
            data_manifest_sha256: String::new(),
            law: ComputeLaw {
                a: 10.0,
                b: -0.25,
                c,
                objective: 0.0,
            },
            selection: None,
            predicted_bpb: 10.0 * 1e12f64.powf(-0.25) + c,
            interval90: [1.0, 1.02],
            bootstrap_median: 1.01,
            bootstrap_resamples: 10,
            points: Vec::new(),
            chinchilla: DataView {
                law: None,
                predicted_bpb: None,
                error: None,
                points: 0,
            },
            capability: None,
        }
    }

    #[test]
    fn backtest_fits_the_small_runs_and_checks_the_larger_ones() {
        let law = |c: f64| 30.0 * c.powf(-0.12);
        let mut records = Vec::new();
        for (i, c) in [2e9, 3e9, 4.5e9, 7e9, 1e10, 1e11, 1e12].into_iter().enumerate() {
            for seed in 0..2 {
                let mut r = crate::sweep::tests_support::record(&format!("r{i}"), law(c) * (1.0 + 0.001 * (seed as f64 - 0.5)));
                r.seed = seed;
                r.train_flops = c;
                records.push(r);
            }
        }
        let b = backtest(&records, 1e10).unwrap();
        assert_eq!(b.fit_runs, ["r0", "r1", "r2", "r3", "r4"]);
        let runs: Vec<&str> = b.rows.iter().map(|r| r.run.as_str()).collect();
        assert_eq!(runs, ["r5", "r6"]);
        assert!((b.rows[1].extrapolation - 100.0).abs() < 1e-9);
        for row in &b.rows {
            assert!(row.relative_error < 0.01, "{row:?}");
            assert_eq!(row.by_form.len(), 2);
        }
        assert!(backtest(&records, 3e9).unwrap_err().to_string().contains("only 2"));
    }

    #[test]
    fn a_prediction_registered_before_model_selection_still_loads() {
        let mut json = serde_json::to_value(prediction(1.0)).unwrap();
        json.as_object_mut().unwrap().remove("selection");
        let old: Prediction = serde_json::from_value(json).unwrap();
        assert_eq!(old.selection, None);
        assert_eq!(old, prediction(1.0));
    }

    #[test]
    fn verification_measures() {
        let p = prediction(1.0); // predicts 1.01
        let mut target = crate::sweep::tests_support::record("t", 1.0202);
        target.train_flops = 1e12;
        let v = verify(&p, &target).unwrap();
        assert!((v.relative_error - (1.0202 - 1.01) / 1.0202).abs() < 1e-12);
        assert!(v.signed_relative_error < 0.0);
        assert!((v.reducible_relative_error - (0.01 / 0.0202 - 1.0)).abs() < 1e-9);
        // The law reaches 1.0202 at C with 10·C^-0.25 = 0.0202.
        let c_eq = (0.0202f64 / 10.0).powf(-4.0);
        assert!((v.equivalent_compute_factor.unwrap() - c_eq / 1e12).abs() < 1e-9 * c_eq / 1e12);
        assert!(!v.inside_interval);
        assert!(v.registered_before_training);
        // Below the floor there is no equivalent compute.
        target.val_bpb = 0.9;
        assert_eq!(verify(&p, &target).unwrap().equivalent_compute_factor, None);
        target.name = "other".into();
        assert!(verify(&p, &target).is_err());
    }
}
