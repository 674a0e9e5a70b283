//! ferrogpt-evals: an OpenAI-Evals-compatible eval framework. It owns registry loading
//! (openai/evals' YAML + JSONL layout), the eval templates with upstream's exact scoring
//! semantics and report keys, completion functions (`dummy`, OpenAI-compatible HTTP
//! endpoints, and a hook for an in-process local model), the parallel runner with retries
//! and a request cache, GPT-4's zero-shot rule-based reward model over any completion
//! function ([`rbrm`], implementing ferrogpt-chatdata's grader interface), eval sets with
//! resume ([`evalset`]), the confinement of data files to their registry ([`data`]), the
//! JSONL run log, HTML/terminal reports of runs, and multiple-choice evals with calibration
//! ([`multiple_choice`]: EXAMS and BIG-bench task readers, accuracy, `acc_norm`, ECE and
//! reliability diagrams).
//!
//! It must not touch model internals: local models come in through the
//! [`completion::CompletionFn`] trait (the CLI supplies the adapter), and nothing here
//! trains, tokenizes or serves.

pub mod completion;
pub mod data;
pub mod error;
pub mod evalset;
pub mod log;
pub mod metrics;
pub mod multiple_choice;
pub mod prompt;
pub mod pyrandom;
pub mod rbrm;
pub mod registry;
pub mod report;
pub mod runner;
pub mod templates;
pub mod text;

pub use completion::{CompletionFn, Dummy};
pub use error::{EvalError, Result};
pub use registry::Registry;
pub use runner::{run_eval, Resolver, RunOptions, RunOutcome};
