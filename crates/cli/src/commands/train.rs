//! `ferrogpt train`

use std::path::PathBuf;

use anyhow::Context;
use ferrogpt_train::{train, TrainConfig, TrainOptions};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Training config (TOML; see configs/tiny.toml). Unknown or out-of-range keys are errors.
    #[arg(long)]
    pub config: PathBuf,
    /// Continue exactly from the newest checkpoint in the config's out_dir
    #[arg(long)]
    pub resume: bool,
    /// No progress bar
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let cfg = TrainConfig::from_file(&args.config)?;
    let s = train(
        &cfg,
        &TrainOptions {
            resume: args.resume,
            progress: !args.quiet,
        },
    )
    .with_context(|| format!("training with {}", args.config.display()))?;
    println!(
        "trained {} steps ({} tokens) in {:.1}s: {:.0} tokens/s, MFU {:.1}% {}",
        s.steps,
        s.tokens,
        s.train_secs,
        s.tokens_per_sec,
        s.mfu * 100.0,
        s.peak.describe()
    );
    println!(
        "final train loss {:.4} nats/token; validation {:.4} nats/token = {:.4} bits/byte",
        s.final_loss, s.val_loss, s.val_bpb
    );
    println!(
        "model: {}\nmetrics: {}\nloss curve: {}",
        s.model_dir.display(),
        s.metrics.display(),
        s.loss_curve.display()
    );
    Ok(())
}
