//! `ferrogpt speedrun`

use std::path::{Path, PathBuf};

use anyhow::Context;

use ferrogpt_train::speedrun::{speedrun, Preset};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PresetArg {
    /// Under 2 minutes: a pipeline check
    Smoke,
    /// The reference model on man pages, English corpora and synthetic data (~20 minutes of
    /// pretraining on 2 cores), then every post-training stage
    Default,
    /// An overnight run
    Large,
}

#[derive(clap::Args)]
pub struct SpeedrunArgs {
    /// How big a run
    #[arg(long, value_enum, default_value = "default")]
    pub preset: PresetArg,
    /// Output folder (data, checkpoints, metrics, report.md, the pretrained model in DIR/base,
    /// fine-tuning in DIR/sft, the reward model and classifiers, RLHF in DIR/rlhf, and the chat
    /// model in DIR/model)
    #[arg(long, default_value = "runs/speedrun")]
    pub out: PathBuf,
    /// No progress bars
    #[arg(long)]
    pub quiet: bool,
    /// Also run a scaling ladder (`ferrogpt scale run --preset NAME`) into DIR/scaling
    /// and link its report from report.md
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(ferrogpt_scaling::ladder::PRESETS.iter().map(|p| p.0)))]
    pub scaling: Option<String>,
}

pub fn run(args: SpeedrunArgs) -> anyhow::Result<()> {
    let preset = match args.preset {
        PresetArg::Smoke => Preset::Smoke,
        PresetArg::Default => Preset::Default,
        PresetArg::Large => Preset::Large,
    };
    let r = speedrun(preset, &args.out, !args.quiet)?;
    let s = &r.summary;
    println!(
        "speedrun `{}` done in {:.1}s: validation {:.4} bits/byte (unigram baseline {:.4}), {:.0} tokens/s, MFU {:.1}%",
        preset.name(),
        r.wall_secs,
        s.val_bpb,
        r.unigram_bpb,
        s.tokens_per_sec,
        s.mfu * 100.0
    );
    let cards = [&r.post.base_card, &r.post.sft_card, &r.post.rlhf_card];
    let [disallowed, over_refusal, adherence] = [
        cards.map(|c| c.disallowed_responses.describe()),
        cards.map(|c| c.over_refusal.describe()),
        cards.map(|c| c.steerability.describe()),
    ];
    println!(
        "base -> fine-tuned -> RLHF: responses to disallowed requests {}; over-refusal {}; system-message adherence {}",
        disallowed.join(" -> "),
        over_refusal.join(" -> "),
        adherence.join(" -> ")
    );
    for goal in ferrogpt_train::post_training::goals(&r.post) {
        println!(
            "goal: {}: {} ({})",
            goal.name,
            goal.measured,
            if goal.reached { "reached" } else { "not reached" }
        );
    }
    multiple_choice_stage(preset, &args.out, &r.report, !args.quiet)?;
    if let Some(name) = &args.scaling {
        scaling_stage(name, &args.out, &r.report, !args.quiet)?;
    }
    println!(
        "report: {}\nchat model: {}\nbase model: {}",
        r.report.display(),
        r.model_dir.display(),
        r.base_dir.display()
    );
    Ok(())
}

/// Questions of each multiple-choice task a preset scores (evenly spaced through the task).
fn mc_questions(preset: Preset) -> usize {
    match preset {
        Preset::Smoke => 40,
        Preset::Default => 300,
        Preset::Large => 2000,
    }
}

