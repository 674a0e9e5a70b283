//! `ferrogpt sft`

use std::path::PathBuf;

use anyhow::Context;
use ferrogpt_train::{train, SftPlan, TrainOptions};

#[derive(clap::Args)]
pub struct SftArgs {
    /// The model folder to fine-tune (e.g. runs/speedrun/model)
    #[arg(long)]
    pub model: PathBuf,
    /// Conversations to train on: JSONL in OpenAI's chat fine-tuning format
    /// ({"messages": [{"role": ..., "content": ...}, ...]} per line); only assistant replies are trained
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out conversations (same format) to validate on
    #[arg(long)]
    pub val: PathBuf,
    /// Where checkpoints, metrics and the fine-tuned model folder (OUT/model) go
    #[arg(long)]
    pub out: PathBuf,
    /// Passes over the conversations
    #[arg(long, default_value_t = 3.0)]
    pub epochs: f64,
    /// Peak learning rate
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Rows of packed conversations per step
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Tokens per row (at most the model's context)
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue exactly from the newest checkpoint in OUT (same flags and files)
    #[arg(long)]
    pub resume: bool,
    /// No progress bar
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: SftArgs) -> anyhow::Result<()> {
    let plan = SftPlan {
        epochs: args.epochs,
        lr: args.lr,
        batch_size: args.batch_size,
        seq_len: args.seq_len,
        seed: args.seed,
        ..SftPlan::new(&args.model, &args.data, &args.val, &args.out)
    };
    let cfg = plan
        .config()
        .with_context(|| format!("planning fine-tuning of {}", args.model.display()))?;
    let s = train(
        &cfg,
        &TrainOptions {
            resume: args.resume,
            progress: !args.quiet,
        },
    )
    .with_context(|| format!("fine-tuning {} on {}", args.model.display(), args.data.display()))?;
    println!(
        "fine-tuned {} steps ({} tokens incl. packing) in {:.1}s: {:.0} tokens/s",
        s.steps, s.tokens, s.train_secs, s.tokens_per_sec
    );
    println!(
        "validation on the replies of {}: {:.4} nats/token = {:.4} bits/byte",
        args.val.display(),
        s.val_loss,
        s.val_bpb
    );
    println!("model: {}\nmetrics: {}", s.model_dir.display(), s.metrics.display());
    Ok(())
}
