//! A whole corpus from one spec: the sources, a BPE tokenizer trained on a sample of them,
//! and the token shards with a held-out validation split. The speedrun and every scaling
//! ladder (its `[data]` table) describe their data with [`CorpusSpec`].

use std::path::{Path, PathBuf};

use ferrogpt_progress::Progress;
use ferrogpt_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::{prepare, sample_texts, DataError, Manifest, PrepareConfig, Source};

/// The corpus, tokenizer and split of a run. Its serde form is a ladder's `[data]` table and
/// the `corpus/spec.json` a scaling run saves next to its shards, so the field names stay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSpec {
    /// Include `/usr/share/man` when the machine has it.
    #[serde(default = "yes")]
    pub man_pages: bool,
    #[serde(default)]
    pub synthetic: Vec<SyntheticSource>,
    pub vocab_size: usize,
    /// Bytes of text the BPE tokenizer is trained on.
    pub tokenizer_bytes: u64,
    /// Stop preparing after this many bytes of text.
    pub max_bytes: u64,
    /// Fraction of documents held out for validation (never trained on).
    pub val_fraction: f64,
    #[serde(default)]
    pub seed: u64,
}

/// `count` documents of one synthetic generator (see [`crate::synthetic`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSource {
    pub generator: String,
    pub count: u64,
}

impl SyntheticSource {
    pub fn new(generator: &str, count: u64) -> SyntheticSource {
        SyntheticSource {
            generator: generator.to_string(),
            count,
        }
    }
}

fn yes() -> bool {
    true
}

/// A prepared corpus.
#[derive(Debug)]
pub struct Corpus {
    pub data_dir: PathBuf,
    pub tokenizer_path: PathBuf,
    pub manifest: Manifest,
    pub sources: Vec<Source>,
}

impl CorpusSpec {
    /// The sources this spec names; man pages only where the machine has them.
    pub fn sources(&self) -> Vec<Source> {
        let mut s = Vec::new();
        if self.man_pages && Source::man_pages_present() {
            s.push(Source::man_pages());
        }
        for synthetic in &self.synthetic {
            s.push(Source::Synthetic {
                generator: synthetic.generator.clone(),
                count: synthetic.count,
            });
        }
        s
    }
}

/// Trains a tokenizer on a sample of the sources and writes the shards:
/// `<dir>/tokenizer.json` and `<dir>/data/`.
pub fn build_corpus(spec: &CorpusSpec, dir: &Path, progress: bool) -> Result<Corpus, DataError> {
    std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let sources = spec.sources();
    let texts = sample_texts(&sources, spec.seed, spec.tokenizer_bytes, progress)?;
    let spinner = Progress::spinner(progress, "tokenizer");
    spinner.set_message(format!("training a {}-token BPE tokenizer", spec.vocab_size));
    let tokenizer = Tokenizer::train(texts.into_iter(), spec.vocab_size)?;
    spinner.finish();
    let tokenizer_path = dir.join("tokenizer.json");
    tokenizer.save(&tokenizer_path)?;
    let mut cfg = PrepareConfig::new(sources.clone());
    cfg.max_bytes = Some(spec.max_bytes);
    cfg.val_fraction = spec.val_fraction;
    cfg.seed = spec.seed;
    let data_dir = dir.join("data");
    let manifest = prepare(&cfg, &tokenizer, &data_dir, progress)?;
    Ok(Corpus {
        data_dir,
        tokenizer_path,
        manifest,
        sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_json_scaling_runs_saved_still_parses() {
        // `corpus/spec.json` as ferrogpt-scaling's `DataRecipe` wrote it before the type moved here.
        let saved = r#"{
  "man_pages": true,
  "synthetic": [
    {"generator": "arithmetic", "count": 200000},
    {"generator": "counting", "count": 100000}
  ],
  "vocab_size": 384,
  "tokenizer_bytes": 4194304,
  "max_bytes": 67108864,
  "val_fraction": 0.015,
  "seed": 0
}"#;
        let spec: CorpusSpec = serde_json::from_str(saved).unwrap();
        assert_eq!(
            spec,
            CorpusSpec {
                man_pages: true,
                synthetic: vec![
                    SyntheticSource::new("arithmetic", 200_000),
                    SyntheticSource::new("counting", 100_000)
                ],
                vocab_size: 384,
                tokenizer_bytes: 4_194_304,
                max_bytes: 67_108_864,
                val_fraction: 0.015,
                seed: 0,
            }
        );
        let back: CorpusSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let spec: CorpusSpec = toml::from_str("vocab_size = 512\ntokenizer_bytes = 1024\nmax_bytes = 2048\nval_fraction = 0.02\n").unwrap();
        assert!(spec.man_pages);
        assert!(spec.synthetic.is_empty());
        assert_eq!(spec.seed, 0);
        let e = toml::from_str::<CorpusSpec>("vocab_size = 512\ntokenizer_bytes = 1\nmax_bytes = 2\nval_fraction = 0.1\nvocab = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("vocab"), "{e}");
    }

    #[test]
    fn sources_follow_the_spec() {
        let spec = CorpusSpec {
            man_pages: false,
            synthetic: vec![SyntheticSource::new("arithmetic", 10)],
            vocab_size: 300,
            tokenizer_bytes: 1,
            max_bytes: 1,
            val_fraction: 0.1,
            seed: 0,
        };
        let sources = spec.sources();
        assert_eq!(sources.len(), 1);
        assert!(matches!(&sources[0], Source::Synthetic { generator, count: 10 } if generator == "arithmetic"));
    }
}
