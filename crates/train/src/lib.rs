//! ferrogpt-train: pretraining on top of the engine, and the speedrun pipeline.
//!
//! Owns: the training run's TOML config ([`TrainConfig`]), the training loop
//! with gradient accumulation, clipping, schedules, validation in bits per
//! byte, metrics JSONL and the loss-curve SVG ([`trainer`]) — pretraining on
//! token shards and supervised fine-tuning on conversations alike, the latter
//! read, rendered and packed by [`conversations`]; checkpoints with
//! exact resume ([`checkpoint`]); MFU against the larger of the measured sgemm
//! peak and the CPU's FMA peak ([`peak`]); and `speedrun`, the data ->
//! tokenizer -> pretrain -> samples pipeline that writes `report.md`
//! ([`speedrun`]). The generated conversations post-training draws, with this
//! machine's manual-page facts ([`examples`]). Post-training beyond SFT: the reward model and the safety and
//! moderation classifiers ([`classifier`]), RLHF ([`rlhf`]), the optimisation loop
//! they share ([`stage`]) and the speedrun's post-training pipeline and report
//! ([`post_training`]).
//!
//! Must not touch: the model's kernels and optimizer maths (ferrogpt-engine),
//! tokenization (ferrogpt-tokenizer), corpora, sources and shard formats
//! (ferrogpt-data: the speedrun's corpus is a `ferrogpt_data::CorpusSpec`),
//! model folders (ferrogpt-infer's `model_folder`: checkpoints write their model
//! part through it) or sampling (ferrogpt-infer) — it only drives them.

pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod conversations;
pub mod examples;
pub mod metrics;
pub mod order;
pub mod peak;
pub mod post_training;
pub mod rlhf;
pub mod sft;
pub mod speedrun;
pub mod stage;
pub mod trainer;

pub use checkpoint::{Checkpoint, TrainState};
pub use config::TrainConfig;
pub use sft::SftPlan;
pub use trainer::{evaluate_by_source, train, val_bpb_by_source, SourceBpb, TrainOptions, TrainSummary};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("config key `{key}`: {why}")]
    Config { key: String, why: String },
    #[error("{path}: {why}")]
    Parse { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {dir}: file {file}: {why}")]
    Checkpoint { dir: PathBuf, file: String, why: String },
    #[error(transparent)]
    Engine(#[from] ferrogpt_engine::EngineError),
    #[error("the rule-based reward model's grader failed")]
    Grader(#[source] Box<ferrogpt_chatdata::GraderError>),
    #[error(transparent)]
    Tokenizer(#[from] ferrogpt_tokenizer::TokenizerError),
    #[error(transparent)]
    Data(#[from] ferrogpt_data::DataError),
    #[error(transparent)]
    Infer(#[from] ferrogpt_infer::InferError),
    #[error(transparent)]
    ModelFolder(#[from] ferrogpt_infer::model_folder::ModelFolderError),
    #[error("{path} line {line}: {source}")]
    Conversation {
        path: PathBuf,
        line: usize,
        #[source]
        source: conversations::ConversationError,
    },
    #[error("{path}: cannot write the conversations")]
    Chatdata {
        path: PathBuf,
        #[source]
        source: ferrogpt_chatdata::ChatDataError,
    },
    #[error("training diverged at step {step}: loss is {loss}")]
    Diverged { step: u64, loss: f64 },
    #[error("plot {path}: {why}")]
    Plot { path: PathBuf, why: String },
}

/// `std::io` errors with the path they concern.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
