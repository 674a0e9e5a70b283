//! Corpus pipeline for ferrogpt: sources -> documents -> token shards -> training batches.
//!
//! This crate owns corpus sources (local files and folders, manual pages through a roff
//! stripper, seeded synthetic generators, the general-English corpora of system packages in
//! [`english`]), whole corpora from one [`CorpusSpec`] (the
//! speedrun's and every scaling ladder's `[data]`: a tokenizer trained on a sample, then the
//! shards, by [`build_corpus`]), `prepare` (streaming tokenization into checksummed
//! binary shards with a manifest, document-level train/val split, deterministic shuffle) and
//! loading (verified shards, a resumable shuffled [`BatchLoader`], sequential evaluation
//! batches). It uses [`ferrogpt_tokenizer`] for text <-> ids and must not touch models,
//! training loops or checkpoints: the trainer stores a [`LoaderState`] and nothing else of ours.
//!
//! Typical use:
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ferrogpt_data::{prepare, sample_texts, BatchLoader, PrepareConfig, Source, Split, TokenShards};
//! use ferrogpt_tokenizer::Tokenizer;
//! let sources = vec![Source::man_pages(), "synthetic:arithmetic:20000".parse()?];
//! let texts = sample_texts(&sources, 0, 20_000_000, true)?;
//! let tokenizer = Tokenizer::train(texts.into_iter(), 4096)?;
//! let mut config = PrepareConfig::new(sources);
//! config.max_bytes = Some(50_000_000);
//! prepare(&config, &tokenizer, "out/data".as_ref(), true)?;
//! let train = TokenShards::open("out/data".as_ref(), Split::Train)?;
//! let mut loader = BatchLoader::new(train, 16, 256, 0)?;
//! let batch = loader.next_batch(); // inputs/targets: 16 * 256 ids each
//! # let _ = batch; Ok(()) }
//! ```

pub mod code_task;
mod corpus;
pub mod english;
mod loader;
mod prepare;
pub mod roff;
mod shard;
mod source;
pub mod synthetic;

use std::path::PathBuf;

pub use corpus::{build_corpus, Corpus, CorpusSpec, EnglishSource, SyntheticSource};
pub use loader::{unigram_bits_per_byte, Batch, BatchLoader, LoaderState, SequentialBatches, TokenShards};
pub use prepare::{prepare, sample_texts, split_of, PrepareConfig, PrepareFile};
pub use shard::{
    Dtype, Manifest, ShardInfo, SourceRun, SourceStats, Split, SplitTotals, Totals, HEADER_LEN, MANIFEST_FILE, SHARD_MAGIC, SHARD_VERSION,
};
pub use source::{man_page_texts, Source, DEFAULT_MAN_ROOT};

/// Everything that can go wrong in the data pipeline; each variant names the file, source or
/// field at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("source `{name}` does not exist")]
    MissingSource { name: String },
    #[error("source `{name}` is empty: it has no documents with text")]
    EmptySource { name: String },
    #[error("no sources given")]
    NoSources,
    #[error("{path}: unsupported file type (expected .txt, .md or .jsonl)")]
    UnsupportedFile { path: PathBuf },
    #[error("invalid source `{spec}`: {reason}")]
    BadSourceSpec { spec: String, reason: String },
    #[error("unknown synthetic generator `{name}` (known: {known})")]
    UnknownGenerator { name: String, known: String },
    #[error("{path}: line {line}: {reason}")]
    Jsonl { path: PathBuf, line: u64, reason: String },
    #[error("corpus `{corpus}` is not installed: {path} not found; install it with `{install}` or give its path as `{corpus}:PATH`")]
    CorpusNotInstalled { corpus: String, path: PathBuf, install: String },
    #[error("{path}: line {line}: {reason}")]
    CorpusFormat { path: PathBuf, line: u64, reason: String },
    #[error("invalid `{field}`: {reason}")]
    InvalidConfig { field: String, reason: String },
    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("shard {file}: checksum mismatch (manifest {expected}, file {actual}); the file is corrupt or was changed")]
    ShardChecksum { file: PathBuf, expected: String, actual: String },
    #[error("shard {file}: {reason}")]
    ShardHeader { file: PathBuf, reason: String },
    #[error("{dir}: the {split} split has {tokens} tokens, fewer than the {needed} needed")]
    NotEnoughTokens {
        dir: PathBuf,
        split: Split,
        tokens: usize,
        needed: usize,
    },
    #[error("{dir} was prepared with tokenizer {expected}, not {actual}")]
    TokenizerMismatch { dir: PathBuf, expected: String, actual: String },
    #[error("cannot restore the data loader: {reason}")]
    LoaderState { reason: String },
    #[error(transparent)]
    Tokenizer(#[from] ferrogpt_tokenizer::TokenizerError),
}