/// Exam-style multiple choice (EXAMS, from the openai/evals registry) and TruthfulQA
/// (BIG-bench, MC1) for the base, fine-tuned and RLHF models side by side, with expected
/// calibration error and one reliability diagram per task (the GPT-4 report's calibration
/// figure), appended to the report. A task whose data is not installed gets a line with its
/// install command instead. It lives here because ferrogpt-train must not depend on
/// ferrogpt-evals, whose local-model adapter is the CLI's.
fn multiple_choice_stage(preset: Preset, out: &Path, report: &Path, progress: bool) -> anyhow::Result<()> {
    use ferrogpt_evals::multiple_choice::{evenly_spaced, write_outputs, McTask};
    use ferrogpt_train::post_training::RLHF_DIR;
    use ferrogpt_train::speedrun::BASE_DIR;
    use std::fmt::Write as _;

    let models = [
        ("base", out.join(BASE_DIR)),
        ("sft", out.join("sft/model")),
        ("rlhf", out.join(RLHF_DIR).join("model")),
    ];
    let mut section = String::from(concat!(
        "\n## Multiple choice and calibration\n\n",
        "Each choice scored by its log-likelihood after the question (lm-evaluation-harness style); ",
        "confidence = softmax over the choices; ECE over 10 confidence bins; 95% Wilson intervals. ",
        "These benchmarks are measured, never trained on.\n\n",
        "| task | model | questions | accuracy | acc_norm | chance | ECE |\n|---|---|---:|---:|---:|---:|---:|\n",
    ));
    let mut missing = Vec::new();
    let mut diagrams = Vec::new();
    for task in [McTask::Exams { language: None }, McTask::TruthfulQa] {
        let loaded = match task.load(None) {
            Ok(loaded) => loaded,
            Err(e) => {
                missing.push(format!("- `{task}`: not measured: {e}"));
                continue;
            }
        };
        let questions = evenly_spaced(loaded.questions.clone(), mc_questions(preset));
        let scorers = models
            .iter()
            .map(|(label, dir)| Ok((label.to_string(), format!("local:{}", dir.display()), super::eval::load_local(dir)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let runs = super::eval::score_mc_models(&questions, scorers, 1, progress)?;
        let dir = out.join("mc").join(task.to_string().replace(':', "-"));
        write_outputs(&dir, &task, &loaded, &questions, &runs)?;
        for run in &runs {
            let r = &run.report;
            let _ = writeln!(
                section,
                "| {task} | {} | {} | {:.3} ({:.3}–{:.3}) | {:.3} | {:.3} | {:.3} |",
                run.label, r.n, r.accuracy, r.accuracy_ci95[0], r.accuracy_ci95[1], r.acc_norm, r.chance, r.ece
            );
        }
        let relative = dir.strip_prefix(out).unwrap_or(&dir).join("calibration.svg");
        diagrams.push(format!("![{task}: reliability diagram]({})", relative.display()));
    }
    let _ = writeln!(
        section,
        "
{}
",
        diagrams.join("\n\n")
    );
    for line in missing {
        println!("{line}");
        let _ = writeln!(section, "{line}");
    }
    let mut text = std::fs::read_to_string(report).with_context(|| format!("reading {}", report.display()))?;
    text.push_str(&section);
    std::fs::write(report, text).with_context(|| format!("writing {}", report.display()))?;
    Ok(())
}

/// The optional scaling stage: a whole ladder (sweep, registered predictions,
/// verification) in `out/scaling`, summarised at the end of the speedrun's report.
/// It lives here because ferrogpt-train must not depend on ferrogpt-scaling.
fn scaling_stage(preset: &str, out: &Path, report: &Path, progress: bool) -> anyhow::Result<()> {
    use ferrogpt_scaling::ladder::{preset_text, Ladder};
    use ferrogpt_scaling::pipeline::{run_ladder, RunOptions};
    use std::fmt::Write as _;

    let text = preset_text(preset).with_context(|| format!("no scaling preset `{preset}`"))?;
    let ladder = Ladder::from_toml(text, Path::new(&format!("ladders/{preset}.toml")))?;
    let dir = out.join("scaling");
    let o = run_ladder(
        &ladder,
        text,
        &dir,
        RunOptions {
            progress,
            sweep_only: false,
        },
    )?;
    let mut section = format!(
        "\n## Scaling stage (`{preset}` ladder)\n\nWall time {:.0}s; full report: [scaling/report.md](scaling/report.md).\n\n",
        o.wall_secs
    );
    for (_, v) in &o.verifications {
        let _ = writeln!(
            section,
            "- `{}`: target `{}` predicted {:.4} from {:.0}x less compute, actual {:.4} bits/byte: \
             relative error {:.2}%, {} the 90% interval",
            v.name,
            v.target,
            v.predicted_bpb,
            v.extrapolation,
            v.actual_bpb,
            v.relative_error * 100.0,
            if v.inside_interval { "inside" } else { "outside" }
        );
        println!(
            "scaling `{}`: relative error {:.2}% at {:.0}x extrapolation",
            v.name,
            v.relative_error * 100.0,
            v.extrapolation
        );
        if let Some(c) = &v.capability {
            let _ = writeln!(
                section,
                "  - capability (held-out coding tasks): −E[log pass rate] predicted {:.3}, actual {:.3}: relative error {:.1}%, {} \
                 the 90% interval",
                -c.aggregate.predicted_mean_log_pass_rate,
                -c.aggregate.actual_mean_log_pass_rate,
                c.relative_error * 100.0,
                if c.aggregate.inside_interval { "inside" } else { "outside" }
            );
        }
    }
    let mut text = std::fs::read_to_string(report).with_context(|| format!("reading {}", report.display()))?;
    text.push_str(&section);
    std::fs::write(report, text).with_context(|| format!("writing {}", report.display()))?;
    Ok(())
}
