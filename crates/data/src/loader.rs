//! Loading shards back: checksum-verified token streams, a resumable shuffled batch loader
//! for training and a sequential one for evaluation.

use std::path::{Path, PathBuf};

use ferrogpt_rng::SplitMix64;
use ferrogpt_tokenizer::Tokenizer;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::shard::{decode_shard, Manifest, Split};
use crate::DataError;

/// One split of a prepared corpus, verified and held in memory as one token stream
/// (the split's shards concatenated in manifest order).
#[derive(Debug)]
pub struct TokenShards {
    dir: PathBuf,
    manifest: Manifest,
    split: Split,
    tokens: Vec<u32>,
}

impl TokenShards {
    /// Opens `dir` (with its `manifest.json`) and loads `split`, checking every shard's
    /// SHA-256 and header; errors name the shard file.
    pub fn open(dir: &Path, split: Split) -> Result<TokenShards, DataError> {
        let manifest = Manifest::load(dir)?;
        let infos: Vec<_> = manifest.shards.iter().filter(|s| s.split == split).collect();
        let parts: Vec<Vec<u32>> = infos
            .par_iter()
            .map(|info| {
                let path = dir.join(&info.file);
                let bytes = std::fs::read(&path).map_err(|source| DataError::Io {
                    path: path.clone(),
                    source,
                })?;
                let actual = ferrogpt_tokenizer::hex(&Sha256::digest(&bytes));
                if actual != info.sha256 {
                    return Err(DataError::ShardChecksum {
                        file: path,
                        expected: info.sha256.clone(),
                        actual,
                    });
                }
                let mut out = Vec::new();
                let count = decode_shard(&path, &bytes, manifest.dtype, &mut out)?;
                if count != info.tokens {
                    return Err(DataError::ShardHeader {
                        file: path,
                        reason: format!("{count} tokens, manifest says {}", info.tokens),
                    });
                }
                Ok(out)
            })
            .collect::<Result<_, _>>()?;
        let tokens = parts.concat();
        Ok(TokenShards {
            dir: dir.to_path_buf(),
            manifest,
            split,
            tokens,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn split(&self) -> Split {
        self.split
    }

    /// The split's whole token stream.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Bytes of document text in this split (from the manifest).
    pub fn text_bytes(&self) -> u64 {
        self.manifest.totals.get(self.split).bytes
    }

    /// The source of every token of the validation split, as positions in
    /// [`Manifest::sources`], from the manifest's [`Manifest::val_sources`]: what scoring
    /// validation per source needs. Errors for the train split and for manifests that do not
    /// account for every validation token (written before per-source runs were recorded).
    pub fn token_sources(&self) -> Result<Vec<usize>, DataError> {
        let bad = |reason: String| DataError::Manifest {
            path: self.dir.join(crate::MANIFEST_FILE),
            reason,
        };
        if self.split != Split::Val {
            return Err(bad("token sources are recorded for the val split only".into()));
        }
        let mut sources = Vec::with_capacity(self.tokens.len());
        for run in &self.manifest.val_sources {
            if run.source >= self.manifest.sources.len() {
                return Err(bad(format!(
                    "val_sources names source {} of {}",
                    run.source,
                    self.manifest.sources.len()
                )));
            }
            let room = (self.tokens.len() - sources.len()) as u64;
            if run.tokens > room {
                return Err(bad(format!(
                    "val_sources holds more tokens than the {} val tokens",
                    self.tokens.len()
                )));
            }
            sources.extend(std::iter::repeat_n(run.source, run.tokens as usize));
        }
        if sources.len() != self.tokens.len() {
            return Err(bad(format!(
                "val_sources accounts for {} of the {} val tokens (prepare the corpus again to score validation per source)",
                sources.len(),
                self.tokens.len()
            )));
        }
        Ok(sources)
    }

    /// Errors unless the shards were made with `tokenizer`.
    pub fn check_tokenizer(&self, tokenizer: &Tokenizer) -> Result<(), DataError> {
        let have = tokenizer.fingerprint();
        if have != self.manifest.tokenizer_fingerprint {
            return Err(DataError::TokenizerMismatch {
                dir: self.dir.clone(),
                expected: self.manifest.tokenizer_fingerprint.clone(),
                actual: have,
            });
        }
        Ok(())
    }

    /// Number of training windows of `seq_len + 1` tokens (consecutive windows share one
    /// token so every token is a target once per epoch).
    pub fn windows(&self, seq_len: usize) -> usize {
        if seq_len == 0 {
            return 0;
        }
        self.tokens.len().saturating_sub(1) / seq_len
    }

    fn check_shape(&self, batch: usize, seq_len: usize) -> Result<usize, DataError> {
        if batch == 0 || seq_len == 0 {
            return Err(DataError::InvalidConfig {
                field: if batch == 0 { "batch" } else { "seq_len" }.into(),
                reason: "must be at least 1".into(),
            });
        }
        let windows = self.windows(seq_len);
        if windows == 0 {
            return Err(DataError::NotEnoughTokens {
                dir: self.dir.clone(),
                split: self.split,
                tokens: self.tokens.len(),
                needed: seq_len + 1,
            });
        }
        Ok(windows)
    }

    fn fill_row(&self, window: usize, seq_len: usize, inputs: &mut Vec<u32>, targets: &mut Vec<u32>) {
        let start = window * seq_len;
        let w = &self.tokens[start..start + seq_len + 1];
        inputs.extend_from_slice(&w[..seq_len]);
        targets.extend_from_slice(&w[1..]);
    }

    /// Every window in order, `batch` rows at a time (the last batch may have fewer rows):
    /// the deterministic pass used for validation.
    pub fn sequential_batches(&self, batch: usize, seq_len: usize) -> Result<SequentialBatches<'_>, DataError> {
        let windows = self.check_shape(batch, seq_len)?;
        Ok(SequentialBatches {
            shards: self,
            batch,
            seq_len,
            next: 0,
            windows,
        })
    }
}

/// Rows of `seq_len` inputs and their next-token targets, flattened row-major.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub rows: usize,
    pub seq_len: usize,
}

impl Batch {
    /// Bytes of text the targets stand for (specials count 0): the denominator of
    /// bits per byte.
    pub fn target_bytes(&self, tokenizer: &Tokenizer) -> u64 {
        self.targets.iter().map(|&t| tokenizer.token_byte_len(t) as u64).sum()
    }
}

/// Iterator of [`TokenShards::sequential_batches`].
#[derive(Debug)]
pub struct SequentialBatches<'a> {
    shards: &'a TokenShards,
    batch: usize,
    seq_len: usize,
    next: usize,
    windows: usize,
}

