//! RLHF: on-policy reinforcement learning of the fine-tuned model against the
//! reward model plus the rule-based reward model's safety reward, with a KL
//! penalty to the SFT model.
//!
//! The method is group-relative (GRPO, Shao et al. 2024) rather than PPO with a
//! value head. Why: a value model as large as the policy doubles the memory and
//! the backward passes of every step, and on two cores the budget is minutes;
//! the rewards here are per reply (the reward model and the grader score a whole
//! reply), so a per-token value baseline buys little over the mean reward of
//! several replies to the same prompt, which is unbiased and needs no training.
//! Each step samples `group_size` replies per prompt with the current policy
//! (through the one generation loop, [`LocalModel::generate`]), scores them,
//! takes advantages `A = (r − mean_group) / (std_group + ε)`, and takes one
//! gradient step on `−A · log π(token)` per reply token plus `β · KL(π ‖ π_sft)`,
//! the exact KL over the vocabulary at each reply position
//! ([`policy_kl_backward`]). One update per batch of rollouts keeps the policy
//! exactly on-policy, so PPO's ratio clipping would never act.

use std::path::{Path, PathBuf};

use ferrogpt_chatdata::{safety_reward, Example, Graded, PolicyClass, SafetyClass, SafetyGrader, Split};
use ferrogpt_engine::kernels::post_training::policy_kl_backward;
use ferrogpt_engine::{Activations, AdamWConfig, Input, Model, Schedule};
use ferrogpt_infer::{render_chat, FinishReason, GenerationRequest, LocalModel, SamplingParams};
use ferrogpt_rng::mix;
use ferrogpt_tokenizer::Special;

use crate::classifier::{keep_tail, reply_tokens, Packer, TrainedGrader};
use crate::examples::chat_examples;
use crate::order::{EpochOrder, OrderCursor};
use crate::stage::{run_stage, Objective, StageConfig, StageSummary, StepReport};
use crate::TrainError;

/// How to run RLHF.
#[derive(Clone, Debug)]
pub struct RlhfPlan {
    /// The fine-tuned model: the policy's start and the KL reference.
    pub policy: PathBuf,
    /// The reward model (`ferrogpt rm train --kind reward`).
    pub reward_model: PathBuf,
    pub out_dir: PathBuf,
    pub steps: u64,
    /// Prompts per step; each gets `group_size` replies.
    pub prompts_per_step: usize,
    pub group_size: usize,
    pub max_reply_tokens: usize,
    pub lr: f64,
    /// Weight of the KL penalty.
    pub beta: f64,
    /// Weight of the safety reward beside the reward model's score.
    pub safety_weight: f64,
    /// Generated train-split prompts to draw from.
    pub prompts: usize,
    pub seed: u64,
}

impl RlhfPlan {
    pub fn new(policy: &Path, reward_model: &Path, out_dir: &Path) -> Self {
        RlhfPlan {
            policy: policy.to_path_buf(),
            reward_model: reward_model.to_path_buf(),
            out_dir: out_dir.to_path_buf(),
            steps: 60,
            prompts_per_step: 8,
            group_size: 4,
            max_reply_tokens: 40,
            lr: 3e-5,
            beta: 0.05,
            safety_weight: 1.0,
            prompts: 2000,
            seed: 0,
        }
    }

    fn stage(&self) -> StageConfig {
        StageConfig {
            name: "rlhf".into(),
            out_dir: self.out_dir.clone(),
            steps: self.steps,
            lr: self.lr,
            schedule: Schedule::Cosine {
                warmup_frac: 0.1,
                min_lr_ratio: 0.5,
            },
            optimizer: AdamWConfig {
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
            clip_norm: 1.0,
            checkpoint_every: (self.steps / 4).max(1),
        }
    }
}

/// One sampled reply and what it earned.
struct Rollout {
    example: usize,
    /// Prompt tokens then the reply's tokens (with `<|end|>` when the policy ended it).
    tokens: Vec<u32>,
    prompt_len: usize,
    /// The reply's text, as the reward model and the grader read it.
    reply: String,
    reward: f64,
    advantage: f64,
}

/// The RLHF objective: rollouts, rewards, group-relative advantages, policy loss with KL.
pub struct RlhfObjective<'g> {
    plan: RlhfPlan,
    examples: Vec<Example>,
    prompts: Vec<Vec<u32>>,
    order: EpochOrder,
    /// The policy as generation sees it, its weights refreshed before each step's rollouts.
    policy: LocalModel,
    reference: Model<f32>,
    reward_model: LocalModel,
    grader: &'g dyn SafetyGrader,
    seq_len: usize,
}

