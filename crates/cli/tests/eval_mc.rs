//! `ferrogpt eval policy` and `ferrogpt eval mc` end to end on a tiny random model. Policy: every
//! model answers the same held-out requests, so one model given twice scores the same twice;
//! requests longer than the model's context are counted out, not failed.
//! Multiple choice: every choice's summed log-probability
//! equals what the engine's full-sequence forward gives for the same tokens (a path separate
//! from the KV-cache scoring the command uses), also where a context or a choice is too long
//! for the model, and the report, outcomes and diagram are written. A missing dataset is an
//! error that names the command installing it.

use std::path::Path;
use std::process::{Command, Output};

use ferrogpt_engine::{Activations, AttnMask, Input, Model, ModelConfig};
use ferrogpt_infer::{text_prompt, LocalModel};
use ferrogpt_tokenizer::Tokenizer;
use serde_json::Value;

/// Positions the tiny model attends over: short enough that one fixture question overflows.
const CONTEXT: usize = 48;

fn tiny_model(dir: &Path, context: usize) -> std::path::PathBuf {
    let texts: Vec<String> = (0..60).map(|i| format!("The sea {i} is wide and the waves are blue.")).collect();
    let tok = Tokenizer::train(texts.into_iter(), 300).unwrap();
    let cfg = ModelConfig {
        vocab_size: tok.vocab_size(),
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 1,
        ffn_hidden: 64,
        max_seq_len: context,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: false,
        num_labels: None,
    };
    let model = Model::new(cfg, 0.5, 7).unwrap();
    let folder = dir.join("tiny");
    LocalModel::save_folder(&folder, &model, &tok).unwrap();
    folder
}

fn eval_mc(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrogpt"))
        .args(["eval", "mc", "--quiet"])
        .args(args)
        .env("HOME", home)
        .env("FERROGPT_CACHE", home.join("cache"))
        .env_remove("FERROGPT_EVALS_WHEEL_DIR")
        .output()
        .unwrap()
}

/// Log-probability of `tokens[from..]` given the tokens before each, by the training forward.
fn direct_logprob(model: &Model<f32>, tokens: &[u32], from: usize) -> f64 {
    let v = model.cfg.vocab_size;
    let mut acts = Activations::new(&model.cfg, 1, tokens.len()).unwrap();
    model
        .forward_logits(&mut acts, Input::Tokens(tokens), &AttnMask::causal(tokens.len()))
        .unwrap();
    (from..tokens.len())
        .map(|i| {
            let row: Vec<f64> = acts.logits[(i - 1) * v..i * v].iter().map(|&x| f64::from(x)).collect();
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_z = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            row[tokens[i] as usize] - log_z
        })
        .sum()
}

/// The log-likelihood `score_windowed` defines, from the full-sequence forward: a
/// continuation that fits after the newest context tokens that fit before it; a longer one
/// in chunks of half the context, each after the tokens before it up to the context length.
fn reference_logprob(model: &Model<f32>, context: &[u32], continuation: &[u32]) -> f64 {
    let all: Vec<u32> = context.iter().chain(continuation).copied().collect();
    if continuation.len() < CONTEXT {
        let from = all.len().saturating_sub(CONTEXT);
        return direct_logprob(model, &all[from..], context.len() - from);
    }
    (context.len()..all.len())
        .step_by(CONTEXT / 2)
        .map(|start| {
            let end = (start + CONTEXT / 2).min(all.len());
            let from = end.saturating_sub(CONTEXT);
            direct_logprob(model, &all[from..end], start - from)
        })
        .sum()
}

