//! `ferrogpt scale run | predict | verify | report | plan | backtest`: predictable
//! scaling (issue 4). The work is in ferrogpt-scaling (`pipeline`); this file turns
//! flags into its requests and prints what comes back.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ferrogpt_scaling::ladder::{preset_text, Ladder, PRESETS};
use ferrogpt_scaling::pipeline::{
    backtest_folder, fit_rungs, load_bound, predict as predict_folder, run_ladder, verify_predictions, PredictRequest, RunOptions,
};
use ferrogpt_scaling::report::write_report;

#[derive(clap::Subcommand)]
pub enum ScaleCommand {
    /// Train the ladder, register its predictions, train the targets, verify, report
    Run(RunArgs),
    /// Register a prediction for a target from the finished rungs (before the target trains)
    Predict(PredictArgs),
    /// Train a prediction's target (or read its finished run) and write verification.json
    Verify(VerifyArgs),
    /// Rebuild DIR/report.md and DIR/figures from the run's files
    Report(ReportArgs),
    /// Print a ladder's runs (shapes, tokens, FLOPs) without training anything
    Plan(LadderArg),
    /// Hindsight check (not a registered prediction): fit the loss and capability laws on the
    /// finished runs at or below --max-flops and compare with every larger finished run
    Backtest(BacktestArgs),
}

#[derive(clap::Args)]
pub struct BacktestArgs {
    /// A folder `ferrogpt scale run` wrote
    #[arg(long)]
    pub out: PathBuf,
    /// Fit on the on-recipe runs with at most this many training FLOPs
    #[arg(long)]
    pub max_flops: f64,
}

#[derive(clap::Args)]
pub struct LadderArg {
    /// Ladder TOML file
    #[arg(long, conflicts_with = "preset")]
    pub ladder: Option<PathBuf>,
    /// A shipped ladder (ladders/<name>.toml)
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(PRESETS.iter().map(|p| p.0)))]
    pub preset: Option<String>,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub ladder: LadderArg,
    /// Output folder (default runs/scale-<ladder name>)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Stop after the rungs and the registered predictions (targets untrained)
    #[arg(long)]
    pub sweep_only: bool,
    /// No progress bar
    #[arg(long)]
    pub quiet: bool,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// A folder `ferrogpt scale run` wrote
    #[arg(long)]
    pub out: PathBuf,
    /// Also copy the report, figures, ladder and prediction JSONs here (e.g. docs/scaling)
    #[arg(long)]
    pub publish: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct PredictArgs {
    #[arg(long)]
    pub out: PathBuf,
    /// A [[target]] of the folder's ladder
    #[arg(long)]
    pub target: String,
    /// Refuse fit points above this fraction of the target's compute
    #[arg(long)]
    pub max_fraction: f64,
    /// Compute limit of the capability fit, as a fraction of the target's (GPT-4 used 1/1000)
    #[arg(long, default_value_t = 1e-3)]
    pub capability_max_fraction: f64,
    /// Name of the prediction (default: <1/max-fraction>x-<target>)
    #[arg(long)]
    pub name: Option<String>,
    /// Fit exactly these rungs (comma-separated) instead of every rung under the fraction
    #[arg(long, value_delimiter = ',')]
    pub rungs: Option<Vec<String>>,
    /// Replace an existing prediction (refused once the target has started)
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long)]
    pub out: PathBuf,
    /// Predictions to verify (default: every registered one)
    #[arg(long, value_delimiter = ',')]
    pub name: Option<Vec<String>>,
    #[arg(long)]
    pub quiet: bool,
}

fn resolve(arg: &LadderArg) -> anyhow::Result<(Ladder, String)> {
    match (&arg.ladder, &arg.preset) {
        (Some(path), _) => Ok(Ladder::from_file(path)?),
        (None, Some(name)) => {
            let text = preset_text(name).with_context(|| format!("no preset `{name}`"))?;
            Ok((
                Ladder::from_toml(text, Path::new(&format!("ladders/{name}.toml")))?,
                text.to_string(),
            ))
        }
        (None, None) => anyhow::bail!("give --ladder FILE or --preset NAME"),
    }
}

