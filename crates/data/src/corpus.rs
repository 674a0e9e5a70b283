//! A whole corpus from one spec: the sources, a BPE tokenizer trained on a sample of them,
//! and the token shards with a held-out validation split. The speedrun and every scaling
//! ladder (its `[data]` table) describe their data with [`CorpusSpec`].

use std::path::{Path, PathBuf};

use ferrogpt_progress::Progress;
use ferrogpt_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::english::English;
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
    /// General-English corpora from system packages, each capped so that a small preset is
    /// not swamped by 40 MB of dictionary.
    #[serde(default)]
    pub english: Vec<EnglishSource>,
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

/// One general-English corpus of a mix (see [`crate::english`]). In TOML:
/// `{ corpus = "gcide", max_bytes = 2097152 }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnglishSource {
    pub corpus: English,
    /// Where it is, when not at its standard install path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Most bytes of its text to take: a sample of its documents in a seeded order.
    pub max_bytes: u64,
    /// When the corpus is not installed, leave it out with a note instead of failing: the
    /// speedrun must run on a machine without it.
    #[serde(default = "yes")]
    pub optional: bool,
}

impl EnglishSource {
    /// An optional corpus capped at `max_bytes`.
    pub fn new(corpus: English, max_bytes: u64) -> EnglishSource {
        EnglishSource {
            corpus,
            path: None,
            max_bytes,
            optional: true,
        }
    }

    fn source(&self) -> Source {
        Source::English {
            corpus: self.corpus,
            path: self.path.clone(),
            max_bytes: Some(self.max_bytes),
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
    /// Optional corpora of the spec that are not installed and were left out, each with the
    /// error that says what is missing and how to install it.
    pub skipped: Vec<DataError>,
}

impl CorpusSpec {
    /// The sources this spec names; man pages and optional English corpora only where the
    /// machine has them (see [`CorpusSpec::skipped`]).
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
        for english in &self.english {
            if !english.optional || english.corpus.locate(english.path.as_deref()).is_ok() {
                s.push(english.source());
            }
        }
        s
    }

    /// The optional English corpora [`CorpusSpec::sources`] leaves out because they are not
    /// installed, each as the error naming the missing file and the install command.
    pub fn skipped(&self) -> Vec<DataError> {
        self.english
            .iter()
            .filter(|e| e.optional)
            .filter_map(|e| e.corpus.locate(e.path.as_deref()).err())
            .collect()
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
    let skipped = spec.skipped();
    for missing in &skipped {
        eprintln!("note: leaving out an optional corpus: {missing}");
    }
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
        skipped,
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
                english: Vec::new(),
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
            english: Vec::new(),
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

    #[test]
    fn english_mix_is_capped_and_absent_optional_corpora_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let moby = dir.path().join("moby");
        std::fs::create_dir(&moby).unwrap();
        for i in 0..40 {
            let chapter = format!("CHAPTER {i}. The Whale.\n\n{}", "Call me Ishmael. ".repeat(60));
            std::fs::write(moby.join(format!("chapter_{i}.txt")), chapter).unwrap();
        }
        let english = |corpus, path: PathBuf, optional| EnglishSource {
            corpus,
            path: Some(path),
            max_bytes: 5_000,
            optional,
        };
        let mut spec: CorpusSpec = toml::from_str(
            "man_pages = false\nvocab_size = 300\ntokenizer_bytes = 100000\nmax_bytes = 1000000\nval_fraction = 0.1\n\
             [[synthetic]]\ngenerator = \"counting\"\ncount = 200\n\
             [[english]]\ncorpus = \"moby-dick\"\nmax_bytes = 5000\n",
        )
        .unwrap();
        assert_eq!(spec.english, [EnglishSource::new(English::MobyDick, 5_000)]);
        spec.english = vec![
            english(English::MobyDick, moby.clone(), true),
            english(English::Sotu, dir.path().join("no-sotu"), true),
        ];
        assert_eq!(spec.sources().len(), 2, "the absent optional corpus is left out");
        let skipped = spec.skipped();
        assert_eq!(skipped.len(), 1);
        assert!(matches!(&skipped[0], DataError::CorpusNotInstalled { corpus, .. } if corpus == "sotu"));

        let corpus = build_corpus(&spec, &dir.path().join("out"), false).unwrap();
        assert_eq!(corpus.skipped.len(), 1);
        let stats = &corpus.manifest.sources;
        assert_eq!(stats[1].source.to_string(), format!("moby-dick:{}", moby.display()));
        // Chapters are about 1 kB: the cap stops the corpus at the first chapter past it.
        assert!((5_000..6_200).contains(&stats[1].bytes), "{:?}", stats[1]);

        spec.english[1].optional = false;
        assert_eq!(spec.sources().len(), 3);
        let err = build_corpus(&spec, &dir.path().join("strict"), false).unwrap_err();
        assert!(err.to_string().contains("no-sotu"), "{err}");
    }
}
