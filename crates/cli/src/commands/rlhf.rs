//! `ferrogpt rlhf`

use std::path::PathBuf;

use anyhow::Context;
use ferrogpt_evals::rbrm::ZeroShotGrader;
use ferrogpt_train::rlhf::{rlhf, rlhf_with_grader, RlhfPlan};

#[derive(clap::Args)]
pub struct RlhfArgs {
    /// The fine-tuned model folder: the policy's start and the KL reference
    #[arg(long)]
    pub model: PathBuf,
    /// The reward model folder (`ferrogpt rm train --kind reward`)
    #[arg(long)]
    pub reward_model: PathBuf,
    /// The safety classifier folder, the rule-based reward model's grader (`ferrogpt rm train --kind safety`)
    #[arg(long, required_unless_present = "zero_shot_grader", conflicts_with = "zero_shot_grader")]
    pub grader: Option<PathBuf>,
    /// Grade replies zero-shot instead, as GPT-4's RBRM did: a completion function (`chat:MODEL`
    /// behind OPENAI_API_BASE, a completion_fns registry entry, `local:PATH`) given the rubric
    #[arg(long, value_name = "COMPLETION_FN")]
    pub zero_shot_grader: Option<String>,
    /// Where checkpoints, metrics and the tuned policy (OUT/model) go
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 60)]
    pub steps: u64,
    /// Prompts per step
    #[arg(long, default_value_t = 8)]
    pub prompts: usize,
    /// Replies sampled per prompt (the group whose mean reward is the baseline)
    #[arg(long, default_value_t = 4)]
    pub group_size: usize,
    /// Longest reply sampled
    #[arg(long, default_value_t = 40)]
    pub max_reply_tokens: usize,
    /// Peak learning rate
    #[arg(long, default_value_t = 3e-5)]
    pub lr: f64,
    /// Weight of the KL penalty to the fine-tuned model
    #[arg(long, default_value_t = 0.05)]
    pub beta: f64,
    /// Weight of the rule-based safety reward beside the reward model's score
    #[arg(long, default_value_t = 1.0)]
    pub safety_weight: f64,
    #[command(flatten)]
    pub stage: super::StageFlags,
}

pub fn run(args: RlhfArgs) -> anyhow::Result<()> {
    let plan = RlhfPlan {
        steps: args.steps,
        prompts_per_step: args.prompts,
        group_size: args.group_size,
        max_reply_tokens: args.max_reply_tokens,
        lr: args.lr,
        beta: args.beta,
        safety_weight: args.safety_weight,
        seed: args.stage.seed,
        ..RlhfPlan::new(&args.model, &args.reward_model, &args.out)
    };
    let (resume, progress) = (args.stage.resume, !args.stage.quiet);
    let s = match (&args.grader, &args.zero_shot_grader) {
        (Some(grader), _) => rlhf(&plan, grader, resume, progress),
        (None, Some(name)) => {
            let grader = super::eval::resolve_completion_fns(std::slice::from_ref(name), None)?;
            let grader = grader.first().context("no completion function resolved")?;
            rlhf_with_grader(&plan, &ZeroShotGrader::new(grader.as_ref()), resume, progress)
        }
        (None, None) => anyhow::bail!("give --grader or --zero-shot-grader"),
    }
    .with_context(|| format!("RLHF of {}", args.model.display()))?;
    let figures: Vec<String> = s.last.figures.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
    println!("rlhf: {} steps in {:.1}s; last step: {}", s.steps, s.train_secs, figures.join(", "));
    println!("model: {}\nmetrics: {}", s.model_dir.display(), s.metrics.display());
    Ok(())
}
