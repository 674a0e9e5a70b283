//! ferrogpt-engine: the transformer itself, on the CPU, in the spirit of llm.c.
//!
//! Owns: the model shape ([`ModelConfig`]), the flat parameter buffer with
//! Hugging Face Llama names ([`params`]) with the LM head or a classifier's
//! score head ([`ModelConfig::num_labels`]), hand-written forward/backward
//! kernels ([`kernels`]; post-training's pairwise and KL-penalised policy
//! losses among them), the training forward/backward over preallocated activations
//! ([`Model`], [`Activations`]), the multi-sequence KV-cache inference path
//! ([`KvCache`], keys and values in f32 or f16), inference weights packed as
//! f16 or llama.cpp's q8_0 ([`quant`], [`Model::quantize`]), the run-time
//! choice of SIMD kernels for the CPU ([`simd`]: AVX-512, AVX2+FMA, portable),
//! AdamW with clipping and LR schedules ([`optim`]) and safetensors I/O by
//! tensor name ([`io`]). Its random numbers come from `ferrogpt-rng`.
//!
//! Must not touch: tokenizers, data files, checkpoints' non-weight state,
//! sampling policy or anything about HTTP — those belong to the crates above it.
//! Matmuls go through [`matmul`] (the `gemm` crate; decoding's few-row products
//! through its own kernels), parallel loops through the global rayon pool;
//! nothing on the training or decoding hot path allocates.

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
mod packed;
pub mod params;
pub mod quant;
pub mod simd;
mod team;

pub use config::ModelConfig;
pub use float::Float;
pub use kernels::xent::IGNORE;
pub use kv::KvCache;
pub use mask::AttnMask;
pub use model::{Activations, Input, Model};
pub use optim::{AdamW, AdamWConfig, Schedule};
pub use quant::DType;
pub use simd::{KernelPath, Kernels};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid model config: `{field}` {why}")]
    Config { field: String, why: String },
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("{path}: {why}")]
    Weights { path: String, why: String },
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
