//! Capability measurements of each finished run (held-out coding-task pass
//! rates and the hindsight-neglect probe), stored as `capability.json` next
//! to the run's `result.json`, and the GPT-4-style capability prediction built
//! from them.

use std::path::Path;

use ferrogpt_infer::LocalModel;
use serde::{Deserialize, Serialize};

use crate::capability::{fit_capability, measure_pass_rates, CapabilityFit, CapabilityPrediction, CapabilityVerification, PassRates};
use crate::ladder::{CapabilitySpec, Ladder};
use crate::probe::{hindsight_items_with_shots, probe_accuracy, shots_that_fit, ProbeResult, DEFAULT_SHOTS};
use crate::sweep::{read_json, run_dir, write_json, RunRecord};
use crate::ScalingError;

pub const CAPABILITY_FILE: &str = "capability.json";

/// What one run scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunCapability {
    pub pass_rates: PassRates,
    /// Mean raw pass rate over the tasks.
    pub mean_pass_rate: f64,
    pub probe: Option<ProbeResult>,
    /// Few-shot examples per probe item (the most that fit the context).
    pub probe_shots: usize,
    pub secs: f64,
}

/// Measures a finished run once (later calls read `capability.json`).
pub fn measure_run(spec: &CapabilitySpec, out: &Path, record: &RunRecord) -> Result<RunCapability, ScalingError> {
    let path = run_dir(out, &record.name, record.seed).join(CAPABILITY_FILE);
    if path.exists() {
        let saved: RunCapability = read_json(&path)?;
        // Measurements from before the exact pass-probability estimator are measured again.
        if saved.pass_rates.is_complete() {
            return Ok(saved);
        }
    }
    let t = std::time::Instant::now();
    let model = LocalModel::load(&record.run_dir.join(ferrogpt_train::trainer::MODEL_DIR))?;
    let tasks = ferrogpt_data::code_task::tiered_heldout_tasks(spec.seed, spec.easy_tasks, spec.tasks);
    // The same sampling seed for every run: differences come from the models.
    let pass_rates = measure_pass_rates(&model, &tasks, spec.samples, spec.temperature, spec.seed)?;
    let (probe, probe_shots) = if spec.probe_items > 0 {
        // Every rung shares the tokenizer and context, so every rung gets the same items.
        let shots = shots_that_fit(&model, spec.probe_items, spec.seed, DEFAULT_SHOTS);
        let items = hindsight_items_with_shots(spec.probe_items, spec.seed, shots);
        match probe_accuracy(&model, &items) {
            Ok(r) => (Some(r), shots),
            // Not even the bare test bet fits this ladder's context: no probe, not a failure.
            Err(ScalingError::PromptTooLong { .. }) => (None, 0),
            Err(e) => return Err(e),
        }
    } else {
        (None, 0)
    };
    let c = RunCapability {
        mean_pass_rate: pass_rates.mean_pass_rate(),
        pass_rates,
        probe,
        probe_shots,
        secs: t.elapsed().as_secs_f64(),
    };
    write_json(&path, &c)?;
    Ok(c)
}

/// The registered capability prediction (or why there is none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapabilityRegistration {
    pub max_fraction: f64,
    /// Runs (name/seed) the fit used.
    pub runs: Vec<String>,
    pub fit: Option<CapabilityFit>,
    pub prediction: Option<CapabilityPrediction>,
    pub error: Option<String>,
}

/// Fits `−E[log pass_rate] = α·C^(−k)` on every measured run within
/// `max_fraction` of the target's compute and predicts the target.
pub fn register_capability(
    ladder: &Ladder,
    out: &Path,
    records: &[RunRecord],
    target_flops: f64,
    max_fraction: f64,
) -> Result<Option<CapabilityRegistration>, ScalingError> {
    let Some(spec) = &ladder.capability else {
        return Ok(None);
    };
    let mut points = Vec::new();
    let mut runs = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.on_recipe && r.train_flops <= max_fraction * target_flops)
    {
        points.push((r.train_flops, measure_run(spec, out, r)?.pass_rates));
        runs.push(format!("{}/seed{}", r.name, r.seed));
    }
    let (fit, prediction, error) = match fit_capability(&points, spec.buckets) {
        Ok(f) => {
            let p = f.predict(target_flops);
            (Some(f), Some(p), None)
        }
        Err(e) => (None, None, Some(e.to_string())),
    };
    Ok(Some(CapabilityRegistration {
        max_fraction,
        runs,
        fit,
        prediction,
        error,
    }))
}

/// The registered capability fit against the target's measured pass rates.
pub fn verify_capability(
    ladder: &Ladder,
    out: &Path,
    registration: &CapabilityRegistration,
    target: &RunRecord,
) -> Result<Option<CapabilityVerification>, ScalingError> {
    match (&ladder.capability, &registration.fit) {
        (Some(spec), Some(fit)) => {
            let measured = measure_run(spec, out, target)?;
            Ok(Some(fit.verify(target.train_flops, &measured.pass_rates)))
        }
        _ => Ok(None),
    }
}

/// One larger run checked against a [`capability_backtest`] fit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapabilityBacktestRow {
    /// `name/seed<n>`.
    pub run: String,
    pub train_flops: f64,
    /// The run's compute over the largest fitted run's.
    pub extrapolation: f64,
    pub check: CapabilityVerification,
}

/// The capability fit on the runs at or below `max_flops`, checked against every larger
/// run: hindsight, like [`crate::predict::backtest`], not a registered prediction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapabilityBacktest {
    pub max_flops: f64,
    pub fit_runs: Vec<String>,
    pub fit: CapabilityFit,
    pub rows: Vec<CapabilityBacktestRow>,
}

/// See [`CapabilityBacktest`]. Measures every on-recipe run of `records` that has no
/// measurement yet; `None` when the ladder measures no capability.
pub fn capability_backtest(
    ladder: &Ladder,
    out: &Path,
    records: &[RunRecord],
    max_flops: f64,
) -> Result<Option<CapabilityBacktest>, ScalingError> {
    let Some(spec) = &ladder.capability else {
        return Ok(None);
    };
    let mut measured: Vec<(&RunRecord, PassRates)> = Vec::new();
    for r in records.iter().filter(|r| r.on_recipe) {
        measured.push((r, measure_run(spec, out, r)?.pass_rates));
    }
    let (fitted, larger): (Vec<_>, Vec<_>) = measured.into_iter().partition(|(r, _)| r.train_flops <= max_flops);
    let points: Vec<(f64, PassRates)> = fitted.iter().map(|(r, p)| (r.train_flops, p.clone())).collect();
    let fit = fit_capability(&points, spec.buckets)?;
    let max_fit = fit.fit_compute.iter().copied().fold(0.0, f64::max);
    let mut rows: Vec<CapabilityBacktestRow> = larger
        .iter()
        .map(|(r, rates)| CapabilityBacktestRow {
            run: format!("{}/seed{}", r.name, r.seed),
            train_flops: r.train_flops,
            extrapolation: r.train_flops / max_fit,
            check: fit.verify(r.train_flops, rates),
        })
        .collect();
    rows.sort_by(|a, b| a.train_flops.total_cmp(&b.train_flops));
    Ok(Some(CapabilityBacktest {
        max_flops,
        fit_runs: fitted.iter().map(|(r, _)| format!("{}/seed{}", r.name, r.seed)).collect(),
        fit,
        rows,
    }))
}
