//! `ferrogpt speedrun`: data -> tokenizer -> shards -> pretraining -> samples
//! -> post-training (SFT, reward model, safety and moderation classifiers, RLHF:
//! [`post_training`]) -> the models' scorecards, ending in `report.md`.
//!
//! The corpus is what any machine has: the system's manual pages when present,
//! plus the project's synthetic generators, so the run never fails for lack of
//! data. Everything lands in one folder:
//!
//! ```text
//! DIR/tokenizer.json  DIR/data/ (shards, manifest.json)  DIR/train.toml
//! DIR/metrics.jsonl   DIR/loss.svg   DIR/checkpoints/   DIR/base/ (pretrained)
//! DIR/sft/ DIR/reward/ DIR/safety/ DIR/moderation/ DIR/rlhf/ (each with its model/)
//! DIR/model/ (the final chat model, its moderation classifier in model/moderation/)
//! DIR/report.md   DIR/summary.json   DIR/post_training.svg
//! ```
//! `DIR/train.toml` and `DIR/sft/sft.toml` are the exact training configs, so
//! `ferrogpt train --config ... --resume` continues an interrupted stage.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ferrogpt_data::english::English;
use ferrogpt_data::{build_corpus, Corpus, CorpusSpec, EnglishSource, Source, Split, SyntheticSource, TokenShards};
use ferrogpt_engine::config::swiglu_hidden;
use ferrogpt_engine::{AdamWConfig, ModelConfig, Schedule};
use ferrogpt_infer::{text_prompt, GenerationRequest, LocalModel, SamplingParams};
use ferrogpt_progress::Progress;
use ferrogpt_tokenizer::Tokenizer;

use crate::config::{CheckpointConfig, DataConfig, EvalConfig, Hyper, TrainConfig};
use crate::peak::PeakSource;
use crate::post_training::{self, fmt_secs, PostSpec, PostTraining, RlhfSpec, ScorerSpec, SftSpec};
use crate::trainer::{self, human, SourceBpb, TrainOptions, TrainSummary};
use crate::{io_err, TrainError};

/// Size of a speedrun.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Under two minutes end to end: a pipeline check for tests and CI.
    Smoke,
    /// About twenty minutes on two cores: the README's main job.
    Default,
    /// An overnight run: the best model this machine makes.
    Large,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Smoke => "smoke",
            Preset::Default => "default",
            Preset::Large => "large",
        }
    }
}

/// Everything a preset fixes.
#[derive(Clone, Debug)]
pub struct PresetSpec {
    pub corpus: CorpusSpec,
    pub model: ModelConfig,
    pub seq_len: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub steps: u64,
    pub lr: f64,
    pub eval_every: u64,
    pub eval_tokens: usize,
    pub checkpoint_every: u64,
    pub sample_tokens: usize,
    pub post: PostSpec,
}

fn model(vocab: usize, d: usize, layers: usize, heads: usize, ctx: usize) -> ModelConfig {
    ModelConfig {
        vocab_size: vocab,
        d_model: d,
        n_layers: layers,
        n_heads: heads,
        n_kv_heads: heads,
        ffn_hidden: swiglu_hidden(d),
        max_seq_len: ctx,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: false,
        num_labels: None,
    }
}

/// Every general-English corpus (dictionary, WordNet glosses, the Python docs, speeches, a
/// book) capped at `cap` bytes each; optional, so a machine without one still runs.
fn english_mix(cap: u64) -> Vec<EnglishSource> {
    English::ALL.iter().map(|&c| EnglishSource::new(c, cap)).collect()
}

fn synthetic(arith: u64, counting: u64) -> Vec<SyntheticSource> {
    vec![
        SyntheticSource::new("arithmetic", arith),
        SyntheticSource::new("counting", counting),
    ]
}