impl SequentialBatches<'_> {
    /// Number of batches the iterator yields in total.
    pub fn num_batches(&self) -> usize {
        self.windows.div_ceil(self.batch)
    }
}

impl Iterator for SequentialBatches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.windows {
            return None;
        }
        let rows = self.batch.min(self.windows - self.next);
        let mut b = Batch {
            inputs: Vec::with_capacity(rows * self.seq_len),
            targets: Vec::with_capacity(rows * self.seq_len),
            rows,
            seq_len: self.seq_len,
        };
        for w in self.next..self.next + rows {
            self.shards.fill_row(w, self.seq_len, &mut b.inputs, &mut b.targets);
        }
        self.next += rows;
        Some(b)
    }
}

/// Where a [`BatchLoader`] is; saved in checkpoints so training resumes on the same batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderState {
    pub seed: u64,
    pub batch: usize,
    pub seq_len: usize,
    /// Windows per epoch when the state was taken (detects a different corpus).
    pub windows: usize,
    pub epoch: u64,
    /// Position in the epoch's window permutation.
    pub cursor: usize,
}

/// Training batches: windows of `seq_len + 1` tokens visited in a fresh seeded permutation
/// each epoch; a batch that runs past an epoch's end continues into the next epoch.
#[derive(Debug)]
pub struct BatchLoader {
    shards: TokenShards,
    batch: usize,
    seq_len: usize,
    seed: u64,
    epoch: u64,
    cursor: usize,
    perm: Vec<u32>,
}

impl BatchLoader {
    pub fn new(shards: TokenShards, batch: usize, seq_len: usize, seed: u64) -> Result<Self, DataError> {
        let windows = shards.check_shape(batch, seq_len)?;
        if u32::try_from(windows).is_err() {
            return Err(DataError::InvalidConfig {
                field: "seq_len".into(),
                reason: format!("{windows} windows per epoch is more than this loader indexes"),
            });
        }
        let mut loader = BatchLoader {
            shards,
            batch,
            seq_len,
            seed,
            epoch: 0,
            cursor: 0,
            perm: Vec::new(),
        };
        loader.perm = loader.permutation(0);
        Ok(loader)
    }

