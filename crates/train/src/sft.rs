//! Supervised fine-tuning: the training config that turns a base model folder and files of
//! conversations into an assistant, the conversations themselves (ferrogpt-chatdata's held-out
//! splits, written as OpenAI fine-tuning JSONL), and the measure of what the assistant does
//! with held-out requests. The run itself is [`crate::train`], the same loop as pretraining,
//! with the data of [`crate::conversations`].

use std::path::{Path, PathBuf};

use ferrogpt_chatdata::{Example, Scorecard, Split};
use ferrogpt_engine::{AdamWConfig, Schedule};
use ferrogpt_infer::{model_folder, render_chat, GenerationRequest, LocalModel, SamplingParams};
use ferrogpt_tokenizer::Tokenizer;

use crate::config::{CheckpointConfig, DataConfig, EvalConfig, Hyper, TrainConfig};
use crate::conversations::Conversations;
use crate::examples::chat_examples;
use crate::{io_err, TrainError};

/// How to fine-tune; [`SftPlan::config`] makes the run's [`TrainConfig`].
#[derive(Clone, Debug)]
pub struct SftPlan {
    /// The model folder to start from (its config, weights and tokenizer).
    pub base: PathBuf,
    pub conversations: PathBuf,
    pub val_conversations: PathBuf,
    pub out_dir: PathBuf,
    /// Passes over the conversations; the run's steps follow from it (at least one step).
    pub epochs: f64,
    /// Tokens per row (several conversations packed into each); at most the model's context.
    pub seq_len: usize,
    /// Rows per optimizer step.
    pub batch_size: usize,
    /// Peak learning rate: lower than pretraining's, since the weights are already trained.
    pub lr: f64,
    pub seed: u64,
}

impl SftPlan {
    /// Defaults that suit the speedrun's small models: a few epochs at a tenth of a typical
    /// pretraining learning rate.
    pub fn new(base: &Path, conversations: &Path, val_conversations: &Path, out_dir: &Path) -> Self {
        SftPlan {
            base: base.to_path_buf(),
            conversations: conversations.to_path_buf(),
            val_conversations: val_conversations.to_path_buf(),
            out_dir: out_dir.to_path_buf(),
            epochs: 3.0,
            seq_len: 256,
            batch_size: 8,
            lr: 3e-4,
            seed: 0,
        }
    }

    /// The training config: the base model's shape and weights, the conversations as data,
    /// steps for `epochs` passes over their packing, warm-up then a long cooldown (WSD).
    pub fn config(&self) -> Result<TrainConfig, TrainError> {
        if !(self.epochs.is_finite() && self.epochs > 0.0) {
            return Err(TrainError::Config {
                key: "epochs".into(),
                why: format!("{} must be a positive number", self.epochs),
            });
        }
        let model = model_folder::read_config(&self.base)?;
        let seq_len = self.seq_len.min(model.max_seq_len);
        let tokenizer = Tokenizer::from_file(&self.base.join(model_folder::TOKENIZER_FILE))?;
        let rows = Conversations::read(&self.conversations, &tokenizer, seq_len)?.rows(seq_len);
        let steps = (self.epochs * rows as f64 / self.batch_size.max(1) as f64).ceil().max(1.0) as u64;
        let cfg = TrainConfig {
            out_dir: self.out_dir.clone(),
            model,
            data: DataConfig {
                dir: None,
                conversations: Some(self.conversations.clone()),
                val_conversations: Some(self.val_conversations.clone()),
                tokenizer: None,
            },
            train: Hyper {
                seq_len,
                batch_size: self.batch_size,
                grad_accum: 1,
                steps,
                lr: self.lr,
                init_std: 0.02,
                clip_norm: 1.0,
                seed: self.seed,
                init_from: Some(self.base.clone()),
            },
            schedule: Schedule::Wsd {
                warmup_frac: 0.05,
                cooldown_frac: 0.5,
            },
            optimizer: AdamWConfig::default(),
            // Validation covers every held-out conversation.
            eval: EvalConfig {
                every: (steps / 4).max(1),
                tokens: 1 << 30,
            },
            checkpoint: CheckpointConfig {
                every: (steps / 4).max(1),
                keep: 2,
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Writes `count` generated conversations of `split` (seeded by `seed`) to `path` as OpenAI
/// fine-tuning JSONL.
pub fn write_conversations(path: &Path, split: Split, count: usize, seed: u64) -> Result<(), TrainError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let file = std::fs::File::create(path).map_err(io_err(path))?;
    let examples = chat_examples(split, count, seed)?;
    ferrogpt_chatdata::write_jsonl(std::io::BufWriter::new(file), &examples).map_err(|e| TrainError::Chatdata {
        path: path.to_path_buf(),
        source: e,
    })
}

/// The model in `model_dir` answers every example's prompt (greedy, at most `reply_tokens`
/// tokens, all in one batch through the one generation loop); its replies, checked and scored.
/// A prompt that leaves no room in the model's context for a reply gets `None` and is not
/// scored: a small context model is measured on the requests it can read.
pub fn behaviour(model_dir: &Path, examples: &[Example], reply_tokens: usize) -> Result<(Scorecard, Vec<Option<String>>), TrainError> {
    let model = LocalModel::load(model_dir)?;
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: Some(reply_tokens),
        ..SamplingParams::default()
    };
    let prompts = examples
        .iter()
        .map(|e| Ok(Some(render_chat(model.tokenizer(), e.prompt())?).filter(|ids| ids.len() < model.context_length())))
        .collect::<Result<Vec<_>, TrainError>>()?;
    let requests: Vec<GenerationRequest> = prompts
        .iter()
        .flatten()
        .map(|ids| GenerationRequest::new(ids.clone(), params.clone()))
        .collect();
    let mut generated = model.generate(&requests)?.into_iter().map(|c| c.text);
    let replies: Vec<Option<String>> = prompts.iter().map(|p| p.as_ref().and_then(|_| generated.next())).collect();
    let (answered, answers): (Vec<Example>, Vec<String>) = examples
        .iter()
        .zip(&replies)
        .filter_map(|(e, r)| Some((e.clone(), r.clone()?)))
        .unzip();
    Ok((ferrogpt_chatdata::score(&answered, &answers), replies))
}
