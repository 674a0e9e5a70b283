//! End-to-end training on a tiny synthetic corpus: determinism, exact resume,
//! validation in bits per byte, and the files a run leaves behind.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ferrogpt_data::{build_corpus, Corpus, CorpusSpec, SyntheticSource};
use ferrogpt_train::checkpoint::{self, list_checkpoints};
use ferrogpt_train::metrics::{read_records, Record};
use ferrogpt_train::{train, val_bpb_by_source, TrainConfig, TrainOptions};

/// One corpus per test binary (tokenizer training is the slow part).
fn corpus() -> &'static (tempfile::TempDir, Corpus) {
    static CORPUS: OnceLock<(tempfile::TempDir, Corpus)> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let spec = CorpusSpec {
            man_pages: false,
            synthetic: vec![SyntheticSource::new("arithmetic", 1500), SyntheticSource::new("counting", 500)],
            english: Vec::new(),
            vocab_size: 300,
            tokenizer_bytes: 1 << 20,
            max_bytes: 1 << 20,
            val_fraction: 0.1,
            seed: 1,
        };
        let corpus = build_corpus(&spec, dir.path(), false).unwrap();
        (dir, corpus)
    })
}

fn config(out: &Path, steps: u64, ckpt_every: u64) -> TrainConfig {
    let c = &corpus().1;
    let text = format!(
        r#"
out_dir = "{out}"
[model]
vocab_size = 300
d_model = 32
n_layers = 2
n_heads = 2
n_kv_heads = 1
ffn_hidden = 64
max_seq_len = 32
[data]
dir = "{data}"
tokenizer = "{tok}"
[train]
seq_len = 32
batch_size = 4
grad_accum = 2
steps = {steps}
lr = 3e-3
seed = 5
[eval]
every = 4
tokens = 512
[checkpoint]
every = {ckpt_every}
keep = 10
"#,
        out = out.display(),
        data = c.data_dir.display(),
        tok = c.tokenizer_path.display(),
    );
    TrainConfig::from_toml(&text).unwrap()
}

fn quiet() -> TrainOptions {
    TrainOptions::default()
}

fn step_losses(out: &Path) -> Vec<(u64, f64)> {
    read_records(&out.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|r: &Record| r.loss.map(|l| (r.step, l)))
        .collect()
}

fn val_records(out: &Path) -> Vec<(u64, f64, f64)> {
    read_records(&out.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|r| Some((r.step, r.val_loss?, r.val_bpb?)))
        .collect()
}

#[test]
fn same_seed_gives_the_same_loss_curve_and_loss_falls() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let sa = train(&config(&a, 12, 0), &quiet()).unwrap();
    train(&config(&b, 12, 0), &quiet()).unwrap();
    let (la, lb) = (step_losses(&a), step_losses(&b));
    assert_eq!(la.len(), 12);
    assert_eq!(la, lb);
    assert_eq!(val_records(&a), val_records(&b));
    assert!(la[11].1 < la[0].1, "loss did not fall: {la:?}");
    // Validation is in bits per byte: nats/token over ln 2 over bytes/token, so
    // both are positive and the ratio is the corpus' tokens per byte.
    let (_, val_loss, bpb) = *val_records(&a).last().unwrap();
    assert!(bpb > 0.0 && bpb < val_loss / std::f64::consts::LN_2, "{val_loss} {bpb}");
    assert_eq!(sa.val_bpb, bpb);
    assert!(sa.tokens_per_sec > 0.0 && sa.mfu > 0.0);
    // The run leaves a loadable model folder and a loss curve.
    for f in ["model.safetensors", "config.json", "tokenizer.json", "checksums.json"] {
        assert!(sa.model_dir.join(f).is_file(), "{f}");
    }
    ferrogpt_infer::model_folder::verify_checksums(&sa.model_dir).unwrap();
    assert!(std::fs::read_to_string(&sa.loss_curve).unwrap().starts_with("<svg"));
}

