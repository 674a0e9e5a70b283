//! `ferrogpt speedrun`

use std::path::PathBuf;

use ferrogpt_train::speedrun::{speedrun, Preset};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PresetArg {
    /// Under 2 minutes: a pipeline check
    Smoke,
    /// About 20 minutes on 2 cores: the reference model on man pages + synthetic data
    Default,
    /// An overnight run
    Large,
}

#[derive(clap::Args)]
pub struct SpeedrunArgs {
    /// How big a run
    #[arg(long, value_enum, default_value = "default")]
    pub preset: PresetArg,
    /// Output folder (data, checkpoints, metrics, report.md, and the model in DIR/model)
    #[arg(long, default_value = "runs/speedrun")]
    pub out: PathBuf,
    /// No progress bars
    #[arg(long)]
    pub quiet: bool,
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
    println!("report: {}\nmodel: {}", r.report.display(), r.model_dir.display());
    Ok(())
}