impl<'g> RlhfObjective<'g> {
    /// The objective for `policy` under `plan`, with `grader` as the rule-based reward model.
    pub fn new(plan: &RlhfPlan, policy: LocalModel, grader: &'g dyn SafetyGrader) -> Result<Self, TrainError> {
        let reward_model = LocalModel::load(&plan.reward_model)?;
        if reward_model.config().num_labels != Some(1) {
            return Err(TrainError::Config {
                key: "reward_model".into(),
                why: format!("{} is not a reward model (one output)", plan.reward_model.display()),
            });
        }
        let tokenizer = policy.tokenizer();
        let seq_len = policy.context_length();
        let examples = chat_examples(Split::Train, plan.prompts, mix(plan.seed ^ 0x726c_6866))?;
        // Prompts that leave room for a reply.
        let mut kept = Vec::new();
        let mut prompts = Vec::new();
        for example in examples {
            let ids = render_chat(tokenizer, example.prompt())?;
            if ids.len() + plan.max_reply_tokens <= seq_len {
                prompts.push(ids);
                kept.push(example);
            }
        }
        Ok(RlhfObjective {
            order: EpochOrder::new(kept.len(), plan.seed)?,
            plan: plan.clone(),
            examples: kept,
            prompts,
            reference: Model::from_params(policy.config().clone(), policy.model().params.clone())?,
            policy,
            reward_model,
            grader,
            seq_len,
        })
    }

    /// Samples `group_size` replies to each of this step's prompts with the current policy.
    fn rollouts(&mut self, model: &Model<f32>, step: u64) -> Result<Vec<Rollout>, TrainError> {
        self.policy.set_params(&model.params)?;
        let picked: Vec<usize> = (0..self.plan.prompts_per_step).map(|_| self.order.take()).collect();
        let mut requests = Vec::new();
        for (i, &example) in picked.iter().enumerate() {
            for g in 0..self.plan.group_size {
                let params = SamplingParams {
                    temperature: 1.0,
                    top_p: 1.0,
                    max_tokens: Some(self.plan.max_reply_tokens),
                    seed: Some(mix(self.plan.seed ^ mix(step ^ mix((i * self.plan.group_size + g) as u64)))),
                    stop_at_end: true,
                    ..SamplingParams::default()
                };
                requests.push(GenerationRequest::new(self.prompts[example].clone(), params));
            }
        }
        let completions = self.policy.generate(&requests)?;
        let end = self.policy.tokenizer().special_id(Special::End);
        Ok(completions
            .into_iter()
            .enumerate()
            .map(|(k, c)| {
                let example = picked[k / self.plan.group_size];
                let mut tokens = self.prompts[example].clone();
                let prompt_len = tokens.len();
                tokens.extend(&c.tokens);
                if c.finish_reason == FinishReason::Stop {
                    tokens.push(end);
                }
                Rollout {
                    example,
                    tokens,
                    prompt_len,
                    reply: c.text,
                    reward: 0.0,
                    advantage: 0.0,
                }
            })
            .collect())
    }

    /// Rewards every rollout; returns the figures the step reports.
    fn reward(&self, rollouts: &mut [Rollout]) -> Result<RewardFigures, TrainError> {
        let tokenizer = self.policy.tokenizer();
        let context = self.reward_model.context_length();
        let scored: Vec<Vec<u32>> = rollouts
            .iter()
            .map(|r| reply_tokens(tokenizer, self.examples[r.example].prompt(), &r.reply).map(|ids| keep_tail(ids, context)))
            .collect::<Result<_, _>>()?;
        let rm = self.reward_model.classify(&scored)?;
        let graded: Vec<Graded> = rollouts
            .iter()
            .map(|r| Graded {
                conversation: self.examples[r.example].prompt(),
                reply: &r.reply,
            })
            .collect();
        let grades = self.grader.grade(&graded).map_err(|e| TrainError::Grader(Box::new(e)))?;
        let mut figures = RewardFigures::default();
        for ((rollout, rm_score), probs) in rollouts.iter_mut().zip(&rm).zip(&grades) {
            let class = self.examples[rollout.example].category.class();
            let safety = safety_reward(class, probs);
            rollout.reward = f64::from(rm_score[0]) + self.plan.safety_weight * safety;
            figures.add(class, rm_score[0].into(), safety, probs);
        }
        Ok(figures)
    }
}

