//! `prepare`: sources -> documents -> tokens -> shards + manifest, streaming.
//!
//! Memory stays bounded by the shuffle buffer (cheap tasks), one parallel batch of loaded
//! documents, and one in-progress shard per split; the corpus itself is never held.

use std::path::{Path, PathBuf};

use ferrogpt_progress::{Counter, Progress};
use ferrogpt_rng::hash_str;
use ferrogpt_tokenizer::{Special, Tokenizer};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::shard::{encode_shard, Dtype, Manifest, ShardInfo, SourceRun, SourceStats, Split, Totals, MANIFEST_FILE, MANIFEST_VERSION};
use crate::source::{Source, Task, TaskStream};
use crate::DataError;

/// Tasks loaded and tokenized in parallel per step; large enough to keep all cores busy,
/// small enough that the byte cap overshoots by little work.
const BATCH_TASKS: usize = 512;
/// Salt so the split hash is independent of the other seeded streams.
const SPLIT_SALT: u64 = 0x5EED_5A17;

fn default_val_fraction() -> f64 {
    0.01
}
fn default_shard_tokens() -> u64 {
    8 << 20
}
fn default_shuffle_buffer() -> usize {
    8192
}

/// Options of [`prepare`]; also the body of a `prepare.toml` (unknown keys are errors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareConfig {
    pub sources: Vec<Source>,
    /// Fraction of documents (by hash of their key) that go to the validation split.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    #[serde(default)]
    pub seed: u64,
    /// Stop after this many bytes of document text (quick presets).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Tokens per shard file (a shard ends at the first document boundary past this).
    #[serde(default = "default_shard_tokens")]
    pub shard_tokens: u64,
    /// Documents held for the seeded local shuffle (tasks are paths or short texts).
    #[serde(default = "default_shuffle_buffer")]
    pub shuffle_buffer: usize,
}

impl PrepareConfig {
    /// Defaults for everything but the sources.
    pub fn new(sources: Vec<Source>) -> Self {
        PrepareConfig {
            sources,
            val_fraction: default_val_fraction(),
            seed: 0,
            max_bytes: None,
            shard_tokens: default_shard_tokens(),
            shuffle_buffer: default_shuffle_buffer(),
        }
    }