impl PresetSpec {
    pub fn of(preset: Preset) -> PresetSpec {
        const MB: u64 = 1 << 20;
        match preset {
            // A few hundred thousand tokens through a ~0.4M-parameter model.
            Preset::Smoke => PresetSpec {
                corpus: CorpusSpec {
                    man_pages: true,
                    synthetic: synthetic(4_000, 2_000),
                    vocab_size: 1024,
                    tokenizer_bytes: MB,
                    max_bytes: 2 * MB,
                    val_fraction: 0.02,
                    seed: 0,
                    english: Vec::new(),
                },
                model: model(1024, 64, 2, 4, 128),
                seq_len: 128,
                batch_size: 8,
                grad_accum: 1,
                steps: 150,
                lr: 3e-3,
                eval_every: 50,
                eval_tokens: 8_192,
                checkpoint_every: 75,
                sample_tokens: 48,
                post: PostSpec {
                    sft: SftSpec {
                        train_conversations: 300,
                        val_conversations: 40,
                        eval_requests: 60,
                        epochs: 1.0,
                        lr: 1e-3,
                        batch_size: 8,
                        reply_tokens: 24,
                    },
                    scorers: ScorerSpec {
                        train_examples: 600,
                        test_examples: 200,
                        steps: 30,
                        batch_size: 8,
                        lr: 1e-3,
                    },
                    rlhf: RlhfSpec {
                        steps: 8,
                        prompts_per_step: 4,
                        group_size: 4,
                        max_reply_tokens: 24,
                        lr: 3e-5,
                        beta: 0.05,
                    },
                },
            },
            // The benchmark's reference shape (vocab 4096, d 256, 4 layers, 4
            // heads, ctx 256, batch 16) for ~3.3M tokens: 16 minutes at the 3,400
            // tokens/s PyTorch reaches on two cores, and under half an epoch of
            // the 24 MB corpus, so validation measures generalisation.
            Preset::Default => PresetSpec {
                corpus: CorpusSpec {
                    man_pages: true,
                    synthetic: synthetic(60_000, 30_000),
                    vocab_size: 4096,
                    tokenizer_bytes: 8 * MB,
                    max_bytes: 24 * MB,
                    val_fraction: 0.01,
                    seed: 0,
                    english: english_mix(2 * MB),
                },
                model: ModelConfig::reference(),
                seq_len: 256,
                batch_size: 16,
                grad_accum: 1,
                steps: 800,
                lr: 2e-3,
                eval_every: 200,
                eval_tokens: 32_768,
                checkpoint_every: 200,
                sample_tokens: 96,
                post: PostSpec {
                    sft: SftSpec {
                        train_conversations: 6_000,
                        val_conversations: 200,
                        eval_requests: 400,
                        epochs: 2.0,
                        lr: 1e-3,
                        batch_size: 16,
                        // The safe completions of sensitive requests reach their pointer to
                        // help (a doctor, a crisis line) after ~60 tokens.
                        reply_tokens: 96,
                    },
                    scorers: ScorerSpec {
                        train_examples: 4_000,
                        test_examples: 600,
                        steps: 150,
                        batch_size: 8,
                        lr: 5e-4,
                    },
                    rlhf: RlhfSpec {
                        steps: 40,
                        prompts_per_step: 8,
                        group_size: 4,
                        max_reply_tokens: 64,
                        lr: 3e-5,
                        beta: 0.05,
                    },
                },
            },
            // About 12M parameters (d 320, 6 layers, ctx 512) for ~49M tokens, two
            // epochs of every man page: ~10 hours at ~1,300 tokens/s on two cores
            // (2.5x the reference shape's FLOPs per token, so ~40% of its speed).
            Preset::Large => PresetSpec {
                corpus: CorpusSpec {
                    man_pages: true,
                    synthetic: synthetic(400_000, 200_000),
                    vocab_size: 8192,
                    tokenizer_bytes: 32 * MB,
                    max_bytes: 512 * MB,
                    val_fraction: 0.005,
                    seed: 0,
                    english: english_mix(64 * MB),
                },
                model: model(8192, 320, 6, 5, 512),
                seq_len: 512,
                batch_size: 16,
                grad_accum: 1,
                steps: 6_000,
                lr: 1.5e-3,
                eval_every: 500,
                eval_tokens: 131_072,
                checkpoint_every: 250,
                sample_tokens: 160,
                post: PostSpec {
                    sft: SftSpec {
                        train_conversations: 40_000,
                        val_conversations: 500,
                        eval_requests: 1_000,
                        epochs: 3.0,
                        lr: 6e-4,
                        batch_size: 16,
                        reply_tokens: 64,
                    },
                    scorers: ScorerSpec {
                        train_examples: 20_000,
                        test_examples: 2_000,
                        steps: 600,
                        batch_size: 16,
                        lr: 3e-4,
                    },
                    rlhf: RlhfSpec {
                        steps: 200,
                        prompts_per_step: 16,
                        group_size: 4,
                        max_reply_tokens: 64,
                        lr: 2e-5,
                        beta: 0.05,
                    },
                },
            },
        }
    }

