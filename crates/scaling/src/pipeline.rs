//! The loops behind `ferrogpt scale`: the whole of `scale run` (data, sweep,
//! register every prediction, train the targets, verify, report — resumable at
//! every step), and the single steps `scale predict`, `scale verify` and
//! `scale backtest` run on a folder `scale run` made. The CLI only turns flags
//! into the requests below.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::ladder::{Ladder, PredictionSpec};
use crate::measure::{capability_backtest, measure_run, verify_capability, CapabilityBacktest};
use crate::predict::{
    backtest, prediction_dir, register, verify, Backtest, Prediction, RegisterInput, Verification, PREDICTION_FILE, VERIFICATION_FILE,
};
use crate::report::{registered, write_report};
use crate::sweep::{
    finished, finished_rungs, prepare_data, read_json, run_one, sweep, total_flops, write_json, LadderBar, Prepared, RunKind, RunRecord,
};
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

/// `scale predict`: a prediction to register on a folder `scale run` made.
#[derive(Clone, Debug)]
pub struct PredictRequest {
    /// A `[[target]]` of the folder's ladder.
    pub target: String,
    /// Refuse fit points above this fraction of the target's compute.
    pub max_fraction: f64,
    /// Compute limit of the capability fit, as a fraction of the target's.
    pub capability_max_fraction: f64,
    /// Default: `<1/max_fraction>x-<target>`.
    pub name: Option<String>,
    /// Fit exactly these rungs instead of every rung under the fraction.
    pub rungs: Option<Vec<String>>,
    /// Replace an existing prediction (refused once the target has started).
    pub force: bool,
}

/// Registers a prediction from the folder's finished rungs, before its target trains.
pub fn predict(out: &Path, req: &PredictRequest) -> Result<(Prediction, PathBuf), ScalingError> {
    let (ladder, text) = load_bound(out)?;
    let shape = ladder
        .target(&req.target)
        .ok_or_else(|| ScalingError::Refused(format!("`{}` is not a [[target]] of ladder `{}`", req.target, ladder.name)))?;
    if !(req.max_fraction > 0.0 && req.max_fraction < 1.0) {
        return Err(ScalingError::Refused(format!(
            "the compute fraction {} must be in (0, 1)",
            req.max_fraction
        )));
    }
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| format!("{:.0}x-{}", 1.0 / req.max_fraction, req.target));
    let data = prepare_data(&ladder, out, false)?;
    let records = finished_rungs(&ladder, out)?;
    register(
        &RegisterInput {
            ladder: &ladder,
            ladder_text: &text,
            manifest: &data.manifest,
            out,
            name: &name,
            target: &ladder.plan(shape),
            max_fraction: req.max_fraction,
            capability_max_fraction: req.capability_max_fraction,
            requested: req.rungs.as_deref(),
            force: req.force,
        },
        &records,
    )
}

/// `scale verify`: trains the target of each chosen registered prediction (or reads its
/// finished run), writes its `verification.json` and hands it to `on_verified` as soon as it
/// is known; then rewrites the report and returns its path. `names`: the predictions to
/// verify (all registered ones when `None`).
pub fn verify_predictions(
    out: &Path,
    names: Option<&[String]>,
    progress: bool,
    mut on_verified: impl FnMut(&Path, &Verification),
) -> Result<PathBuf, ScalingError> {
    let (ladder, _) = load_bound(out)?;
    let regs = registered(&ladder, out)?;
    if let Some(names) = names {
        if let Some(missing) = names.iter().find(|n| !regs.iter().any(|r| &&r.prediction.name == n)) {
            return Err(ScalingError::Refused(format!(
                "no registered prediction `{missing}` in {}: run `ferrogpt scale predict` first",
                out.display()
            )));
        }
    }
    let chosen: Vec<_> = regs
        .iter()
        .filter(|r| names.is_none_or(|names| names.contains(&r.prediction.name)))
        .collect();
    if chosen.is_empty() {
        return Err(ScalingError::Refused(format!(
            "no registered predictions in {}: run `ferrogpt scale predict` first",
            out.display()
        )));
    }
    let data = prepare_data(&ladder, out, progress)?;
    for r in chosen {
        let target = ladder.target(&r.prediction.target).ok_or_else(|| {
            ScalingError::Refused(format!(
                "prediction `{}`: no target `{}` in the ladder",
                r.prediction.name, r.prediction.target
            ))
        })?;
        let bar = LadderBar::new(progress, ladder.plan(target).train_flops);
        let record = train_target(&ladder, &r.prediction.target, &data, out, &bar)?;
        bar.finish();
        let (path, v) = verify_registered(&ladder, out, &r.prediction.name, &record)?;
        on_verified(&path, &v);
    }
    write_report(&ladder, out)
}

