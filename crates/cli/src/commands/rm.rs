//! `ferrogpt rm train`: the reward model and the safety and moderation classifiers.

use std::path::PathBuf;

use anyhow::Context;
use ferrogpt_train::classifier::{train_scorer, ScorerKind, ScorerPlan};

#[derive(clap::Subcommand)]
pub enum RmCommand {
    /// Train a scorer from a language model folder on ferrogpt-chatdata's generated data,
    /// then report its accuracy on held-out templates (OUT/eval.json)
    Train(RmTrainArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    /// One score per reply, pairwise loss on preference pairs (chosen above rejected)
    Reward,
    /// The rule-based reward model's grader: a reply's class (desired refusal, undesired
    /// refusal, disallowed content, safe completion, compliance)
    Safety,
    /// A request's policy category; served as POST /v1/moderations
    Moderation,
}

#[derive(clap::Args)]
pub struct RmTrainArgs {
    /// The language model folder to start from (usually the SFT model)
    #[arg(long)]
    pub model: PathBuf,
    /// Where checkpoints, metrics, the scorer's model folder (OUT/model) and eval.json go
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = KindArg::Reward)]
    pub kind: KindArg,
    /// Generated train-split examples to draw training items from
    #[arg(long, default_value_t = 4000)]
    pub examples: usize,
    /// Generated test-split examples (held-out templates) to evaluate on
    #[arg(long, default_value_t = 600)]
    pub test_examples: usize,
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    /// Peak learning rate
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// Rows of packed sequences per step
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Tokens per row (at most the model's context)
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    #[command(flatten)]
    pub stage: super::StageFlags,
}

pub fn run(cmd: RmCommand) -> anyhow::Result<()> {
    let RmCommand::Train(args) = cmd;
    let kind = match args.kind {
        KindArg::Reward => ScorerKind::Reward,
        KindArg::Safety => ScorerKind::Safety,
        KindArg::Moderation => ScorerKind::Moderation,
    };
    let plan = ScorerPlan {
        train_examples: args.examples,
        test_examples: args.test_examples,
        steps: args.steps,
        batch_size: args.batch_size,
        seq_len: args.seq_len,
        lr: args.lr,
        seed: args.stage.seed,
        ..ScorerPlan::new(kind, &args.model, &args.out)
    };
    let (summary, eval) = train_scorer(&plan, args.stage.resume, !args.stage.quiet)
        .with_context(|| format!("training a {} from {}", kind.as_str(), args.model.display()))?;
    println!(
        "{}: {} steps in {:.1}s, last training loss {:.4}",
        kind.as_str(),
        summary.steps,
        summary.train_secs,
        summary.last.loss
    );
    println!("held-out templates: accuracy {:.3} on {} items", eval.accuracy, eval.items);
    if let Some(auroc) = eval.auroc {
        println!("flagged-vs-not AUROC {auroc:.3}");
    }
    for (tag, n, accuracy) in &eval.per_tag {
        println!("  {tag:<28} {n:>5}  {accuracy:.3}");
    }
    println!("model: {}", summary.model_dir.display());
    Ok(())
}
