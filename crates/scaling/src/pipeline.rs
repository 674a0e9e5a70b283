//! The whole loop of `ferrogpt scale run`: data, sweep, register every
//! prediction, train the targets, verify, report — resumable at every step.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::ladder::Ladder;
use crate::measure::{measure_run, verify_capability};
use crate::predict::{prediction_dir, register, verify, Prediction, RegisterInput, Verification, PREDICTION_FILE, VERIFICATION_FILE};
use crate::report::write_report;
use crate::sweep::{prepare_data, read_json, run_one, sweep, total_flops, write_json, LadderBar, Prepared, RunKind, RunRecord};
use crate::ScalingError;

/// The copy of the ladder a run folder was made with.
pub const LADDER_COPY: &str = "ladder.toml";

/// Binds an output folder to one ladder: the first run copies the ladder file
/// in; a later run with different text is refused, since its runs and
/// predictions would mix two recipes.
pub fn bind_ladder(out: &Path, text: &str) -> Result<(), ScalingError> {
    std::fs::create_dir_all(out).map_err(|source| ScalingError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let copy = out.join(LADDER_COPY);
    if copy.exists() {
        let saved = std::fs::read_to_string(&copy).map_err(|source| ScalingError::Io {
            path: copy.clone(),
            source,
        })?;
        if saved != text {
            return Err(ScalingError::Refused(format!(
                "{} holds runs of a different ladder ({}); use another --out",
                out.display(),
                copy.display()
            )));
        }
        return Ok(());
    }
    std::fs::write(&copy, text).map_err(|source| ScalingError::Io { path: copy, source })
}

/// Loads the ladder a run folder was made with.
pub fn load_bound(out: &Path) -> Result<(Ladder, String), ScalingError> {
    let copy = out.join(LADDER_COPY);
    if !copy.exists() {
        return Err(ScalingError::Refused(format!(
            "{} has no {LADDER_COPY}: run `ferrogpt scale run` into it first",
            out.display()
        )));
    }
    Ladder::from_file(&copy)
}

/// What a whole ladder run produced.
pub struct Outcome {
    pub predictions: Vec<(PathBuf, Prediction)>,
    pub verifications: Vec<(PathBuf, Verification)>,
    pub report: PathBuf,
    pub wall_secs: f64,
}

/// Options of [`run_ladder`].
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    pub progress: bool,
    /// Stop after registering the predictions (targets untrained).
    pub sweep_only: bool,
}

/// Trains a target (seed 0), or returns its finished run.
pub fn train_target(ladder: &Ladder, name: &str, data: &Prepared, out: &Path, bar: &LadderBar) -> Result<RunRecord, ScalingError> {
    let shape = ladder
        .target(name)
        .ok_or_else(|| ScalingError::Refused(format!("`{name}` is not a [[target]] of ladder `{}`", ladder.name)))?;
    run_one(ladder, &ladder.plan(shape), RunKind::Target, 0, data, out, bar)
}

/// Verifies the registered prediction `name` against its (trained) target and
/// writes `verification.json` next to `prediction.json`.
pub fn verify_registered(ladder: &Ladder, out: &Path, name: &str, target: &RunRecord) -> Result<(PathBuf, Verification), ScalingError> {
    let dir = prediction_dir(out, name);
    let pred_path = dir.join(PREDICTION_FILE);
    if !pred_path.exists() {
        return Err(ScalingError::Refused(format!(
            "no registered prediction at {}: run `ferrogpt scale predict` before training the target",
            pred_path.display()
        )));
    }
    let prediction: Prediction = read_json(&pred_path)?;
    let mut v = verify(&prediction, target)?;
    if let Some(reg) = &prediction.capability {
        v.capability = verify_capability(ladder, out, reg, target)?;
    }
    let path = dir.join(VERIFICATION_FILE);
    write_json(&path, &v)?;
    Ok((path, v))
}

/// Runs the whole loop for `ladder` into `out`.
pub fn run_ladder(ladder: &Ladder, text: &str, out: &Path, opts: RunOptions) -> Result<Outcome, ScalingError> {
    let t0 = Instant::now();
    bind_ladder(out, text)?;
    let data = prepare_data(ladder, out, opts.progress)?;
    let bar = LadderBar::new(opts.progress, total_flops(ladder));
    let records = sweep(ladder, &data, out, &bar)?;
    if let Some(spec) = &ladder.capability {
        // Every rung, not only the fitted ones: the probe's figure spans the ladder.
        for r in &records {
            let c = measure_run(spec, out, r)?;
            bar.println(&format!(
                "{:<12} seed {}  pass rate {:.3}{}",
                r.name,
                r.seed,
                c.mean_pass_rate,
                c.probe
                    .as_ref()
                    .map_or(String::new(), |p| format!("  probe accuracy {:.3}", p.accuracy))
            ));
        }
    }
    let mut predictions = Vec::new();
    for spec in &ladder.predictions {
        let target = ladder
            .target(&spec.target)
            .ok_or_else(|| ScalingError::Refused(format!("prediction `{}`: no target `{}`", spec.name, spec.target)))?;
        let (p, path) = register(
            &RegisterInput {
                ladder,
                ladder_text: text,
                manifest: &data.manifest,
                out,
                name: &spec.name,
                target: &ladder.plan(target),
                max_fraction: spec.max_fraction,
                capability_max_fraction: spec.capability_max_fraction,
                requested: None,
                force: false,
            },
            &records,
        )?;
        bar.println(&format!(
            "registered `{}`: target `{}` ({:.2e} FLOPs, {:.0}x beyond the fit) predicted {:.4} bits/byte, 90% interval [{:.4}, {:.4}], \
             law `{}`{}",
            p.name,
            p.target,
            p.target_flops,
            p.extrapolation,
            p.predicted_bpb,
            p.interval90[0],
            p.interval90[1],
            p.law.formula(),
            p.selection
                .as_ref()
                .map_or(String::new(), |s| format!(" (chosen by cross-validation: {})", s.reason))
        ));
        predictions.push((path, p));
    }
    let mut verifications = Vec::new();
    if !opts.sweep_only {
        // Each target trains once, however many predictions it is the target of.
        let mut trained: Vec<RunRecord> = Vec::new();
        for spec in &ladder.predictions {
            if !trained.iter().any(|t| t.name == spec.target) {
                trained.push(train_target(ladder, &spec.target, &data, out, &bar)?);
            }
        }
        for spec in &ladder.predictions {
            if let Some(target) = trained.iter().find(|t| t.name == spec.target) {
                verifications.push(verify_registered(ladder, out, &spec.name, target)?);
            }
        }
    }
    bar.finish();
    let report = write_report(ladder, out)?;
    Ok(Outcome {
        predictions,
        verifications,
        report,
        wall_secs: t0.elapsed().as_secs_f64(),
    })
}
