//! The smoke speedrun end to end: report, figures, and a model folder that
//! inference loads and `ferrogpt eval local:PATH` evaluates.

use std::process::Command;

#[test]
fn smoke_speedrun_writes_a_report_and_a_loadable_model() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let status = Command::new(env!("CARGO_BIN_EXE_ferrogpt"))
        .args(["speedrun", "--preset", "smoke", "--quiet", "--out"])
        .arg(&out)
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(status.success());
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "bits per byte",
        "unigram",
        "MFU",
        "training FLOPs",
        "loss.svg",
        "## Samples",
        "## Post-training",
        "responses to disallowed requests",
        "over-refusal",
    ] {
        assert!(report.contains(needle), "report.md lacks {needle:?}");
    }
    let figures: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let (bpb, unigram) = (figures["val_bpb"].as_f64().unwrap(), figures["unigram_bpb"].as_f64().unwrap());
    assert!(bpb > 0.0 && bpb < unigram, "val {bpb} bits/byte vs unigram {unigram}");
    assert!(std::fs::read_to_string(out.join("loss.svg")).unwrap().starts_with("<svg"));
    let model = ferrogpt_infer::LocalModel::load(&out.join("model")).unwrap();
    assert_eq!(model.config().vocab_size, model.tokenizer().vocab_size());
    // Pretraining's model is kept as the base; the chat model is the RLHF policy with the
    // moderation classifier inside, and base, SFT and RLHF answered the same held-out requests.
    let base = ferrogpt_infer::LocalModel::load(&out.join("base")).unwrap();
    assert_eq!(base.config(), model.config());
    let post = &figures["post_training"];
    let sft = &post["sft"];
    assert!(
        sft["steps"].as_u64().unwrap() > 0 && sft["val_loss_replies"].as_f64().unwrap() > 0.0,
        "{sft}"
    );
    for card in ["base", "sft", "rlhf"] {
        let over_refusal = &post["scorecards"][card]["over_refusal"];
        assert!(over_refusal["total"].as_u64().unwrap() > 0, "{card}: {over_refusal}");
    }
    for scorer in ["reward_model", "safety_classifier", "moderation_classifier"] {
        let accuracy = post[scorer]["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&accuracy), "{scorer}: {accuracy}");
    }
    assert!(post["moderation_classifier"]["auroc"].as_f64().is_some());
    assert_eq!(post["goals"].as_array().unwrap().len(), 4);
    assert!(post["rlhf"]["last_step"]["kl"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        std::fs::read(out.join("model/model.safetensors")).unwrap(),
        std::fs::read(out.join("rlhf/model/model.safetensors")).unwrap()
    );
    let moderation = ferrogpt_infer::LocalModel::load(&out.join("model/moderation")).unwrap();
    assert_eq!(moderation.config().num_labels, Some(ferrogpt_chatdata::Category::ALL.len()));
    assert!(report.contains("## Multiple choice and calibration") && report.contains("Goals:"));

    // The trained folder as an eval completion function: every sample sampled
    // by the local model and scored, the final report last.
    let log = tmp.path().join("eval.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_ferrogpt"))
        .arg("eval")
        .arg(format!("local:{}", out.join("model").display()))
        .args(["arithmetic", "--max_samples", "3", "--record_path"])
        .arg(&log)
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(status.success());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sampled = lines.iter().filter(|l| l["type"] == "sampling").count();
    assert_eq!(sampled, 3, "one sampling event per sample");
    let report = &lines.last().unwrap()["final_report"];
    let accuracy = report["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    assert!(
        report["usage_completion_tokens"].as_u64().unwrap() > 0,
        "the local model generated tokens"
    );
}
