//! The smoke speedrun end to end: report, figures, and a model folder that
//! inference loads.

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
    for needle in ["bits per byte", "unigram", "MFU", "training FLOPs", "loss.svg", "## Samples"] {
        assert!(report.contains(needle), "report.md lacks {needle:?}");
    }
    let figures: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let (bpb, unigram) = (figures["val_bpb"].as_f64().unwrap(), figures["unigram_bpb"].as_f64().unwrap());
    assert!(bpb > 0.0 && bpb < unigram, "val {bpb} bits/byte vs unigram {unigram}");
    assert!(std::fs::read_to_string(out.join("loss.svg")).unwrap().starts_with("<svg"));
    let model = ferrogpt_infer::LocalModel::load(&out.join("model")).unwrap();
    assert_eq!(model.config().vocab_size, model.tokenizer().vocab_size());
}