#[test]
fn scores_match_a_direct_forward_and_reports_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tiny_model(tmp.path(), CONTEXT);
    let task = tmp.path().join("task.json");
    let long_prefix = "The sea is wide and the waves are blue. ".repeat(8);
    // Longer than the whole context: scored in windows.
    let long_choice: String = (0..30).map(|i| format!("{i} waves {} ", i * 13)).collect();
    std::fs::write(
        &task,
        serde_json::json!({
            "task_prefix": long_prefix,
            "examples": [
                {"input": "Is the sea wide?", "target_scores": {"The sea is wide.": 1, "The waves are red.": 0, "No.": 0}},
                {"input": "What colour are the waves?", "target_scores": {"Blue.": 1, "Green and wide.": 0, long_choice: 0}},
            ],
        })
        .to_string(),
    )
    .unwrap();
    let out_dir = tmp.path().join("out");
    let out = eval_mc(
        &[
            "--model",
            &format!("tiny={}", folder.display()),
            "--model",
            "dummy",
            "--task",
            "bigbench",
            "--data",
            task.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("tiny: n=2 accuracy") && stdout.contains("chance 0.333"), "{stdout}");

    let lm = LocalModel::load(&folder).unwrap();
    let tok = lm.tokenizer();
    let outcomes = std::fs::read_to_string(out_dir.join("tiny.outcomes.jsonl")).unwrap();
    let (mut truncated, mut chunked) = (0, 0);
    for line in outcomes.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let context = row["question"]["context"].as_str().unwrap();
        let choices = row["question"]["choices"].as_array().unwrap();
        let logprobs = row["outcome"]["logprobs"].as_array().unwrap();
        assert_eq!(choices.len(), logprobs.len());
        for (choice, got) in choices.iter().zip(logprobs) {
            let continuation = tok.encode(&format!(" {}", choice.as_str().unwrap()));
            let context = text_prompt(tok, context).ids;
            if continuation.len() >= CONTEXT {
                chunked += 1;
            } else if context.len() + continuation.len() > CONTEXT {
                truncated += 1;
            }
            let want = reference_logprob(lm.model(), &context, &continuation);
            let got = got.as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-3 * want.abs().max(1.0),
                "{choice}: scored {got}, forward {want}"
            );
        }
    }
    assert!(chunked > 0, "the long choice must be longer than the {CONTEXT}-token context");
    assert!(truncated > 0, "the long prefix must overflow the {CONTEXT}-token context");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["task"], "bigbench");
    let models = report["models"].as_array().unwrap();
    assert_eq!(
        (models[0]["label"].as_str(), models[1]["label"].as_str()),
        (Some("tiny"), Some("dummy"))
    );
    let dummy = &models[1]["report"];
    // `dummy` scores one nat per byte: the shortest choice ("No.", "Blue.") wins, right once.
    assert_eq!((dummy["n"].as_u64(), dummy["accuracy"].as_f64()), (Some(2), Some(0.5)));
    assert_eq!(dummy["bins"].as_array().unwrap().len(), 10);
    let svg = std::fs::read_to_string(out_dir.join("calibration.svg")).unwrap();
    assert!(svg.contains("tiny: ECE") && svg.contains("dummy: ECE"), "both models in the legend");
}

#[test]
fn missing_datasets_name_their_install_command() {
    let tmp = tempfile::tempdir().unwrap();
    let out = eval_mc(&["--model", "dummy", "--task", "truthful_qa"], tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pip download --no-deps --no-binary :all: bigbench==1.0.0"),
        "{stderr}"
    );
    let out = eval_mc(&["--model", "dummy", "--task", "exams:german"], tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pip download --no-deps evals==3.0.1.post1"), "{stderr}");
}

#[test]
fn eval_policy_scores_every_model_on_the_same_requests() {
    let dir = tempfile::tempdir().unwrap();
    // Room for the short requests; the tiny tokenizer spells most words letter by letter, so
    // the long multi-turn ones do not fit.
    let model = tiny_model(dir.path(), 160);
    let model_arg = model.to_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrogpt"))
        .args(["eval", "policy", "--requests", "60", "--reply-tokens", "6"])
        .args(["--model", model_arg, "--model", model_arg])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Requests that do not fit are named, not scored.
    assert!(stdout.contains("requests do not fit its context and are not scored"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().skip_while(|l| !l.starts_with("| measure")).collect();
    assert_eq!(lines[0], format!("| measure | {model_arg} | {model_arg} |"));
    let rows = &lines[2..];
    assert!(rows.len() >= ferrogpt_chatdata::MEASURES.len(), "{stdout}");
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 3, "{row}");
        assert_eq!(cells[1], cells[2], "the same model scored differently: {row}");
    }
    let disallowed = rows
        .iter()
        .find(|r| r.starts_with("| responses to disallowed requests"))
        .expect("disallowed row");
    assert!(!disallowed.contains("n/a"), "60 requests hold disallowed ones: {disallowed}");
}