#[test]
fn resuming_from_a_checkpoint_reproduces_the_run_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, resumed) = (tmp.path().join("full"), tmp.path().join("resumed"));
    train(&config(&full, 12, 0), &quiet()).unwrap();
    train(&config(&resumed, 12, 4), &quiet()).unwrap();
    // Pretend the run died just after step 5's checkpoint at 4: drop later ones.
    let ckpts = list_checkpoints(&resumed).unwrap();
    assert_eq!(ckpts.iter().map(|c| c.0).collect::<Vec<_>>(), vec![4, 8, 12]);
    for (_, p) in &ckpts[1..] {
        std::fs::remove_dir_all(p).unwrap();
    }
    let s = train(
        &config(&resumed, 12, 4),
        &TrainOptions {
            resume: true,
            progress: false,
        },
    )
    .unwrap();
    assert_eq!(s.resumed_from, 4);
    assert_eq!(step_losses(&resumed), step_losses(&full));
    assert_eq!(val_records(&resumed), val_records(&full));
    let weights = |dir: &PathBuf| std::fs::read(dir.join("model/model.safetensors")).unwrap();
    assert_eq!(weights(&full), weights(&resumed));
}

#[test]
fn a_fresh_run_refuses_to_overwrite_checkpoints_and_resume_checks_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    train(&config(&out, 4, 2), &quiet()).unwrap();
    let e = train(&config(&out, 4, 2), &quiet()).unwrap_err().to_string();
    assert!(e.contains("out_dir") && e.contains("--resume"), "{e}");
    let mut other = config(&out, 4, 2);
    other.train.lr = 1e-2;
    let e = train(
        &other,
        &TrainOptions {
            resume: true,
            progress: false,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("train") && e.contains("checkpoint"), "{e}");
}

#[test]
fn a_corrupt_checkpoint_stops_resume_with_the_file_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    train(&config(&out, 4, 2), &quiet()).unwrap();
    let latest = checkpoint::latest_checkpoint(&out).unwrap().unwrap();
    let state = latest.join("state.json");
    let mut text = std::fs::read_to_string(&state).unwrap();
    text = text.replacen("\"step\": 4", "\"step\": 3", 1);
    std::fs::write(&state, text).unwrap();
    let e = train(
        &config(&out, 4, 2),
        &TrainOptions {
            resume: true,
            progress: false,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("state.json") && e.contains("mismatch"), "{e}");
}

#[test]
fn a_tokenizer_that_does_not_match_the_model_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&tmp.path().join("run"), 4, 0);
    cfg.model.vocab_size = 512;
    let e = train(&cfg, &quiet()).unwrap_err().to_string();
    assert!(e.contains("model.vocab_size"), "{e}");
}

#[test]
fn validation_per_source_adds_up_to_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let summary = train(&config(&out, 6, 0), &quiet()).unwrap();
    // The trainer's own final pass: batch 4 x seq 32, 512 tokens.
    let by_source = val_bpb_by_source(&summary.model_dir, &corpus().1.data_dir, 4, 32, 512).unwrap();
    let names: Vec<&str> = by_source.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(names, ["synthetic:arithmetic:1500", "synthetic:counting:500"]);
    assert!(by_source.iter().all(|s| s.tokens > 0 && s.bits_per_byte > 0.0), "{by_source:?}");
    let tokens: usize = by_source.iter().map(|s| s.tokens).sum();
    assert_eq!(tokens, 512);
    // Byte-weighted, the sources' bits per byte are the whole pass's.
    let bytes: u64 = by_source.iter().map(|s| s.bytes).sum();
    let pooled = by_source.iter().map(|s| s.bits_per_byte * s.bytes as f64).sum::<f64>() / bytes as f64;
    assert!(
        (pooled - summary.val_bpb).abs() < 1e-9 * summary.val_bpb,
        "{pooled} vs {}",
        summary.val_bpb
    );
    // The two generators' texts differ, and so do their scores.
    assert_ne!(by_source[0].bits_per_byte, by_source[1].bits_per_byte);
}