/// Means over a step's rollouts.
#[derive(Default)]
struct RewardFigures {
    n: usize,
    reward_model: f64,
    safety: f64,
    disallowed: usize,
    disallowed_refused: f64,
    allowed: usize,
    allowed_refused: f64,
}

impl RewardFigures {
    fn add(&mut self, class: PolicyClass, rm: f64, safety: f64, probs: &[f64; 5]) {
        self.n += 1;
        self.reward_model += rm;
        self.safety += safety;
        let refused: f64 = SafetyClass::ALL.iter().filter(|c| c.is_refusal()).map(|c| probs[c.index()]).sum();
        match class {
            PolicyClass::Disallowed => {
                self.disallowed += 1;
                self.disallowed_refused += refused;
            }
            PolicyClass::Sensitive | PolicyClass::Allowed => {
                self.allowed += 1;
                self.allowed_refused += refused;
            }
        }
    }
}

/// Group-relative advantages: each reward minus its group's mean, over the group's
/// standard deviation (0 for a group whose rewards are all equal).
fn group_advantages(rollouts: &mut [Rollout], group_size: usize) {
    for group in rollouts.chunks_mut(group_size) {
        let n = group.len() as f64;
        let mean = group.iter().map(|r| r.reward).sum::<f64>() / n;
        let std = (group.iter().map(|r| (r.reward - mean).powi(2)).sum::<f64>() / n).sqrt();
        for r in group {
            r.advantage = if std > 1e-8 { (r.reward - mean) / (std + 1e-6) } else { 0.0 };
        }
    }
}

impl Objective for RlhfObjective<'_> {
    type Cursor = OrderCursor;

    fn step(&mut self, model: &mut Model<f32>, step: u64) -> Result<StepReport, TrainError> {
        let mut rollouts = self.rollouts(model, step)?;
        let figures = self.reward(&mut rollouts)?;
        group_advantages(&mut rollouts, self.plan.group_size);

        let mut packer = Packer::new(rollouts.len(), self.seq_len);
        for r in &rollouts {
            if !packer.try_add(std::slice::from_ref(&r.tokens)) {
                return Err(TrainError::Config {
                    key: "rlhf".into(),
                    why: format!(
                        "a rollout of {} tokens does not fit the context of {}",
                        r.tokens.len(),
                        self.seq_len
                    ),
                });
            }
        }
        let (rows, inputs, mask, ends) = packer.finish_used()?;
        let vocab = model.cfg.vocab_size;
        let mut reference_acts = Activations::new(&model.cfg, rows, self.seq_len)?;
        self.reference.forward_logits(&mut reference_acts, Input::Tokens(&inputs), &mask)?;
        let mut acts = Activations::new(&model.cfg, rows, self.seq_len)?;
        model.forward_logits(&mut acts, Input::Tokens(&inputs), &mask)?;

        // Position p predicts token p+1: a reply token at flat index e-len+1+k is
        // predicted at the position before it.
        let reply_tokens: usize = rollouts.iter().map(|r| r.tokens.len() - r.prompt_len).sum();
        let scale = 1.0 / reply_tokens.max(1) as f64;
        let mut trained = vec![false; rows * self.seq_len];
        let (mut kl_sum, mut logprob_sum, mut weighted_logprob_sum) = (0.0, 0.0, 0.0);
        for (r, &end) in rollouts.iter().zip(&ends) {
            let start = end + 1 - r.tokens.len();
            for k in r.prompt_len..r.tokens.len() {
                let at = start + k - 1;
                let row = &mut acts.logits[at * vocab..(at + 1) * vocab];
                let reference = &reference_acts.logits[at * vocab..(at + 1) * vocab];
                let measured = policy_kl_backward(row, reference, r.tokens[k] as usize, r.advantage, self.plan.beta, scale);
                kl_sum += measured.kl;
                logprob_sum += measured.logprob;
                weighted_logprob_sum += r.advantage * measured.logprob;
                trained[at] = true;
            }
        }
        for (at, row) in acts.logits.chunks_exact_mut(vocab).enumerate() {
            if !trained[at] {
                row.fill(0.0);
            }
        }
        model.backward_from_logits(&mut acts, &mask)?;

        let tokens = reply_tokens.max(1) as f64;
        let n = figures.n.max(1) as f64;
        let mean_reward = rollouts.iter().map(|r| r.reward).sum::<f64>() / n;
        let mut report = StepReport {
            // The surrogate whose gradient was taken: −Σ A·log π / tokens + β·KL.
            loss: (-weighted_logprob_sum + self.plan.beta * kl_sum) / tokens,
            ..StepReport::default()
        };
        let mut put = |k: &str, v: f64| {
            report.figures.insert(k.into(), v);
        };
        put("reward", mean_reward);
        put("rm", figures.reward_model / n);
        put("safety", figures.safety / n);
        put("kl", kl_sum / tokens);
        put("logprob", logprob_sum / tokens);
        put("reply_tokens", reply_tokens as f64 / n);
        if figures.disallowed > 0 {
            put("refused_disallowed", figures.disallowed_refused / figures.disallowed as f64);
        }
        if figures.allowed > 0 {
            put("refused_allowed", figures.allowed_refused / figures.allowed as f64);
        }
        Ok(report)
    }

    fn cursor(&self) -> OrderCursor {
        self.order.cursor()
    }

    fn restore(&mut self, cursor: OrderCursor) -> Result<(), TrainError> {
        self.order.restore(cursor)
    }
}

