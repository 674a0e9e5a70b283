//! The on-disk format: binary token shards and `manifest.json`.
//!
//! A shard is a 32-byte little-endian header followed by the tokens:
//! `magic "FGPTTOKS"`, `version: u32 = 1`, `bytes_per_token: u32` (2 or 4),
//! `tokens: u64`, `vocab_size: u32`, `reserved: u32 = 0`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::source::Source;
use crate::DataError;

pub const SHARD_MAGIC: &[u8; 8] = b"FGPTTOKS";
pub const SHARD_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 32;
pub const MANIFEST_FILE: &str = "manifest.json";
/// Version of the manifest layout.
pub const MANIFEST_VERSION: u32 = 1;

/// Train or validation half of the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Token storage width, chosen from the vocab size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    U16,
    U32,
}

impl Dtype {
    pub fn for_vocab(vocab_size: usize) -> Dtype {
        if vocab_size <= 1 << 16 {
            Dtype::U16
        } else {
            Dtype::U32
        }
    }

    pub fn width(self) -> usize {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }
}

/// One shard's entry in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    /// File name, relative to the manifest's folder.
    pub file: String,
    pub split: Split,
    pub documents: u64,
    /// UTF-8 bytes of document text (specials excluded).
    pub bytes: u64,
    pub tokens: u64,
    /// SHA-256 (hex) of the whole file.
    pub sha256: String,
}

/// Totals of one split.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitTotals {
    pub shards: u64,
    pub documents: u64,
    pub bytes: u64,
    pub tokens: u64,
}

/// Per-split totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub train: SplitTotals,
    pub val: SplitTotals,
}

impl Totals {
    pub fn get(&self, split: Split) -> &SplitTotals {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    pub(crate) fn get_mut(&mut self, split: Split) -> &mut SplitTotals {
        match split {
            Split::Train => &mut self.train,
            Split::Val => &mut self.val,
        }
    }
}

/// Per-source document counts, to show what the corpus is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceStats {
    pub source: Source,
    pub documents: u64,
    pub bytes: u64,
    pub tokens: u64,
}

/// A run of consecutive validation tokens from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRun {
    /// Position of the source in [`Manifest::sources`].
    pub source: usize,
    pub tokens: u64,
}

/// `manifest.json`: everything needed to check and reproduce a prepared corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub tokenizer_fingerprint: String,
    pub vocab_size: usize,
    pub dtype: Dtype,
    pub seed: u64,
    pub val_fraction: f64,
    pub max_bytes: Option<u64>,
    pub sources: Vec<SourceStats>,
    pub shards: Vec<ShardInfo>,
    pub totals: Totals,
    /// Which source each stretch of the validation stream (its shards in order) comes from,
    /// so validation can be scored per source. Empty in manifests written before it existed.
    #[serde(default)]
    pub val_sources: Vec<SourceRun>,
}

impl Manifest {
    /// Reads `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Manifest, DataError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| DataError::Manifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if m.version != MANIFEST_VERSION {
            return Err(DataError::Manifest {
                path,
                reason: format!("version {} (expected {MANIFEST_VERSION})", m.version),
            });
        }
        Ok(m)
    }
}

/// Encodes a shard file (header + tokens) in memory; returns the bytes and their SHA-256.
pub(crate) fn encode_shard(tokens: &[u32], dtype: Dtype, vocab_size: usize) -> (Vec<u8>, String) {
    let mut buf = Vec::with_capacity(HEADER_LEN + tokens.len() * dtype.width());
    buf.extend_from_slice(SHARD_MAGIC);
    buf.extend_from_slice(&SHARD_VERSION.to_le_bytes());
    buf.extend_from_slice(&(dtype.width() as u32).to_le_bytes());
    buf.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    buf.extend_from_slice(&(vocab_size as u32).to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    match dtype {
        // `Dtype::for_vocab` guarantees ids fit in 16 bits here.
        Dtype::U16 => tokens.iter().for_each(|&t| buf.extend_from_slice(&(t as u16).to_le_bytes())),
        Dtype::U32 => tokens.iter().for_each(|&t| buf.extend_from_slice(&t.to_le_bytes())),
    }
    let sha = ferrogpt_tokenizer::hex(&Sha256::digest(&buf));
    (buf, sha)
}

/// Decodes a shard's bytes (already checksum-verified) into `out`; errors name `file`.
pub(crate) fn decode_shard(file: &Path, bytes: &[u8], expect_dtype: Dtype, out: &mut Vec<u32>) -> Result<u64, DataError> {
    let bad = |reason: String| DataError::ShardHeader {
        file: file.to_path_buf(),
        reason,
    };
    if bytes.len() < HEADER_LEN {
        return Err(bad(format!("file is {} bytes, shorter than the header", bytes.len())));
    }
    if &bytes[..8] != SHARD_MAGIC {
        return Err(bad("bad magic (not a ferrogpt token shard)".into()));
    }
    let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let version = u32_at(8);
    if version != SHARD_VERSION {
        return Err(bad(format!("unsupported version {version}")));
    }
    let width = u32_at(12) as usize;
    if width != expect_dtype.width() {
        return Err(bad(format!("{width} bytes per token, manifest says {}", expect_dtype.width())));
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&bytes[16..24]);
    let count = u64::from_le_bytes(count);
    let body = &bytes[HEADER_LEN..];
    if (body.len() as u64) != count.saturating_mul(width as u64) {
        return Err(bad(format!(
            "header says {count} tokens but the file holds {} bytes of tokens (truncated?)",
            body.len()
        )));
    }
    out.reserve(count as usize);
    match expect_dtype {
        Dtype::U16 => out.extend(body.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)),
        Dtype::U32 => out.extend(body.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
    }
    Ok(count)
}
