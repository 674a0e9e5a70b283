//! ferrogpt-engine: the transformer itself, on the CPU, in the spirit of llm.c.
//!
//! Owns: the model shape ([`ModelConfig`]), the flat parameter buffer with
//! Hugging Face Llama names ([`params`]), hand-written forward/backward kernels
//! ([`kernels`]), the training forward/backward over preallocated activations
//! ([`Model`], [`Activations`]), the multi-sequence KV-cache inference path
//! ([`KvCache`]), AdamW with clipping and LR schedules ([`optim`]), safetensors
//! I/O by tensor name ([`io`]). Its random numbers come from `ferrogpt-rng`.
//!
//! Must not touch: tokenizers, data files, checkpoints' non-weight state,
//! sampling policy or anything about HTTP — those belong to the crates above it.
//! Matmuls go through [`matmul`] (the `gemm` crate), parallel loops through the
//! global rayon pool; nothing on the training or decoding hot path allocates.

pub mod bench;
pub mod config;
mod decode;
pub mod float;
mod huge;
pub mod io;
pub mod kernels;
pub mod kv;
pub mod mask;
pub mod matmul;
pub mod model;
pub mod optim;
pub mod params;

pub use config::ModelConfig;
pub use float::Float;
pub use kernels::xent::IGNORE;
pub use kv::KvCache;
pub use mask::AttnMask;
pub use model::{Activations, Input, Model};
pub use optim::{AdamW, AdamWConfig, Schedule};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid model config: `{field}` {why}")]
    Config { field: String, why: String },
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("{path}: {why}")]
    Weights { path: String, why: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