/// Runs RLHF from the fine-tuned model with the trained safety classifier in the folder
/// `grader` as the rule-based reward model (resuming when `resume`); the tuned policy is
/// `plan.out_dir/model`.
pub fn rlhf(plan: &RlhfPlan, grader: &Path, resume: bool, progress: bool) -> Result<StageSummary, TrainError> {
    let grader = TrainedGrader::new(LocalModel::load(grader)?)?;
    rlhf_with_grader(plan, &grader, resume, progress)
}

/// RLHF with any rule-based reward model: the trained classifier, or a zero-shot grader
/// over a completion function (ferrogpt-evals' `rbrm::ZeroShotGrader`).
pub fn rlhf_with_grader(plan: &RlhfPlan, grader: &dyn SafetyGrader, resume: bool, progress: bool) -> Result<StageSummary, TrainError> {
    let policy = LocalModel::load(&plan.policy)?;
    let model = Model::from_params(policy.config().clone(), policy.model().params.clone())?;
    let tokenizer_json = policy.tokenizer().to_json();
    let mut objective = RlhfObjective::new(plan, policy, grader)?;
    let (_, summary) = run_stage(model, &mut objective, &plan.stage(), tokenizer_json.as_bytes(), resume, progress)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(reward: f64) -> Rollout {
        Rollout {
            example: 0,
            tokens: vec![1, 2],
            prompt_len: 1,
            reply: String::new(),
            reward,
            advantage: f64::NAN,
        }
    }

    #[test]
    fn advantages_are_standardised_within_each_group() {
        let mut r: Vec<Rollout> = [1.0, 3.0, 5.0, 5.0, 2.0, 2.0].into_iter().map(rollout).collect();
        group_advantages(&mut r, 3);
        let a: Vec<f64> = r.iter().map(|r| r.advantage).collect();
        let std = (8.0f64 / 3.0).sqrt();
        assert!((a[0] + 2.0 / (std + 1e-6)).abs() < 1e-9);
        assert!(a[1].abs() < 1e-12);
        assert!((a[0] + a[2]).abs() < 1e-12);
        // Group 2 (5, 2, 2): mean 3; and a group of equal rewards has no advantage.
        assert!(a[3] > 0.0 && a[4] < 0.0 && a[4] == a[5]);
        let mut flat: Vec<Rollout> = [0.5, 0.5].into_iter().map(rollout).collect();
        group_advantages(&mut flat, 2);
        assert!(flat.iter().all(|r| r.advantage == 0.0));
    }
}