    /// The training config of this preset, writing into `out`.
    pub fn train_config(&self, out: &Path, data_dir: &Path, tokenizer: &Path) -> TrainConfig {
        TrainConfig {
            out_dir: out.to_path_buf(),
            model: self.model.clone(),
            data: DataConfig::shards(data_dir, tokenizer),
            train: Hyper {
                seq_len: self.seq_len,
                batch_size: self.batch_size,
                grad_accum: self.grad_accum,
                steps: self.steps,
                lr: self.lr,
                init_std: 0.02,
                clip_norm: 1.0,
                seed: self.corpus.seed,
                init_from: None,
            },
            schedule: Schedule::Wsd {
                warmup_frac: 0.05,
                cooldown_frac: 0.3,
            },
            optimizer: AdamWConfig::default(),
            eval: EvalConfig {
                every: self.eval_every,
                tokens: self.eval_tokens,
            },
            checkpoint: CheckpointConfig {
                every: self.checkpoint_every,
                keep: 1,
            },
        }
    }
}

/// What `speedrun` produced.
#[derive(Debug)]
pub struct SpeedrunReport {
    pub report: PathBuf,
    /// The final chat model.
    pub model_dir: PathBuf,
    /// The pretrained model it was fine-tuned from.
    pub base_dir: PathBuf,
    /// Pretraining.
    pub summary: TrainSummary,
    pub post: PostTraining,
    pub unigram_bpb: f64,
    pub wall_secs: f64,
}

/// Where the pretrained model is kept once fine-tuning starts from it.
pub const BASE_DIR: &str = "base";

/// The headline figures of a speedrun as JSON, next to `report.md`.
pub const SUMMARY_FILE: &str = "summary.json";

/// Prompts the report samples from: a man page opening, prose, and the
/// synthetic tasks' question format.
const PROMPTS: &[&str] = &["NAME\n       ls - ", "The file ", "Q: What is 12 + 7?\nA:", "DESCRIPTION\n"];