pub fn run(cmd: ScaleCommand) -> anyhow::Result<()> {
    match cmd {
        ScaleCommand::Run(a) => run_all(a),
        ScaleCommand::Predict(a) => predict(a),
        ScaleCommand::Verify(a) => verify(a),
        ScaleCommand::Report(a) => {
            let (ladder, _) = load_bound(&a.out)?;
            println!("report: {}", write_report(&ladder, &a.out)?.display());
            if let Some(dest) = &a.publish {
                let files = ferrogpt_scaling::report::publish(&a.out, dest)?;
                println!("published {} files to {}", files.len(), dest.display());
            }
            Ok(())
        }
        ScaleCommand::Plan(a) => plan(a),
        ScaleCommand::Backtest(a) => backtest(a),
    }
}

fn run_all(a: RunArgs) -> anyhow::Result<()> {
    let (ladder, text) = resolve(&a.ladder)?;
    let out = a.out.unwrap_or_else(|| PathBuf::from(format!("runs/scale-{}", ladder.name)));
    let o = run_ladder(
        &ladder,
        &text,
        &out,
        RunOptions {
            progress: !a.quiet,
            sweep_only: a.sweep_only,
        },
    )?;
    for (path, p) in &o.predictions {
        println!(
            "prediction `{}` ({}): {:.4} bits/byte, 90% interval [{:.4}, {:.4}], {:.0}x extrapolation",
            p.name,
            path.display(),
            p.predicted_bpb,
            p.interval90[0],
            p.interval90[1],
            p.extrapolation
        );
    }
    for (path, v) in &o.verifications {
        print_verification(path, v);
    }
    println!(
        "ladder `{}` done in {:.1}s; report: {}",
        ladder.name,
        o.wall_secs,
        o.report.display()
    );
    Ok(())
}

fn print_verification(path: &Path, v: &ferrogpt_scaling::predict::Verification) {
    println!(
        "verification `{}` ({}): actual {:.4} vs predicted {:.4} bits/byte: relative error {:.2}% ({}inside the 90% interval), \
         reducible-loss error {:+.1}%, equivalent compute {}",
        v.name,
        path.display(),
        v.actual_bpb,
        v.predicted_bpb,
        v.relative_error * 100.0,
        if v.inside_interval { "" } else { "not " },
        v.reducible_relative_error * 100.0,
        v.equivalent_compute_factor.map_or("n/a".into(), |f| format!("{f:.2}x"))
    );
    if let Some(c) = &v.capability {
        println!(
            "  capability: -E[log pass rate] actual {:.3} vs predicted {:.3} [{:.3}, {:.3}]: relative error {:.1}% ({}inside)",
            -c.aggregate.actual_mean_log_pass_rate,
            -c.aggregate.predicted_mean_log_pass_rate,
            -c.aggregate.interval90.1,
            -c.aggregate.interval90.0,
            c.relative_error * 100.0,
            if c.aggregate.inside_interval { "" } else { "not " }
        );
    }
}

fn predict(a: PredictArgs) -> anyhow::Result<()> {
    let (p, path) = predict_folder(
        &a.out,
        &PredictRequest {
            target: a.target,
            max_fraction: a.max_fraction,
            capability_max_fraction: a.capability_max_fraction,
            name: a.name,
            rungs: a.rungs,
            force: a.force,
        },
    )?;
    println!(
        "registered `{}` at {}: target `{}` ({:.3e} FLOPs) predicted {:.4} bits/byte, 90% interval [{:.4}, {:.4}], \
         from {} rungs ({:.0}x extrapolation)\n{}",
        p.name,
        p.created.utc,
        p.target,
        p.target_flops,
        p.predicted_bpb,
        p.interval90[0],
        p.interval90[1],
        p.points.len(),
        p.extrapolation,
        path.display()
    );
    Ok(())
}

fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let report = verify_predictions(&a.out, a.name.as_deref(), !a.quiet, print_verification)?;
    println!("report: {}", report.display());
    Ok(())
}

