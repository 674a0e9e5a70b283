//! ferrogpt-scaling: predictable scaling. Fits power laws to the final losses
//! of a ladder of small runs and extrapolates them, with honest intervals.
//!
//! Owns: the fitting of `L(C) = a·C^b + c` and of the pure power law
//! `L(C) = a·C^b`, the choice between them by forward-chaining
//! cross-validation, and of Chinchilla's `L(N, D) = E + A/N^α + B/D^β`
//! ([`fit`]), and bootstrap prediction intervals;
//! the ladder TOML and its width-scaling rules ([`ladder`]; its `[data]` is a
//! `ferrogpt_data::CorpusSpec`); driving the sweep through ferrogpt-train
//! ([`sweep`]) and the loops behind every `ferrogpt scale` subcommand
//! ([`pipeline`]: the CLI only parses flags); registered predictions and
//! their verification ([`predict`]); per-run capability measurements
//! ([`measure`]); figures and the markdown report ([`plot`], [`report`]).
//! Must not touch: training itself (ferrogpt-train runs the rungs) or the
//! engine's FLOP accounting (ferrogpt-engine's `ModelConfig` owns it).

pub mod capability;
pub mod fit;
pub mod ladder;
pub mod measure;
pub mod pipeline;
pub mod plot;
pub mod predict;
pub mod probe;
pub mod report;
pub mod sweep;

#[derive(Debug, thiserror::Error)]
pub enum ScalingError {
    #[error("need at least {need} fit points, got {got}")]
    TooFewPoints { need: usize, got: usize },
    #[error("fit point {index} is not finite and positive: {value}")]
    BadPoint { index: usize, value: f64 },
    #[error("the optimiser failed on every start: {0}")]
    Optimiser(String),
    #[error("ladder {path}: `{key}`: {why}")]
    Ladder {
        path: std::path::PathBuf,
        key: String,
        why: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    File { path: std::path::PathBuf, why: String },
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Train(#[from] ferrogpt_train::TrainError),
    #[error(transparent)]
    Data(#[from] ferrogpt_data::DataError),
    #[error(transparent)]
    Infer(#[from] ferrogpt_infer::InferError),
    #[error(transparent)]
    Engine(#[from] ferrogpt_engine::EngineError),
    #[error("{what} has {tokens} tokens; the model's context length is {context}")]
    PromptTooLong { what: String, tokens: usize, context: usize },
    #[error("capability: {0}")]
    Capability(String),
}
