//! `DIR/report.md` and `DIR/figures/`, rebuilt from the files a ladder run
//! leaves (run results, predictions, verifications), so the report can be
//! regenerated at any time with `ferrogpt scale report`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::capability::CapabilityVerification;
use crate::fit::LawSelection;
use crate::ladder::Ladder;
use crate::measure::{CapabilityRegistration, RunCapability, CAPABILITY_FILE};
use crate::plot;
use crate::predict::{prediction_dir, Prediction, Verification, PREDICTION_FILE, VERIFICATION_FILE};
use crate::sweep::{finished, finished_rungs, read_json, run_dir, rung_points, RunRecord};
use crate::ScalingError;

pub const REPORT_FILE: &str = "report.md";
pub const FIGURES_DIR: &str = "figures";

/// A prediction with its verification, when there is one.
pub struct Registered {
    pub prediction: Prediction,
    pub verification: Option<Verification>,
}

/// Every registered prediction of the ladder under `out`.
pub fn registered(ladder: &Ladder, out: &Path) -> Result<Vec<Registered>, ScalingError> {
    let mut v = Vec::new();
    let mut names: Vec<String> = ladder.predictions.iter().map(|p| p.name.clone()).collect();
    // Ad-hoc predictions made with `scale predict` live next to the ladder's.
    if let Ok(entries) = std::fs::read_dir(out.join(crate::predict::PREDICTIONS_DIR)) {
        let mut extra: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|n| !names.contains(n))
            .collect();
        extra.sort();
        names.extend(extra);
    }
    for name in names {
        let dir = prediction_dir(out, &name);
        if !dir.join(PREDICTION_FILE).exists() {
            continue;
        }
        let verification = if dir.join(VERIFICATION_FILE).exists() {
            Some(read_json(&dir.join(VERIFICATION_FILE))?)
        } else {
            None
        };
        v.push(Registered {
            prediction: read_json(&dir.join(PREDICTION_FILE))?,
            verification,
        });
    }
    Ok(v)
}

fn secs(s: f64) -> String {
    if s >= 60.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1}s")
    }
}