    fn permutation(&self, epoch: u64) -> Vec<u32> {
        let mut perm: Vec<u32> = (0..self.shards.windows(self.seq_len) as u32).collect();
        SplitMix64::derived(self.seed, epoch).shuffle(&mut perm);
        perm
    }

    pub fn shards(&self) -> &TokenShards {
        &self.shards
    }

    pub fn windows_per_epoch(&self) -> usize {
        self.perm.len()
    }

    /// Epochs completed so far plus the fraction of the current one.
    pub fn epoch_progress(&self) -> f64 {
        self.epoch as f64 + self.cursor as f64 / self.perm.len() as f64
    }

    /// Tokens of the split seen per epoch (inputs).
    pub fn tokens_per_epoch(&self) -> usize {
        self.perm.len() * self.seq_len
    }

    /// The next batch, reusing `out`'s buffers.
    pub fn next_into(&mut self, out: &mut Batch) {
        out.inputs.clear();
        out.targets.clear();
        out.rows = self.batch;
        out.seq_len = self.seq_len;
        for _ in 0..self.batch {
            if self.cursor == self.perm.len() {
                self.epoch += 1;
                self.cursor = 0;
                self.perm = self.permutation(self.epoch);
            }
            let w = self.perm[self.cursor] as usize;
            self.cursor += 1;
            self.shards.fill_row(w, self.seq_len, &mut out.inputs, &mut out.targets);
        }
    }

    pub fn next_batch(&mut self) -> Batch {
        let mut b = Batch::default();
        self.next_into(&mut b);
        b
    }

    pub fn state(&self) -> LoaderState {
        LoaderState {
            seed: self.seed,
            batch: self.batch,
            seq_len: self.seq_len,
            windows: self.perm.len(),
            epoch: self.epoch,
            cursor: self.cursor,
        }
    }

    /// Continues from a saved state; the shape and corpus must match the state's.
    pub fn restore(&mut self, state: &LoaderState) -> Result<(), DataError> {
        let mismatch = |what: &str, saved: String, now: String| DataError::LoaderState {
            reason: format!("{what} is {now} but the saved state has {saved}"),
        };
        if state.batch != self.batch {
            return Err(mismatch("batch", state.batch.to_string(), self.batch.to_string()));
        }
        if state.seq_len != self.seq_len {
            return Err(mismatch("seq_len", state.seq_len.to_string(), self.seq_len.to_string()));
        }
        if state.windows != self.perm.len() {
            return Err(mismatch(
                "windows per epoch (corpus)",
                state.windows.to_string(),
                self.perm.len().to_string(),
            ));
        }
        if state.cursor > state.windows {
            return Err(DataError::LoaderState {
                reason: format!("cursor {} past the epoch's {} windows", state.cursor, state.windows),
            });
        }
        self.seed = state.seed;
        self.epoch = state.epoch;
        self.cursor = state.cursor;
        self.perm = self.permutation(state.epoch);
        Ok(())
    }
}

/// Bits per byte of a unigram model (token frequencies of `train`, add-one smoothed) on
/// `val`: the baseline a trained model must beat. Every val token after the first is a
/// target; specials cost bits but stand for no bytes, as in the model's own bits per byte.
pub fn unigram_bits_per_byte(train: &TokenShards, val: &TokenShards, tokenizer: &Tokenizer) -> Result<f64, DataError> {
    let vocab = tokenizer.vocab_size();
    let mut counts = vec![1u64; vocab];
    for &t in train.tokens() {
        if let Some(c) = counts.get_mut(t as usize) {
            *c += 1;
        }
    }
    let total: u64 = counts.iter().sum();
    let log_total = (total as f64).log2();
    let (mut bits, mut bytes) = (0f64, 0u64);
    for &t in val.tokens().iter().skip(1) {
        let c = counts.get(t as usize).copied().unwrap_or(1);
        bits += log_total - (c as f64).log2();
        bytes += tokenizer.token_byte_len(t) as u64;
    }
    if bytes == 0 {
        return Err(DataError::NotEnoughTokens {
            dir: val.dir.clone(),
            split: val.split,
            tokens: val.len(),
            needed: 2,
        });
    }
    Ok(bits / bytes as f64)
}