/// Runs the whole pipeline into `out` (replacing an earlier run there).
pub fn speedrun(preset: Preset, out: &Path, progress: bool) -> Result<SpeedrunReport, TrainError> {
    let spec = PresetSpec::of(preset);
    let t0 = Instant::now();
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    // Absolute paths in `train.toml` keep `ferrogpt train --resume` working from any directory.
    let out = &out.canonicalize().map_err(io_err(out))?;
    for stale in ["checkpoints", trainer::MODEL_DIR, BASE_DIR]
        .into_iter()
        .chain(post_training::STAGE_DIRS)
    {
        let p = out.join(stale);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(io_err(&p))?;
        }
    }
    let mut stages: Vec<(&'static str, f64)> = Vec::new();

    let t = Instant::now();
    let corpus = build_corpus(&spec.corpus, out, progress)?;
    stages.push(("data + tokenizer + shards", t.elapsed().as_secs_f64()));

    let cfg = spec.train_config(out, &corpus.data_dir, &corpus.tokenizer_path);
    let cfg_path = out.join("train.toml");
    std::fs::write(&cfg_path, cfg.to_toml()?).map_err(io_err(&cfg_path))?;
    let t = Instant::now();
    let summary = trainer::train(&cfg, &TrainOptions { resume: false, progress })?;
    stages.push(("pretraining (incl. evaluation, checkpoints)", t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let tokenizer = Tokenizer::from_file(&corpus.tokenizer_path)?;
    let train_shards = TokenShards::open(&corpus.data_dir, Split::Train)?;
    let val_shards = TokenShards::open(&corpus.data_dir, Split::Val)?;
    let unigram_bpb = ferrogpt_data::unigram_bits_per_byte(&train_shards, &val_shards, &tokenizer)?;
    let pb = Progress::spinner(progress, "samples");
    pb.set_message(format!("sampling {} completions", PROMPTS.len()));
    let samples = sample_all(&summary.model_dir, spec.sample_tokens)?;
    pb.finish();
    stages.push(("baseline + samples", t.elapsed().as_secs_f64()));

    // The pretrained model becomes DIR/base; post-training starts from it and publishes the
    // chat model as DIR/model, the folder `ferrogpt serve` and the report point at.
    let base_dir = out.join(BASE_DIR);
    std::fs::rename(&summary.model_dir, &base_dir).map_err(io_err(&base_dir))?;
    let model_dir = out.join(trainer::MODEL_DIR);
    let t = Instant::now();
    let by_source = trainer::val_bpb_by_source(&base_dir, &corpus.data_dir, spec.batch_size, spec.seq_len, val_shards.len())?;
    stages.push(("validation bits per byte by source", t.elapsed().as_secs_f64()));
    let post = post_training::run(&spec.post, out, &base_dir, &model_dir, progress, &mut stages)?;

    let wall_secs = t0.elapsed().as_secs_f64();
    let report = out.join("report.md");
    let text = render_report(&ReportInput {
        preset,
        spec: &spec,
        corpus: &corpus,
        summary: &summary,
        post: &post,
        by_source: &by_source,
        base_dir: &base_dir,
        model_dir: &model_dir,
        unigram_bpb,
        samples: &samples,
        stages: &stages,
        wall_secs,
        out,
    });
    std::fs::write(&report, text).map_err(io_err(&report))?;
    // The headline figures in machine-readable form, for scripts and later stages.
    let figures = serde_json::json!({
        "preset": preset.name(),
        "val_bpb": summary.val_bpb,
        "unigram_bpb": unigram_bpb,
        "val_loss": summary.val_loss,
        "final_train_loss": summary.final_loss,
        "params": summary.params,
        "non_embedding_params": summary.non_embedding_params,
        "train_tokens": summary.tokens,
        "train_flops": summary.train_flops,
        "train_secs": summary.train_secs,
        "tokens_per_sec": summary.tokens_per_sec,
        "mfu": summary.mfu,
        "peak_flops": summary.peak.flops(),
        "peak_source": match summary.peak.source() {
            PeakSource::Sgemm => "measured sgemm",
            PeakSource::Fma => "FMA",
        },
        "sgemm_peak_flops": summary.peak.sgemm_flops,
        "sgemm_peak_bursts": summary.peak.bursts,
        "fma_peak_flops": summary.peak.fma.as_ref().map(|f| f.flops()),
        "wall_secs": wall_secs,
        "corpus_train_bytes": corpus.manifest.totals.train.bytes,
        "corpus_train_tokens": corpus.manifest.totals.train.tokens,
        "val_bpb_by_source": by_source
            .iter()
            .map(|b| serde_json::json!({"source": b.source, "bits_per_byte": b.bits_per_byte, "tokens": b.tokens, "bytes": b.bytes}))
            .collect::<Vec<_>>(),
        "post_training": post_training::summary_json(&post),
    });
    let summary_path = out.join(SUMMARY_FILE);
    std::fs::write(&summary_path, serde_json::to_string_pretty(&figures).unwrap_or_default()).map_err(io_err(&summary_path))?;
    Ok(SpeedrunReport {
        report,
        model_dir,
        base_dir,
        summary,
        post,
        unigram_bpb,
        wall_secs,
    })
}

/// Samples a completion of every prompt from the saved model folder, which also proves the
/// folder loads the way `ferrogpt generate` loads it. The prompts are raw text under the BOS
/// policy (training documents start with `<|bos|>`, so samples do too), decoded together.
fn sample_all(model_dir: &Path, max_tokens: usize) -> Result<Vec<(String, String)>, TrainError> {
    let model = LocalModel::load(model_dir)?;
    let params = SamplingParams {
        temperature: 0.8,
        top_p: 0.95,
        max_tokens: Some(max_tokens),
        seed: Some(0),
        ..SamplingParams::default()
    };
    let requests: Vec<GenerationRequest> = PROMPTS
        .iter()
        .map(|prompt| GenerationRequest::new(text_prompt(model.tokenizer(), prompt).ids, params.clone()))
        .collect();
    let completions = model.generate(&requests)?;
    Ok(PROMPTS.iter().zip(completions).map(|(p, c)| (p.to_string(), c.text)).collect())
}

struct ReportInput<'a> {
    preset: Preset,
    spec: &'a PresetSpec,
    corpus: &'a Corpus,
    summary: &'a TrainSummary,
    post: &'a PostTraining,
    by_source: &'a [SourceBpb],
    base_dir: &'a Path,
    model_dir: &'a Path,
    unigram_bpb: f64,
    samples: &'a [(String, String)],
    stages: &'a [(&'a str, f64)],
    wall_secs: f64,
    out: &'a Path,
}