fn plan(a: LadderArg) -> anyhow::Result<()> {
    let (ladder, _) = resolve(&a)?;
    println!(
        "{:<12} {:>6} {:>6} {:>10} {:>10} {:>10} {:>6} {:>7} {:>9} {:>10}",
        "run", "width", "layers", "non-emb", "N (+head)", "tokens", "batch", "steps", "lr", "FLOPs"
    );
    for (kind, shapes) in [("", &ladder.rungs), (" (target)", &ladder.targets)] {
        for s in shapes.iter() {
            let p = ladder.plan(s);
            println!(
                "{:<12} {:>6} {:>6} {:>10} {:>10} {:>10} {:>6} {:>7} {:>9.2e} {:>10.3e}{kind}{}",
                p.name,
                p.model.d_model,
                p.model.n_layers,
                p.non_embedding_params,
                p.matmul_params,
                p.tokens,
                p.batch_size,
                p.steps,
                p.lr,
                p.train_flops,
                if p.seeds > 1 {
                    format!(" x{} seeds", p.seeds)
                } else {
                    String::new()
                }
            );
        }
    }
    for pr in &ladder.predictions {
        if let Some(t) = ladder.target(&pr.target) {
            let limit = pr.max_fraction * ladder.plan(t).train_flops;
            let fit = fit_rungs(&ladder, pr);
            println!(
                "prediction `{}`: fit on {} ({} rungs <= {limit:.2e} FLOPs)",
                pr.name,
                fit.join(", "),
                fit.len()
            );
        }
    }
    Ok(())
}

fn backtest(a: BacktestArgs) -> anyhow::Result<()> {
    let outcome = backtest_folder(&a.out, a.max_flops)?;
    let b = &outcome.loss;
    println!(
        "hindsight fit (not a registered prediction) on {} runs <= {:.3e} FLOPs: {}",
        b.fit_runs.len(),
        b.max_flops,
        b.fit_runs.join(", ")
    );
    for c in &b.selection.candidates {
        println!(
            "  {:<14} {}  CV score {}  residual RMS {}{}",
            c.form.formula(),
            c.law.map_or_else(
                || format!("fit failed: {}", c.fit_error.as_deref().unwrap_or("unknown")),
                |l| format!("a {:.4} b {:.5} c {:.4}", l.a, l.b, l.c)
            ),
            c.cv_score.map_or("n/a".into(), |s| format!("{:.3}%", s * 100.0)),
            c.residual_rms.map_or("n/a".into(), |s| format!("{:.3}%", s * 100.0)),
            if c.form == b.selection.chosen { "  (chosen)" } else { "" }
        );
    }
    println!("  chosen because {}", b.selection.reason);
    println!(
        "{:<12} {:>10} {:>8} {:>8} {:>9} {:>8}   by form",
        "run", "FLOPs", "extrap", "actual", "predicted", "error"
    );
    for r in &b.rows {
        println!(
            "{:<12} {:>10.3e} {:>7.0}x {:>8.4} {:>9.4} {:>7.2}%   {}",
            r.run,
            r.train_flops,
            r.extrapolation,
            r.actual_bpb,
            r.predicted_bpb,
            r.relative_error * 100.0,
            r.by_form
                .iter()
                .map(|(f, p)| format!("{}: {}", f.formula(), p.map_or("n/a".into(), |p| format!("{p:.4}"))))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(cap) = &outcome.capability {
        print_capability_backtest(cap);
    }
    Ok(())
}

fn print_capability_backtest(cap: &ferrogpt_scaling::measure::CapabilityBacktest) {
    println!(
        "capability: -E[log pass rate] = alpha*C^-k per difficulty bucket, fit on {} runs ({} of {} tasks kept)",
        cap.fit_runs.len(),
        cap.fit.tasks_measured - cap.fit.tasks_dropped,
        cap.fit.tasks_measured
    );
    for b in cap.fit.buckets.iter().chain([&cap.fit.aggregate]) {
        println!(
            "  bucket {:<3} {:>3} tasks  alpha {:.4} k {:.4}",
            b.bucket.map_or("all".into(), |x| x.to_string()),
            b.task_ids.len(),
            b.law.alpha,
            b.law.k
        );
    }
    println!(
        "{:<14} {:>10} {:>8} {:>9} {:>8} {:>7} {:>6}   per bucket predicted/actual",
        "run", "FLOPs", "extrap", "predicted", "actual", "error", "inside"
    );
    for r in &cap.rows {
        let a = &r.check.aggregate;
        println!(
            "{:<14} {:>10.3e} {:>7.0}x {:>9.3} {:>8.3} {:>6.1}% {:>6}   {}",
            r.run,
            r.train_flops,
            r.extrapolation,
            -a.predicted_mean_log_pass_rate,
            -a.actual_mean_log_pass_rate,
            r.check.relative_error * 100.0,
            if a.inside_interval { "yes" } else { "no" },
            r.check
                .buckets
                .iter()
                .map(|b| format!("{:.2}/{:.2}", -b.predicted_mean_log_pass_rate, -b.actual_mean_log_pass_rate))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}
