//! The reward model, the classifiers and RLHF end to end on a tiny model: they train,
//! report held-out figures, and resume exactly from a checkpoint.

use std::path::{Path, PathBuf};

use ferrogpt_engine::{Model, ModelConfig};
use ferrogpt_infer::model_folder;
use ferrogpt_tokenizer::Tokenizer;
use ferrogpt_train::checkpoint::list_checkpoints;
use ferrogpt_train::classifier::{train_scorer, ScorerKind, ScorerPlan};
use ferrogpt_train::metrics::read_records;
use ferrogpt_train::rlhf::{rlhf, RlhfPlan};

/// A random-weight language model folder whose tokenizer knows the chat data.
fn base(root: &Path) -> PathBuf {
    let examples = ferrogpt_train::examples::chat_examples(ferrogpt_chatdata::Split::Train, 300, 9).unwrap();
    let texts = examples.iter().flat_map(|e| e.messages.iter().map(|m| m.text()));
    let tokenizer = Tokenizer::train(texts, 600).unwrap();
    let cfg = ModelConfig {
        vocab_size: tokenizer.vocab_size(),
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 1,
        ffn_hidden: 64,
        max_seq_len: 192,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: false,
        num_labels: None,
    };
    let model = Model::<f32>::new(cfg.clone(), 0.02, 3).unwrap();
    let dir = root.join("base");
    model_folder::write(&dir, &cfg, &model.params, tokenizer.to_json().as_bytes()).unwrap();
    dir
}

fn scorer_plan(kind: ScorerKind, base: &Path, out: &Path) -> ScorerPlan {
    ScorerPlan {
        train_examples: 200,
        test_examples: 60,
        steps: 4,
        batch_size: 2,
        seq_len: 192,
        lr: 1e-3,
        ..ScorerPlan::new(kind, base, out)
    }
}

/// Copies a finished run, drops its newest checkpoint and final model, and resumes the
/// copy; the resumed run must end with the same weights and metrics.
fn assert_resumes_exactly(done: &Path, copy: &Path, resume: impl FnOnce(&Path)) {
    copy_dir(done, copy);
    let checkpoints = list_checkpoints(copy).unwrap();
    let (last_step, newest) = checkpoints.last().unwrap().clone();
    std::fs::remove_dir_all(newest).unwrap();
    std::fs::remove_dir_all(copy.join("model")).unwrap();
    let records: Vec<String> = std::fs::read_to_string(copy.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains(&format!("\"step\":{last_step},")))
        .map(str::to_string)
        .collect();
    std::fs::write(copy.join("metrics.jsonl"), records.join("\n") + "\n").unwrap();
    resume(copy);
    let weights = |dir: &Path| std::fs::read(dir.join("model/model.safetensors")).unwrap();
    assert!(
        weights(done) == weights(copy),
        "resumed weights differ from the uninterrupted run's"
    );
    assert_eq!(
        read_records(&done.join("metrics.jsonl")).unwrap(),
        read_records(&copy.join("metrics.jsonl")).unwrap()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

#[test]
fn scorers_report_held_out_figures_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path());
    for kind in [ScorerKind::Reward, ScorerKind::Safety, ScorerKind::Moderation] {
        let out = tmp.path().join(format!("{kind:?}"));
        let plan = scorer_plan(kind, &base, &out);
        let (summary, eval) = train_scorer(&plan, false, false).unwrap();
        assert_eq!(summary.steps, 4);
        assert!(summary.last.loss.is_finite() && summary.last.figures.contains_key("accuracy"));
        assert!(eval.items > 0 && (0.0..=1.0).contains(&eval.accuracy), "{eval:?}");
        assert_eq!(eval.per_tag.iter().map(|t| t.1).sum::<usize>(), eval.items);
        assert_eq!(eval.auroc.is_some(), kind == ScorerKind::Moderation);
        let config = model_folder::read_config(&summary.model_dir).unwrap();
        assert_eq!(config.num_labels, Some(kind.num_labels()));
        // A second run into the same folder must be asked to resume.
        assert!(train_scorer(&plan, false, false).is_err());
        if kind == ScorerKind::Reward {
            let copy = tmp.path().join("reward-resumed");
            assert_resumes_exactly(&out, &copy, |dir| {
                train_scorer(&scorer_plan(kind, &base, dir), true, false).unwrap();
            });
        }
    }
}

#[test]
fn rlhf_logs_reward_and_kl_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path());
    let reward = train_scorer(&scorer_plan(ScorerKind::Reward, &base, &tmp.path().join("rm")), false, false)
        .unwrap()
        .0
        .model_dir;
    let grader = train_scorer(&scorer_plan(ScorerKind::Safety, &base, &tmp.path().join("safety")), false, false)
        .unwrap()
        .0
        .model_dir;
    let plan = |out: &Path| RlhfPlan {
        steps: 4,
        prompts_per_step: 2,
        group_size: 3,
        max_reply_tokens: 8,
        lr: 1e-3,
        prompts: 100,
        ..RlhfPlan::new(&base, &reward, out)
    };
    let out = tmp.path().join("rlhf");
    let summary = rlhf(&plan(&out), &grader, false, false).unwrap();
    for key in ["reward", "rm", "safety", "kl", "logprob", "reply_tokens"] {
        let v = summary.last.figures.get(key).copied().unwrap_or(f64::NAN);
        assert!(v.is_finite(), "{key} = {v}");
    }
    let kl = summary.last.figures["kl"];
    assert!(kl >= 0.0, "KL is never negative: {kl}");
    let before = std::fs::read(base.join("model.safetensors")).unwrap();
    assert!(
        std::fs::read(summary.model_dir.join("model.safetensors")).unwrap() != before,
        "the policy moved"
    );
    assert_resumes_exactly(&out, &tmp.path().join("rlhf-resumed"), |dir| {
        rlhf(&plan(dir), &grader, true, false).unwrap();
    });
}
