//! ferrogpt-gguf: llama.cpp's GGUF file format, version 3.
//!
//! Owns: the format itself — metadata values, tensor records, alignment — with a reader that
//! checks every count and offset against the file before trusting it ([`GgufFile`]) and a
//! writer ([`GgufWriter`]); and the mapping of a ferrogpt model folder onto llama.cpp's Llama
//! architecture ([`export`]): metadata keys, tensor names, the q/k row order of llama.cpp's
//! rotary embedding, the byte-level BPE vocabulary and merges, the special tokens and the chat
//! template.
//!
//! Must not touch: model maths, the f16 and q8_0 encodings (the engine's `quant` owns them;
//! GGUF's `Q8_0` block is the engine's `BlockQ8_0` byte for byte), model folders
//! (`ferrogpt_infer::model_folder` reads them) or the chat template's text
//! (`ferrogpt_infer::chat::CHAT_TEMPLATE_JINJA`).

pub mod export;
mod format;

pub use export::export_gguf;
pub use format::{encode, GgufFile, GgufWriter, TensorInfo, TensorType, Value, ALIGNMENT, MAGIC, VERSION};

use std::path::PathBuf;

/// What can be wrong with a GGUF file or an export; each variant names the file or the item.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file: {why}")]
    Format { why: String },
    #[error("GGUF version {0} is not supported (version 3 is)")]
    Version(u32),
    #[error("tensor `{name}`: {why}")]
    Tensor { name: String, why: String },
    #[error("metadata `{key}`: {why}")]
    Metadata { key: String, why: String },
    #[error("cannot export {what}")]
    Unsupported { what: String },
    #[error(transparent)]
    ModelFolder(#[from] ferrogpt_infer::model_folder::ModelFolderError),
    #[error(transparent)]
    Engine(#[from] ferrogpt_engine::EngineError),
}