/// Writes the figures and `report.md`; returns the report's path.
pub fn write_report(ladder: &Ladder, out: &Path) -> Result<PathBuf, ScalingError> {
    let rungs = finished_rungs(ladder, out)?;
    let mut targets: Vec<RunRecord> = Vec::new();
    for t in &ladder.targets {
        if let Some(r) = finished(out, &t.name, 0)? {
            targets.push(r);
        }
    }
    let points = rung_points(&rungs);
    let regs = registered(ladder, out)?;
    let fig_dir = out.join(FIGURES_DIR);
    std::fs::create_dir_all(&fig_dir).map_err(|source| ScalingError::Io {
        path: fig_dir.clone(),
        source,
    })?;

    let mut t = String::new();
    let _ = writeln!(t, "# Predictable scaling — ladder `{}`\n", ladder.name);
    if !ladder.description.is_empty() {
        let _ = writeln!(t, "{}\n", ladder.description);
    }
    let _ = writeln!(
        t,
        "Every run uses one recipe: vocab {}, context {}, {:?} schedule (warm-up {:.0}% of steps{}), \
         {} tokens per weight (non-embedding + LM head), peak LR {} at width {} scaled by (width ratio)^{}, \
         init std ∝ 1/sqrt(width), AdamW β2 {}, weight decay {}. Loss is final validation bits per byte on the \
         same {} held-out tokens for every run. Compute is the engine's exact matmul FLOP count \
         (blocks, attention, LM head; forward and backward).\n",
        ladder.data.vocab_size,
        ladder.recipe.seq_len,
        ladder.recipe.schedule,
        ladder.recipe.warmup_frac * 100.0,
        match ladder.recipe.schedule {
            crate::ladder::ScheduleKind::Wsd => format!(", (1−sqrt) cooldown over the last {:.0}%", ladder.recipe.cooldown_frac * 100.0),
            crate::ladder::ScheduleKind::Cosine => format!(", cosine to {}x", ladder.recipe.min_lr_ratio),
        },
        ladder.recipe.tokens_per_param,
        ladder.recipe.base_lr,
        ladder.recipe.base_width,
        ladder.recipe.lr_width_exponent,
        ladder.recipe.beta2,
        ladder.recipe.weight_decay,
        ladder.recipe.eval_tokens
    );

    let _ = writeln!(t, "## Predictions\n");
    if regs.is_empty() {
        let _ = writeln!(t, "None registered yet.\n");
    } else {
        let _ = writeln!(
            t,
            "| prediction | target | fit points ≤ | extrapolation | predicted (90% interval) | actual | relative error | reducible-loss error | equivalent compute | inside interval |"
        );
        let _ = writeln!(t, "|---|---|---:|---:|---|---:|---:|---:|---:|:---:|");
        for r in &regs {
            let p = &r.prediction;
            let (actual, rel, red, eq, inside) = match &r.verification {
                Some(v) => (
                    format!("{:.4}", v.actual_bpb),
                    format!("{:.2}%", v.relative_error * 100.0),
                    format!("{:+.1}%", v.reducible_relative_error * 100.0),
                    v.equivalent_compute_factor.map_or("—".into(), |f| format!("{f:.2}x")),
                    if v.inside_interval { "yes" } else { "no" }.to_string(),
                ),
                None => ("not trained".into(), "—".into(), "—".into(), "—".into(), "—".into()),
            };
            let _ = writeln!(
                t,
                "| `{}` | `{}` ({:.2e} FLOPs) | {:.0e} | {:.0}x | {:.4} [{:.4}, {:.4}] | {actual} | {rel} | {red} | {eq} | {inside} |",
                p.name, p.target, p.target_flops, p.max_fraction, p.extrapolation, p.predicted_bpb, p.interval90[0], p.interval90[1]
            );
        }
        let _ = writeln!(t);
        for r in &regs {
            let p = &r.prediction;
            let actual = r.verification.as_ref().map(|v| v.actual_bpb);
            let png = plot::loss_figure(&fig_dir.join(format!("loss_{}.svg", p.name)), &points, p, actual)?;
            let name = png.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let _ = writeln!(
                t,
                "### `{}`\n\nFit `{}` on {} rungs ({}), registered {} \
                 (ladder sha256 `{}`, data manifest sha256 `{}`).{}\n",
                p.name,
                p.law.formula(),
                p.points.len(),
                p.points.iter().map(|x| format!("`{}`", x.rung)).collect::<Vec<_>>().join(", "),
                p.created.utc,
                &p.ladder_sha256[..12.min(p.ladder_sha256.len())],
                &p.data_manifest_sha256[..12.min(p.data_manifest_sha256.len())],
                match &r.verification {
                    Some(v) if !v.registered_before_training => " **Warning: registered after the target started training.**",
                    _ => "",
                }
            );
            if let Some(sel) = &p.selection {
                selection_section(&mut t, sel, p.target_flops);
            }
            match (&p.chinchilla.law, p.chinchilla.predicted_bpb) {
                (Some(l), Some(pred)) => {
                    let _ = writeln!(
                        t,
                        "Chinchilla view on {} runs: `L(N, D) = {:.3} + {:.3}/N^{:.3} + {:.3}/D^{:.3}` predicts {pred:.4}{}.\n",
                        p.chinchilla.points,
                        l.e,
                        l.a,
                        l.alpha,
                        l.b,
                        l.beta,
                        actual.map_or(String::new(), |a| format!(" ({:+.2}% vs actual)", (pred - a) / a * 100.0))
                    );
                }
                _ => {
                    let _ = writeln!(
                        t,
                        "Chinchilla view: no fit ({}).\n",
                        p.chinchilla.error.as_deref().unwrap_or("unknown reason")
                    );
                }
            }
            let _ = writeln!(t, "![loss vs compute]({FIGURES_DIR}/{name})\n");
            if let Some(cap) = &p.capability {
                capability_section(
                    &mut t,
                    &fig_dir,
                    p,
                    cap,
                    r.verification.as_ref().and_then(|v| v.capability.as_ref()),
                )?;
            }
        }
    }
    probe_section(&mut t, &fig_dir, out, &rungs, &targets)?;

    let _ = writeln!(t, "## Runs\n");
    let _ = writeln!(
        t,
        "| run | seed | d × layers × heads | params | non-embedding | tokens | FLOPs | batch × steps | LR | wall time | val bits/byte |"
    );
    let _ = writeln!(t, "|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|");
    for r in rungs.iter().chain(&targets) {
        let _ = writeln!(
            t,
            "| `{}`{} | {} | {} × {} × {} | {} | {} | {} | {:.3e} | {} × {} | {:.2e} | {} | {:.4} |",
            r.name,
            match (r.kind, r.on_recipe) {
                (crate::sweep::RunKind::Target, _) => " (target)",
                (_, false) => " (off-recipe)",
                _ => "",
            },
            r.seed,
            r.d_model,
            r.n_layers,
            r.n_heads,
            r.params,
            r.non_embedding_params,
            r.tokens,
            r.train_flops,
            r.batch_size,
            r.steps,
            r.lr,
            secs(r.wall_secs),
            r.val_bpb
        );
    }
    let total: f64 = rungs.iter().chain(&targets).map(|r| r.wall_secs).sum();
    let _ = writeln!(t, "\nTraining wall time, all runs: {}.\n", secs(total));
    let path = out.join(REPORT_FILE);
    std::fs::write(&path, t).map_err(|source| ScalingError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn file_name(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string()
}

/// Figure 2 and its table: `−E[log pass_rate]` per difficulty bucket.
fn capability_section(
    t: &mut String,
    fig_dir: &Path,
    p: &Prediction,
    cap: &CapabilityRegistration,
    check: Option<&CapabilityVerification>,
) -> Result<(), ScalingError> {
    let _ = writeln!(
        t,
        "Capability (held-out coding tasks), fit on {} runs <= {:.0e} of the target's compute:\n",
        cap.runs.len(),
        cap.max_fraction
    );
    let (Some(fit), Some(pred)) = (&cap.fit, &cap.prediction) else {
        let _ = writeln!(t, "no capability fit ({}).\n", cap.error.as_deref().unwrap_or("unknown reason"));
        return Ok(());
    };
    let _ = writeln!(
        t,
        "{} tasks measured, {} dropped (no passing probability under some fitted run). A task's pass rate is p̂, the exact \
         probability that sampling at the ladder's temperature writes its reference or one of the distinct passing completions \
         the samples found, then stops: a lower bound of the pass rate with no sampling noise, finite for the smallest models \
         (crates/scaling/src/capability.rs).\n",
        fit.tasks_measured, fit.tasks_dropped
    );
    let _ = writeln!(
        t,
        "| bucket | tasks | predicted −E[log pass rate] (90% interval) | actual | inside |\n|---|---:|---|---:|:---:|"
    );
    let rows = fit.buckets.iter().zip(&pred.buckets).chain([(&fit.aggregate, &pred.aggregate)]);
    for (i, (b, bp)) in rows.enumerate() {
        let actual = check.and_then(|c| c.buckets.get(i).or(if i == fit.buckets.len() { Some(&c.aggregate) } else { None }));
        let _ = writeln!(
            t,
            "| {} | {} | {:.3} [{:.3}, {:.3}] | {} | {} |",
            b.bucket.map_or("all".to_string(), |x| x.to_string()),
            b.task_ids.len(),
            -bp.mean_log_pass_rate,
            -bp.interval90.1,
            -bp.interval90.0,
            actual.map_or("—".to_string(), |a| format!("{:.3}", -a.actual_mean_log_pass_rate)),
            actual.map_or("—", |a| if a.inside_interval { "yes" } else { "no" })
        );
    }
    let series: Vec<plot::Series> = fit
        .buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let lo = b.points.iter().map(|q| q.0).fold(f64::INFINITY, f64::min);
            let grid: Vec<f64> = (0..=60)
                .map(|k| (lo.ln() + (p.target_flops / lo).ln() * k as f64 / 60.0).exp())
                .collect();
            plot::Series {
                label: format!("bucket {}", i),
                points: b.points.clone(),
                curve: grid.into_iter().map(|c| (c, b.law.eval(c))).collect(),
                held_out: check
                    .and_then(|c| c.buckets.get(i))
                    .map(|a| vec![(p.target_flops, -a.actual_mean_log_pass_rate)])
                    .unwrap_or_default(),
            }
        })
        .collect();
    let png = plot::series_figure(
        &fig_dir.join(format!("capability_{}.svg", p.name)),
        &format!(
            "Capability prediction `{}`: −mean log pass rate per bucket (triangles: target)",
            p.name
        ),
        "−mean log pass rate",
        &series,
        None,
    )?;
    let _ = writeln!(t, "\n![capability vs compute]({FIGURES_DIR}/{})\n", file_name(&png));
    Ok(())
}

