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
        return read_json(&path);
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
