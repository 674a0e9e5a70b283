//! Supervised fine-tuning end to end on a tiny model: packed conversations compute what they
//! would compute alone, the loss on the replies falls, and resumption is exact.

use std::path::{Path, PathBuf};

use ferrogpt_data::Batch;
use ferrogpt_engine::{Activations, AttnMask, Input, Model, ModelConfig, IGNORE};
use ferrogpt_infer::model_folder;
use ferrogpt_tokenizer::Tokenizer;
use ferrogpt_train::checkpoint::list_checkpoints;
use ferrogpt_train::conversations::Conversations;
use ferrogpt_train::metrics::read_records;
use ferrogpt_train::{train, SftPlan, TrainConfig, TrainOptions};

const WORDS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

fn conversation(a: usize, b: usize) -> String {
    let mut messages = Vec::new();
    if a.is_multiple_of(3) {
        messages.push(serde_json::json!({"role": "system", "content": "Answer with a number."}));
    }
    messages.push(serde_json::json!({"role": "user", "content": format!("what is {} plus {}?", WORDS[a], WORDS[b])}));
    messages.push(serde_json::json!({"role": "assistant", "content": format!("{}", a + b)}));
    serde_json::json!({ "messages": messages }).to_string()
}

/// A random-weight base model folder and train/val conversation files.
fn setup(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let texts: Vec<String> = (0..100).map(|i| conversation(i % 10, i / 10)).collect();
    let tokenizer = Tokenizer::train(texts.iter().cloned(), 300).unwrap();
    let tok_path = root.join("tokenizer.json");
    tokenizer.save(&tok_path).unwrap();
    let cfg = ModelConfig {
        vocab_size: tokenizer.vocab_size(),
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 1,
        ffn_hidden: 64,
        max_seq_len: 64,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: false,
        num_labels: None,
    };
    let model = Model::<f32>::new(cfg.clone(), 0.02, 3).unwrap();
    let base = root.join("base");
    model_folder::write(&base, &cfg, &model.params, &std::fs::read(&tok_path).unwrap()).unwrap();
    let (train_path, val_path) = (root.join("train.jsonl"), root.join("val.jsonl"));
    let lines = |range: std::ops::Range<usize>| range.map(|i| conversation(i % 10, (i * 7) % 10)).collect::<Vec<_>>().join("\n");
    std::fs::write(&train_path, lines(0..80)).unwrap();
    std::fs::write(&val_path, lines(80..100)).unwrap();
    (base, train_path, val_path)
}

fn plan(root: &Path, out: &str) -> TrainConfig {
    let (base, train_path, val_path) = (root.join("base"), root.join("train.jsonl"), root.join("val.jsonl"));
    let mut p = SftPlan::new(&base, &train_path, &val_path, &root.join(out));
    p.seq_len = 64;
    p.batch_size = 4;
    p.lr = 3e-3;
    p.epochs = 4.0;
    p.config().unwrap()
}

fn val_losses(out: &Path) -> Vec<(u64, f64)> {
    read_records(&out.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|r| Some((r.step, r.val_loss?)))
        .collect()
}

#[test]
fn a_packed_row_computes_what_each_conversation_computes_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train_path, _) = setup(tmp.path());
    let files = model_folder::read(&base).unwrap();
    let model = Model::from_params(files.config.clone(), files.params).unwrap();
    let convs = Conversations::read(&train_path, &files.tokenizer, 64).unwrap();
    let packed = convs.sequential_batches(1, 64).unwrap();
    let (row, mask) = &packed[0];
    let mut acts = Activations::new(&files.config, 1, 64).unwrap();
    model
        .forward_loss(&mut acts, Input::Tokens(&row.inputs), &row.targets, mask)
        .unwrap();
    let packed_losses = acts.row_loss.clone();
    // Each conversation of the row alone, at position 0 under a plain causal mask.
    let starts: Vec<usize> = (0..64)
        .filter(|&i| mask.windows(0)[i][0] as usize == i && row.targets[i..].iter().any(|&t| t != IGNORE))
        .collect();
    let mut compared = 0;
    for (k, &s) in starts.iter().enumerate() {
        let e = starts.get(k + 1).copied().unwrap_or(64);
        let mut alone = Batch {
            inputs: vec![0; 64],
            targets: vec![IGNORE; 64],
            rows: 1,
            seq_len: 64,
        };
        alone.inputs[..e - s].copy_from_slice(&row.inputs[s..e]);
        alone.targets[..e - s].copy_from_slice(&row.targets[s..e]);
        model
            .forward_loss(&mut acts, Input::Tokens(&alone.inputs), &alone.targets, &AttnMask::causal(64))
            .unwrap();
        for i in 0..e - s {
            if alone.targets[i] != IGNORE {
                let (p, a) = (packed_losses[s + i], acts.row_loss[i]);
                assert!((p - a).abs() < 1e-5, "conversation at {s}, position {i}: packed {p} alone {a}");
                compared += 1;
            }
        }
    }
    assert!(
        starts.len() >= 2 && compared >= 4,
        "{} conversations, {compared} targets",
        starts.len()
    );
}

#[test]
fn fine_tuning_lowers_the_loss_on_replies_and_starts_from_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let cfg = plan(tmp.path(), "sft");
    assert_eq!(cfg.model, model_folder::read_config(&tmp.path().join("base")).unwrap());
    let s = train(&cfg, &TrainOptions::default()).unwrap();
    let val = val_losses(&tmp.path().join("sft"));
    assert!(val.len() >= 2, "{val:?}");
    // The base knows nothing of the replies (random weights); fine-tuning learns their format
    // and some of the sums.
    assert!(s.val_loss < val[0].1 * 0.7, "{val:?}");
    let tuned = model_folder::read(&s.model_dir).unwrap();
    assert_eq!(tuned.config, cfg.model);
}

#[test]
fn resuming_fine_tuning_reproduces_the_run_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let full = plan(tmp.path(), "full");
    let mut resumed = plan(tmp.path(), "resumed");
    resumed.checkpoint.every = 3;
    resumed.checkpoint.keep = 100;
    train(&full, &TrainOptions::default()).unwrap();
    train(&resumed, &TrainOptions::default()).unwrap();
    let ckpts = list_checkpoints(&resumed.out_dir).unwrap();
    assert!(ckpts.len() >= 2, "{ckpts:?}");
    let first = ckpts[0].0;
    for (_, p) in &ckpts[1..] {
        std::fs::remove_dir_all(p).unwrap();
    }
    let s = train(
        &resumed,
        &TrainOptions {
            resume: true,
            progress: false,
        },
    )
    .unwrap();
    assert_eq!(s.resumed_from, first);
    let weights = |dir: &Path| std::fs::read(dir.join("model/model.safetensors")).unwrap();
    assert_eq!(weights(&full.out_dir), weights(&resumed.out_dir));
    assert_eq!(val_losses(&full.out_dir), val_losses(&resumed.out_dir));
}