/// Both candidate compute laws, their forward-chaining cross-validation and
/// the choice, so a reader can see why the registered law has the form it has.
fn selection_section(t: &mut String, sel: &LawSelection, target_flops: f64) {
    let _ = writeln!(
        t,
        "Model selection by forward-chaining cross-validation: each form is refitted on the runs below each of the largest \
         distinct compute values in turn and scored by the mean |ln(predicted/actual)| on the held-out larger runs.\n"
    );
    let _ = writeln!(
        t,
        "| form | fit on every point | prediction at target | CV folds (held out from: error) | CV score | chosen |\n|---|---|---:|---|---:|:---:|"
    );
    for c in &sel.candidates {
        let (fit, pred) = match (&c.law, &c.fit_error) {
            (Some(l), _) => (format!("`{}`", l.formula()), format!("{:.4}", l.predict(target_flops))),
            (None, e) => (format!("failed: {}", e.as_deref().unwrap_or("unknown")), "—".into()),
        };
        let folds = if c.folds.is_empty() {
            "none".to_string()
        } else {
            c.folds
                .iter()
                .map(|f| {
                    format!(
                        "{:.2e}: {}",
                        f.held_out_from,
                        f.error.map_or("fit failed".to_string(), |e| format!("{:.2}%", e * 100.0))
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let _ = writeln!(
            t,
            "| `{}` | {fit} | {pred} | {folds} | {} | {} |",
            c.form.formula(),
            c.cv_score.map_or("—".to_string(), |s| format!("{:.3}%", s * 100.0)),
            if c.form == sel.chosen { "yes" } else { "" }
        );
    }
    let _ = writeln!(t, "\nChose `{}`: {}.\n", sel.chosen.formula(), sel.reason);
}

/// Figure 3: the hindsight-neglect probe's accuracy across the ladder.
fn probe_section(t: &mut String, fig_dir: &Path, out: &Path, rungs: &[RunRecord], targets: &[RunRecord]) -> Result<(), ScalingError> {
    let mut points = Vec::new();
    let mut held = Vec::new();
    let mut chance = None;
    let mut rows = Vec::new();
    for (r, is_target) in rungs.iter().map(|r| (r, false)).chain(targets.iter().map(|r| (r, true))) {
        let path = run_dir(out, &r.name, r.seed).join(CAPABILITY_FILE);
        if !path.exists() {
            continue;
        }
        let c: RunCapability = read_json(&path)?;
        let log_p = c.pass_rates.mean_log_pass_rate();
        rows.push((r.name.clone(), r.seed, r.train_flops, c.mean_pass_rate, log_p, c.probe.clone()));
        if let Some(p) = c.probe {
            chance = Some(p.chance);
            if is_target {
                held.push((r.train_flops, p.accuracy));
            } else {
                points.push((r.train_flops, p.accuracy));
            }
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let _ = writeln!(t, "## Capability measurements per run\n");
    let _ = writeln!(
        t,
        "| run | seed | FLOPs | sampled pass rate | −E[log p̂] | probe accuracy (90% CI) |\n|---|---:|---:|---:|---:|---|"
    );
    for (name, seed, flops, pass, log_p, probe) in &rows {
        let _ = writeln!(
            t,
            "| `{name}` | {seed} | {flops:.3e} | {pass:.4} | {} | {} |",
            log_p.map_or("—".to_string(), |l| format!("{:.3}", -l)),
            probe.as_ref().map_or("—".to_string(), |p| format!(
                "{:.3} [{:.3}, {:.3}] of {}",
                p.accuracy, p.ci90.0, p.ci90.1, p.n
            ))
        );
    }
    if let Some(ch) = chance {
        let png = plot::series_figure(
            &fig_dir.join("probe_hindsight.svg"),
            "Hindsight-neglect probe: accuracy vs compute (triangle: target)",
            "accuracy",
            &[plot::Series {
                label: "runs".into(),
                points,
                curve: Vec::new(),
                held_out: held,
            }],
            Some((ch, "chance")),
        )?;
        let _ = writeln!(t, "\n![probe accuracy vs compute]({FIGURES_DIR}/{})\n", file_name(&png));
    }
    Ok(())
}

/// Copies what is worth committing — `report.md`, the figures, the ladder and
/// every prediction/verification JSON — from a run folder to `dest` (e.g.
/// `docs/scaling`), leaving shards, checkpoints and models behind.
pub fn publish(out: &Path, dest: &Path) -> Result<Vec<PathBuf>, ScalingError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScalingError::Io { path, source }
    };
    let mut copied = Vec::new();
    let mut copy = |from: PathBuf, to: PathBuf| -> Result<(), ScalingError> {
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::copy(&from, &to).map_err(io(&from))?;
        copied.push(to);
        Ok(())
    };
    copy(out.join(REPORT_FILE), dest.join(REPORT_FILE))?;
    copy(out.join(crate::pipeline::LADDER_COPY), dest.join(crate::pipeline::LADDER_COPY))?;
    let figs = out.join(FIGURES_DIR);
    for e in std::fs::read_dir(&figs).map_err(io(&figs))? {
        let e = e.map_err(io(&figs))?;
        copy(e.path(), dest.join(FIGURES_DIR).join(e.file_name()))?;
    }
    let preds = out.join(crate::predict::PREDICTIONS_DIR);
    if preds.is_dir() {
        for e in std::fs::read_dir(&preds).map_err(io(&preds))? {
            let dir = e.map_err(io(&preds))?.path();
            for f in [PREDICTION_FILE, VERIFICATION_FILE] {
                if dir.join(f).exists() {
                    let name = dir.file_name().map(PathBuf::from).unwrap_or_default();
                    copy(dir.join(f), dest.join(crate::predict::PREDICTIONS_DIR).join(name).join(f))?;
                }
            }
        }
    }
    Ok(copied)
}