fn render_report(r: &ReportInput) -> String {
    let (s, m, c) = (r.summary, &r.spec.model, &r.corpus.manifest.totals);
    let mut t = String::new();
    let _ = writeln!(t, "# ferrogpt speedrun — `{}` preset\n", r.preset.name());
    let _ = writeln!(
        t,
        "Validation: **{:.3} bits per byte**, against **{:.3}** for a unigram model of the training tokens \
         ({:.0}% lower). Wall time {} on {} threads.\n",
        s.val_bpb,
        r.unigram_bpb,
        100.0 * (1.0 - s.val_bpb / r.unigram_bpb),
        fmt_secs(r.wall_secs),
        rayon::current_num_threads()
    );
    let _ = writeln!(t, "## Corpus\n");
    let _ = writeln!(t, "| split | documents | bytes | tokens |\n|---|---:|---:|---:|");
    for (name, st) in [("train", &c.train), ("val", &c.val)] {
        let _ = writeln!(
            t,
            "| {name} | {} | {} | {} |",
            st.documents,
            human(st.bytes as f64),
            human(st.tokens as f64)
        );
    }
    let _ = writeln!(t, "\nSources:\n");
    for st in &r.corpus.manifest.sources {
        let _ = writeln!(
            t,
            "- `{}`: {} documents, {} bytes, {} tokens",
            st.source,
            st.documents,
            human(st.bytes as f64),
            human(st.tokens as f64)
        );
    }
    if !r.corpus.sources.iter().any(|s| matches!(s, Source::ManPages { .. })) {
        let _ = writeln!(t, "- (no manual pages on this machine: synthetic data only)");
    }
    let _ = writeln!(
        t,
        "\nByte-level BPE tokenizer, {} tokens ({:.2} bytes/token on train).\n",
        m.vocab_size,
        c.train.bytes as f64 / c.train.tokens.max(1) as f64
    );
    let _ = writeln!(t, "## Model and training\n");
    let _ = writeln!(t, "| | |\n|---|---|");
    let rows = [
        (
            "shape",
            format!(
                "d_model {}, {} layers, {} heads, SwiGLU {}, context {}, vocab {}",
                m.d_model, m.n_layers, m.n_heads, m.ffn_hidden, m.max_seq_len, m.vocab_size
            ),
        ),
        (
            "parameters",
            format!(
                "{} ({} non-embedding)",
                human(s.params as f64),
                human(s.non_embedding_params as f64)
            ),
        ),
        (
            "steps x tokens/step",
            format!("{} x {}", s.steps, r.spec.seq_len * r.spec.batch_size * r.spec.grad_accum),
        ),
        ("training tokens", human(s.tokens as f64)),
        ("training FLOPs", format!("{:.3e}", s.train_flops)),
        ("training time", fmt_secs(s.train_secs)),
        ("throughput", format!("{:.0} tokens/s", s.tokens_per_sec)),
        ("MFU", format!("{:.1}% {}", s.mfu * 100.0, s.peak.describe())),
        ("final train loss", format!("{:.4} nats/token", s.final_loss)),
        (
            "validation loss",
            format!("{:.4} nats/token, {:.4} bits/byte", s.val_loss, s.val_bpb),
        ),
        ("unigram baseline", format!("{:.4} bits/byte", r.unigram_bpb)),
    ];
    for (k, v) in rows {
        let _ = writeln!(t, "| {k} | {v} |");
    }
    let _ = writeln!(
        t,
        "\nValidation bits per byte of the pretrained model by source (each target scored as its source's):\n\n\
         | source | bits/byte | tokens | bytes |\n|---|---:|---:|---:|"
    );
    for b in r.by_source {
        // A source whose documents all fell in the train split has nothing to score.
        let bpb = if b.tokens == 0 {
            "— (no validation text)".to_string()
        } else {
            format!("{:.4}", b.bits_per_byte)
        };
        let _ = writeln!(
            t,
            "| `{}` | {bpb} | {} | {} |",
            b.source,
            human(b.tokens as f64),
            human(b.bytes as f64)
        );
    }
    let _ = writeln!(t, "\n## Loss curve\n\n![loss curve]({})\n", trainer::LOSS_CURVE_FILE);
    let _ = writeln!(
        t,
        "## Samples\n\nTemperature 0.8, top-p 0.95, seed 0, from `<|bos|>` + the prompt; each block is prompt + completion.\n"
    );
    for (prompt, text) in r.samples {
        let _ = writeln!(t, "Prompt `{prompt:?}`:\n```text\n{prompt}{text}\n```\n");
    }
    post_training::render(&mut t, r.post, &r.spec.post);
    let _ = writeln!(t, "## Stages\n\n| stage | time |\n|---|---:|");
    for (name, secs) in r.stages {
        let _ = writeln!(t, "| {name} | {} |", fmt_secs(*secs));
    }
    let _ = writeln!(
        t,
        "\nThe chat model is in `{}` (try `ferrogpt serve --model {}`), the pretrained one in `{}`.",
        r.model_dir.display(),
        r.model_dir.display(),
        r.base_dir.display()
    );
    let _ = writeln!(t, "Everything else (shards, metrics, checkpoints) is under `{}`.", r.out.display());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_a_valid_training_run() {
        for preset in [Preset::Smoke, Preset::Default, Preset::Large] {
            let spec = PresetSpec::of(preset);
            let cfg = spec.train_config(Path::new("out"), Path::new("data"), Path::new("tok.json"));
            cfg.validate().unwrap_or_else(|e| panic!("{}: {e}", preset.name()));
            assert_eq!(spec.model.vocab_size, spec.corpus.vocab_size, "{}", preset.name());
            assert_eq!(TrainConfig::from_toml(&cfg.to_toml().unwrap()).unwrap(), cfg);
        }
    }

    #[test]
    fn the_default_preset_is_the_reference_shape() {
        let spec = PresetSpec::of(Preset::Default);
        assert_eq!(spec.model, ModelConfig::reference());
        assert_eq!((spec.seq_len, spec.batch_size), (256, 16));
    }
}