/// What `scale backtest` found.
pub struct BacktestOutcome {
    pub loss: Backtest,
    /// When the ladder measures capability.
    pub capability: Option<CapabilityBacktest>,
}

/// `scale backtest`: a hindsight check, not a registered prediction. Fits the loss and
/// capability laws on the folder's finished on-recipe runs at or below `max_flops` and scores
/// every larger finished run, targets included.
pub fn backtest_folder(out: &Path, max_flops: f64) -> Result<BacktestOutcome, ScalingError> {
    let positive = max_flops > 0.0; // false for NaN too
    if !positive {
        return Err(ScalingError::Refused(format!("the FLOP limit {max_flops} must be positive")));
    }
    let (ladder, _) = load_bound(out)?;
    let mut records = finished_rungs(&ladder, out)?;
    for t in &ladder.targets {
        records.extend(finished(out, &t.name, 0)?);
    }
    Ok(BacktestOutcome {
        loss: backtest(&records, max_flops)?,
        capability: capability_backtest(&ladder, out, &records, max_flops)?,
    })
}

/// The rungs a prediction's fit may use: on-recipe ones at or below its compute fraction of
/// its target (none when the target is unknown).
pub fn fit_rungs<'a>(ladder: &'a Ladder, prediction: &PredictionSpec) -> Vec<&'a str> {
    let Some(target) = ladder.target(&prediction.target) else {
        return Vec::new();
    };
    let limit = prediction.max_fraction * ladder.plan(target).train_flops;
    ladder
        .rungs
        .iter()
        .filter(|s| s.tokens_per_param.is_none() && ladder.plan(s).train_flops <= limit)
        .map(|s| s.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ladder::tests::TINY;

    fn bound_folder() -> (tempfile::TempDir, Ladder) {
        let tmp = tempfile::tempdir().unwrap();
        bind_ladder(tmp.path(), TINY).unwrap();
        let (ladder, text) = load_bound(tmp.path()).unwrap();
        assert_eq!(text, TINY);
        (tmp, ladder)
    }

    fn request(target: &str, max_fraction: f64) -> PredictRequest {
        PredictRequest {
            target: target.into(),
            max_fraction,
            capability_max_fraction: 1e-3,
            name: None,
            rungs: None,
            force: false,
        }
    }

    #[test]
    fn predict_refuses_unknown_targets_and_fractions_outside_0_1_before_any_work() {
        let (tmp, _) = bound_folder();
        let e = predict(tmp.path(), &request("nope", 0.5)).unwrap_err().to_string();
        assert!(e.contains("`nope` is not a [[target]]"), "{e}");
        for bad in [0.0, 1.0, f64::NAN] {
            let e = predict(tmp.path(), &request("t", bad)).unwrap_err().to_string();
            assert!(e.contains("must be in (0, 1)"), "{e}");
        }
        // Nothing was prepared or trained.
        assert!(!tmp.path().join(crate::sweep::CORPUS_DIR).exists());
        let e = predict(&tmp.path().join("elsewhere"), &request("t", 0.5)).unwrap_err().to_string();
        assert!(e.contains("run `ferrogpt scale run` into it first"), "{e}");
    }

    #[test]
    fn verify_and_backtest_refuse_what_they_cannot_do() {
        let (tmp, _) = bound_folder();
        let e = verify_predictions(tmp.path(), None, false, |_, _| {}).unwrap_err().to_string();
        assert!(e.contains("no registered predictions"), "{e}");
        let names = ["p".to_string()];
        let e = verify_predictions(tmp.path(), Some(&names), false, |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("no registered prediction `p`"), "{e}");
        for bad in [0.0, -1.0, f64::NAN] {
            let e = backtest_folder(tmp.path(), bad).err().unwrap().to_string();
            assert!(e.contains("must be positive"), "{e}");
        }
    }

    #[test]
    fn a_prediction_fits_the_on_recipe_rungs_under_its_fraction() {
        let (_tmp, ladder) = bound_folder();
        let p = &ladder.predictions[0];
        // Every rung is far below half the target.
        assert_eq!(fit_rungs(&ladder, p), ["a", "b", "c"]);
        // A fraction between rung b's compute and rung c's keeps a and b.
        let flops = |name: &str| ladder.plan(ladder.rungs.iter().find(|s| s.name == name).unwrap()).train_flops;
        let mut between = p.clone();
        between.max_fraction = (flops("b") + flops("c")) / 2.0 / ladder.plan(&ladder.targets[0]).train_flops;
        assert_eq!(fit_rungs(&ladder, &between), ["a", "b"]);
        let mut tiny = p.clone();
        tiny.max_fraction = 1e-12;
        assert!(fit_rungs(&ladder, &tiny).is_empty());
        tiny.target = "nope".into();
        assert!(fit_rungs(&ladder, &tiny).is_empty());
    }
}