    /// Range checks; errors name the field.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |field: &str, reason: String| DataError::InvalidConfig {
            field: field.to_string(),
            reason,
        };
        if self.sources.is_empty() {
            return Err(DataError::NoSources);
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(bad("val_fraction", format!("must be in [0, 1), got {}", self.val_fraction)));
        }
        if self.shard_tokens == 0 {
            return Err(bad("shard_tokens", "must be at least 1".into()));
        }
        if self.shuffle_buffer == 0 {
            return Err(bad("shuffle_buffer", "must be at least 1".into()));
        }
        if self.max_bytes == Some(0) {
            return Err(bad("max_bytes", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// A `prepare.toml` file: [`PrepareConfig`] plus where the tokenizer is and where shards go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareFile {
    pub tokenizer: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub sources: Vec<Source>,
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub max_bytes: Option<u64>,
    #[serde(default = "default_shard_tokens")]
    pub shard_tokens: u64,
    #[serde(default = "default_shuffle_buffer")]
    pub shuffle_buffer: usize,
}

impl PrepareFile {
    /// Reads and validates a TOML file; errors name the file and the offending key.
    pub fn load(path: &Path) -> Result<PrepareFile, DataError> {
        let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file: PrepareFile = toml::from_str(&text).map_err(|e| DataError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        file.config().validate().map_err(|e| DataError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(file)
    }

    pub fn config(&self) -> PrepareConfig {
        PrepareConfig {
            sources: self.sources.clone(),
            val_fraction: self.val_fraction,
            seed: self.seed,
            max_bytes: self.max_bytes,
            shard_tokens: self.shard_tokens,
            shuffle_buffer: self.shuffle_buffer,
        }
    }
}

/// Which split a document goes to: a seeded hash of its key, so the decision is stable
/// whatever else is in the corpus.
pub fn split_of(seed: u64, key: &str, val_fraction: f64) -> Split {
    let h = hash_str(seed ^ SPLIT_SALT, key);
    if (h as f64) < val_fraction * (u64::MAX as f64) {
        Split::Val
    } else {
        Split::Train
    }
}

/// One tokenized document.
struct Doc {
    source: usize,
    key: String,
    bytes: u64,
    tokens: Vec<u32>,
}

/// Accumulates one split's documents into shards.
struct SplitWriter {
    split: Split,
    tokens: Vec<u32>,
    documents: u64,
    bytes: u64,
    written: Vec<ShardInfo>,
}

impl SplitWriter {
    fn new(split: Split) -> Self {
        SplitWriter {
            split,
            tokens: Vec::new(),
            documents: 0,
            bytes: 0,
            written: Vec::new(),
        }
    }

    fn push(&mut self, doc: &Doc, ctx: &WriteCtx) -> Result<(), DataError> {
        self.tokens.extend_from_slice(&doc.tokens);
        self.documents += 1;
        self.bytes += doc.bytes;
        if self.tokens.len() as u64 >= ctx.shard_tokens {
            self.flush(ctx)?;
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &WriteCtx) -> Result<(), DataError> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let file = format!("{}_{:05}.bin", self.split.name(), self.written.len());
        let (buf, sha256) = encode_shard(&self.tokens, ctx.dtype, ctx.vocab_size);
        let path = ctx.dir.join(&file);
        std::fs::write(&path, &buf).map_err(|source| DataError::Io { path, source })?;
        self.written.push(ShardInfo {
            file,
            split: self.split,
            documents: self.documents,
            bytes: self.bytes,
            tokens: self.tokens.len() as u64,
            sha256,
        });
        self.tokens.clear();
        self.documents = 0;
        self.bytes = 0;
        Ok(())
    }
}

struct WriteCtx<'a> {
    dir: &'a Path,
    dtype: Dtype,
    vocab_size: usize,
    shard_tokens: u64,
}

/// Loads and tokenizes tasks in parallel, keeping their order.
fn load_batch(batch: &[(usize, Task)], tokenizer: Option<&Tokenizer>) -> Result<Vec<Option<(Doc, String)>>, DataError> {
    batch
        .par_iter()
        .map(|(source, task)| {
            let Some(text) = task.load()? else {
                return Ok(None);
            };
            let tokens = match tokenizer {
                Some(tok) => {
                    let mut ids = Vec::with_capacity(text.len() / 3 + 2);
                    ids.push(tok.special_id(Special::Bos));
                    ids.extend(tok.encode(&text));
                    ids.push(tok.special_id(Special::End));
                    ids
                }
                None => Vec::new(),
            };
            let doc = Doc {
                source: *source,
                key: task.key(),
                bytes: text.len() as u64,
                tokens,
            };
            Ok(Some((doc, text)))
        })
        .collect()
}

/// Drives the task stream in parallel batches until it ends or `max_bytes` of text was taken;
/// `sink` receives documents in stream order. A source with a byte cap ([`Source::max_bytes`])
/// stops being drawn from once its documents reached the cap, so the cut is made on the same
/// seeded order whatever else is in the mix. Returns whether the stream ran to its end.
fn drive(
    stream: &mut TaskStream,
    tokenizer: Option<&Tokenizer>,
    max_bytes: Option<u64>,
    pb: &Progress,
    mut sink: impl FnMut(Doc, String) -> Result<(), DataError>,
) -> Result<bool, DataError> {
    let mut taken = 0u64;
    let mut taken_by_source: Vec<u64> = Vec::new();
    let mut batch = Vec::with_capacity(BATCH_TASKS);
    loop {
        batch.clear();
        for task in stream.by_ref().take(BATCH_TASKS) {
            batch.push(task?);
        }
        if batch.is_empty() {
            return Ok(true);
        }
        for doc in load_batch(&batch, tokenizer)?.into_iter().flatten() {
            if max_bytes.is_some_and(|cap| taken >= cap) {
                return Ok(false);
            }
            let source = doc.0.source;
            if let Some(cap) = stream.cap(source) {
                if taken_by_source.len() <= source {
                    taken_by_source.resize(source + 1, 0);
                }
                let from_source = &mut taken_by_source[source];
                if *from_source >= cap {
                    continue;
                }
                *from_source += doc.0.bytes;
                if *from_source >= cap {
                    stream.exhaust(source);
                }
            }
            taken += doc.0.bytes;
            sink(doc.0, doc.1)?;
        }
        pb.inc(batch.len() as u64);
    }
}

/// Turns `config.sources` into token shards in `out_dir` (created if needed; shards of an
/// earlier run there are replaced) and returns the manifest it wrote. A copy of the tokenizer
/// is saved next to the shards as `tokenizer.json`.
pub fn prepare(config: &PrepareConfig, tokenizer: &Tokenizer, out_dir: &Path, progress: bool) -> Result<Manifest, DataError> {
    config.validate()?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    remove_old_outputs(out_dir)?;

    let mut stream = TaskStream::new(&config.sources, config.seed, config.shuffle_buffer)?;
    let pb = Progress::bar(progress, "prepare", stream.total_tasks(), Counter::Count("docs"));
    let ctx = WriteCtx {
        dir: out_dir,
        dtype: Dtype::for_vocab(tokenizer.vocab_size()),
        vocab_size: tokenizer.vocab_size(),
        shard_tokens: config.shard_tokens,
    };
    let mut writers = [SplitWriter::new(Split::Train), SplitWriter::new(Split::Val)];
    let mut stats: Vec<SourceStats> = config
        .sources
        .iter()
        .map(|s| SourceStats {
            source: s.clone(),
            documents: 0,
            bytes: 0,
            tokens: 0,
        })
        .collect();
    let (mut total_bytes, mut total_tokens) = (0u64, 0u64);
    let mut val_sources: Vec<SourceRun> = Vec::new();
    let started = std::time::Instant::now();
    let finished = drive(&mut stream, Some(tokenizer), config.max_bytes, &pb, |doc, _text| {
        let s = &mut stats[doc.source];
        s.documents += 1;
        s.bytes += doc.bytes;
        s.tokens += doc.tokens.len() as u64;
        total_bytes += doc.bytes;
        total_tokens += doc.tokens.len() as u64;
        let split = split_of(config.seed, &doc.key, config.val_fraction);
        if split == Split::Val {
            let tokens = doc.tokens.len() as u64;
            match val_sources.last_mut() {
                Some(run) if run.source == doc.source => run.tokens += tokens,
                _ => val_sources.push(SourceRun {
                    source: doc.source,
                    tokens,
                }),
            }
        }
        writers[split as usize].push(&doc, &ctx)?;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        pb.set_message(format!(
            "{:.1} MB, {:.2}M tokens, {:.2} MB/s",
            total_bytes as f64 / 1e6,
            total_tokens as f64 / 1e6,
            total_bytes as f64 / 1e6 / secs
        ));
        Ok(())
    })?;
    pb.finish();
    if finished {
        // With a byte cap a source may legitimately be cut off; without one, a source that
        // yielded no text at all (e.g. only blank files) is a mistake worth reporting.
        if let Some(s) = stats.iter().find(|s| s.documents == 0) {
            return Err(DataError::EmptySource {
                name: s.source.to_string(),
            });
        }
    }

    let mut shards = Vec::new();
    let mut totals = Totals::default();
    for w in &mut writers {
        w.flush(&ctx)?;
        for info in &w.written {
            let t = totals.get_mut(info.split);
            t.shards += 1;
            t.documents += info.documents;
            t.bytes += info.bytes;
            t.tokens += info.tokens;
        }
        shards.append(&mut w.written);
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        tokenizer_fingerprint: tokenizer.fingerprint(),
        vocab_size: tokenizer.vocab_size(),
        dtype: ctx.dtype,
        seed: config.seed,
        val_fraction: config.val_fraction,
        max_bytes: config.max_bytes,
        sources: stats,
        shards,
        totals,
        val_sources,
    };
    tokenizer.save(&out_dir.join("tokenizer.json"))?;
    // Written last and atomically: a folder with a manifest is always complete.
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| DataError::Manifest {
        path: out_dir.join(MANIFEST_FILE),
        reason: e.to_string(),
    })?;
    let tmp = out_dir.join(format!("{MANIFEST_FILE}.tmp"));
    std::fs::write(&tmp, json).map_err(io(&tmp))?;
    let final_path = out_dir.join(MANIFEST_FILE);
    std::fs::rename(&tmp, &final_path).map_err(io(&final_path))?;
    Ok(manifest)
}

/// Deletes the manifest and shard files a previous `prepare` left in `dir`.
fn remove_old_outputs(dir: &Path) -> Result<(), DataError> {
    let io = |path: PathBuf| move |source| DataError::Io { path, source };
    for entry in std::fs::read_dir(dir).map_err(io(dir.to_path_buf()))? {
        let path = entry.map_err(io(dir.to_path_buf()))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let is_shard = (name.starts_with("train_") || name.starts_with("val_")) && name.ends_with(".bin");
        if is_shard || name == MANIFEST_FILE {
            std::fs::remove_file(&path).map_err(io(path.clone()))?;
        }
    }
    Ok(())
}

/// Document texts from `sources` in the same interleaved, shuffled order `prepare` uses, up
/// to about `max_bytes` of text: the sample a tokenizer is trained on.
pub fn sample_texts(sources: &[Source], seed: u64, max_bytes: u64, progress: bool) -> Result<Vec<String>, DataError> {
    let mut stream = TaskStream::new(sources, seed, default_shuffle_buffer())?;
    let pb = Progress::bar(progress, "read text", stream.total_tasks(), Counter::Count("docs"));
    let mut texts = Vec::new();
    drive(&mut stream, None, Some(max_bytes), &pb, |_, text| {
        texts.push(text);
        Ok(())
    })?;
    pb.finish();
    Ok(texts)
}
