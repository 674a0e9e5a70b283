//! `ferrogpt sft`

use std::path::PathBuf;

use anyhow::Context;
use ferrogpt_chatdata::Split;
use ferrogpt_train::sft::write_conversations;
use ferrogpt_train::{train, SftPlan, TrainOptions};

#[derive(clap::Args)]
pub struct SftArgs {
    /// The model folder to fine-tune (e.g. runs/speedrun/model)
    #[arg(long)]
    pub model: PathBuf,
    /// Conversations to train on: JSONL in OpenAI's chat fine-tuning format
    /// ({"messages": [{"role": ..., "content": ...}, ...]} per line); only assistant replies are
    /// trained. Default: --generate conversations of ferrogpt-chatdata's train split, written to OUT/train.jsonl
    #[arg(long, requires = "val")]
    pub data: Option<PathBuf>,
    /// Held-out conversations (same format) to validate on. Default: ferrogpt-chatdata's
    /// held-out test split, written to OUT/val.jsonl
    #[arg(long, requires = "data")]
    pub val: Option<PathBuf>,
    /// Conversations to generate when --data is not given (a tenth as many held out)
    #[arg(long, default_value_t = 6000)]
    pub generate: usize,
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
    #[command(flatten)]
    pub stage: super::StageFlags,
}

pub fn run(args: SftArgs) -> anyhow::Result<()> {
    let (data, val) = match (args.data, args.val) {
        (Some(data), Some(val)) => (data, val),
        _ => {
            let (data, val) = (args.out.join("train.jsonl"), args.out.join("val.jsonl"));
            write_conversations(&data, Split::Train, args.generate, args.stage.seed)?;
            write_conversations(&val, Split::Test, (args.generate / 10).max(1), args.stage.seed.wrapping_add(1))?;
            eprintln!(
                "generated {} training and {} held-out conversations in {}",
                args.generate,
                (args.generate / 10).max(1),
                args.out.display()
            );
            (data, val)
        }
    };
    let plan = SftPlan {
        epochs: args.epochs,
        lr: args.lr,
        batch_size: args.batch_size,
        seq_len: args.seq_len,
        seed: args.stage.seed,
        ..SftPlan::new(&args.model, &data, &val, &args.out)
    };
    let cfg = plan
        .config()
        .with_context(|| format!("planning fine-tuning of {}", args.model.display()))?;
    let s = train(
        &cfg,
        &TrainOptions {
            resume: args.stage.resume,
            progress: !args.stage.quiet,
        },
    )
    .with_context(|| format!("fine-tuning {} on {}", args.model.display(), data.display()))?;
    println!(
        "fine-tuned {} steps ({} tokens incl. packing) in {:.1}s: {:.0} tokens/s",
        s.steps, s.tokens, s.train_secs, s.tokens_per_sec
    );
    println!(
        "validation on the replies of {}: {:.4} nats/token = {:.4} bits/byte",
        val.display(),
        s.val_loss,
        s.val_bpb
    );
    println!("model: {}\nmetrics: {}", s.model_dir.display(), s.metrics.display());
    Ok(())
}
