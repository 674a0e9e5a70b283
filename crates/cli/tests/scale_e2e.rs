//! `ferrogpt scale` end to end on a tiny three-rung ladder: the sweep registers
//! a prediction before the target trains, `predict` refuses fit points above
//! the compute fraction, `verify` trains the target and reads the registered
//! prediction, and the report and figures are written.

use std::path::Path;
use std::process::{Command, Output};

const LADDER: &str = r#"
name = "tiny"
[data]
man_pages = false
synthetic = [
    { generator = "arithmetic", count = 1500 },
    { generator = "code", count = 1500 },
    { generator = "bets", count = 600 },
]
vocab_size = 300
tokenizer_bytes = 60000
max_bytes = 400000
val_fraction = 0.1
[recipe]
seq_len = 128
batch_size = 4
min_steps = 20
tokens_per_param = 2.0
warmup_frac = 0.1
base_width = 16
base_lr = 0.004
eval_tokens = 2048
[[rung]]
name = "a"
d_model = 8
n_layers = 1
n_heads = 2
seeds = 2
[[rung]]
name = "b"
d_model = 12
n_layers = 1
n_heads = 2
[[rung]]
name = "c"
d_model = 16
n_layers = 1
n_heads = 2
[[target]]
name = "t"
d_model = 32
n_layers = 1
n_heads = 2
[[prediction]]
name = "p"
target = "t"
max_fraction = 0.5
capability_max_fraction = 0.5
[capability]
tasks = 6
samples = 4
buckets = 1
probe_items = 8
"#;

fn ferrogpt(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrogpt"))
        .args(args)
        .arg("--out")
        .arg(out)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_tiny_ladder_registers_then_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let ladder = tmp.path().join("tiny.toml");
    std::fs::write(&ladder, LADDER).unwrap();
    let out = tmp.path().join("scale");
    let l = ladder.to_str().unwrap();

    let o = ferrogpt(&["scale", "run", "--ladder", l, "--sweep-only", "--quiet"], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pdir = out.join("predictions/p");
    assert!(pdir.join("prediction.json").exists());
    assert!(!pdir.join("verification.json").exists(), "--sweep-only leaves the target untrained");
    assert!(!out.join("runs/t").exists(), "the target has not started");
    let p = json(&pdir.join("prediction.json"));
    assert_eq!(p["target"], "t");
    assert_eq!(p["ladder_sha256"].as_str().unwrap(), sha256(&ladder));
    assert_eq!(
        p["data_manifest_sha256"].as_str().unwrap(),
        sha256(&out.join("corpus/data/manifest.json"))
    );
    let predicted = p["predicted_bpb"].as_f64().unwrap();
    let [lo, hi] = [p["interval90"][0].as_f64().unwrap(), p["interval90"][1].as_f64().unwrap()];
    assert!(lo <= hi && predicted > 0.0, "{p}");
    let points = p["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    for pt in points {
        assert!(pt["fraction_of_target"].as_f64().unwrap() <= 0.5, "{pt}");
    }
    assert!(p["extrapolation"].as_f64().unwrap() >= 2.0);
    // Both candidate laws are recorded with their cross-validation, and the registered law is the chosen one.
    let sel = &p["selection"];
    let forms: Vec<&str> = sel["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["form"].as_str().unwrap())
        .collect();
    assert_eq!(forms, ["power_plus_offset", "pure_power"], "{sel}");
    let chosen = sel["chosen"].as_str().unwrap();
    let chosen_law = &sel["candidates"].as_array().unwrap().iter().find(|c| c["form"] == chosen).unwrap()["law"];
    assert_eq!(chosen_law, &p["law"]);
    assert!(!sel["reason"].as_str().unwrap().is_empty());
    assert!(p["created"]["utc"].as_str().unwrap().ends_with('Z'));
    assert!(
        p["capability"]["runs"].as_array().unwrap().len() == 4,
        "both seeds of `a`, `b`, `c`"
    );
    let rung = json(&out.join("runs/a/seed1/result.json"));
    for key in ["params", "non_embedding_params", "tokens", "train_flops", "wall_secs", "val_bpb"] {
        assert!(rung[key].as_f64().unwrap() > 0.0, "{key}: {rung}");
    }
    assert!(out.join("runs/a/seed1/capability.json").exists());
    // Exact pass probabilities give every task a finite log pass rate, even on these tiny
    // models that never pass a sample: the capability law is fitted and registered.
    let cap_fit = &p["capability"]["fit"];
    assert_eq!(cap_fit["tasks_measured"], 6, "{}", p["capability"]);
    assert!(cap_fit["aggregate"]["law"]["k"].as_f64().unwrap().is_finite());
    assert!(p["capability"]["prediction"]["aggregate"]["mean_log_pass_rate"].as_f64().unwrap() < 0.0);

    // A fit point above the fraction is refused by name, and too few points are refused.
    let o = ferrogpt(
        &["scale", "predict", "--target", "t", "--max-fraction", "1e-4", "--rungs", "a,b,c"],
        &out,
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("max-fraction") && err.contains("fit point `a`"), "{err}");
    let o = ferrogpt(&["scale", "predict", "--target", "t", "--max-fraction", "1e-6"], &out);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs 3"));

    // Resuming the sweep retrains nothing and keeps the registered prediction.
    let o = ferrogpt(&["scale", "run", "--ladder", l, "--sweep-only", "--quiet"], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&pdir.join("prediction.json")), p);

    let o = ferrogpt(&["scale", "verify", "--quiet"], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("relative error"));
    let v = json(&pdir.join("verification.json"));
    assert_eq!(
        v["predicted_bpb"].as_f64().unwrap(),
        predicted,
        "verify reads the registered prediction"
    );
    let actual = v["actual_bpb"].as_f64().unwrap();
    assert!((v["relative_error"].as_f64().unwrap() - (predicted - actual).abs() / actual).abs() < 1e-12);
    assert_eq!(v["registered_before_training"], true);
    assert_eq!(v["inside_interval"].as_bool().unwrap(), lo <= actual && actual <= hi);
    assert!(v.get("reducible_relative_error").is_some() && v.get("equivalent_compute_factor").is_some());
    assert_eq!(json(&out.join("runs/t/seed0/result.json"))["kind"], "target");

    // Registering after the target trained is refused.
    let o = ferrogpt(
        &["scale", "predict", "--target", "t", "--max-fraction", "0.5", "--name", "late"],
        &out,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("started training"));

    // The hindsight backtest fits the rungs and checks the (now trained) target.
    let max_fit = points.iter().map(|pt| pt["train_flops"].as_f64().unwrap()).fold(0.0, f64::max);
    let o = ferrogpt(&["scale", "backtest", "--max-flops", &format!("{max_fit:e}")], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("not a registered prediction") && stdout.contains("\nt "),
        "{stdout}"
    );
    assert!(
        stdout.contains("capability: -E[log pass rate]") && stdout.contains("\nt/seed0 "),
        "{stdout}"
    );
    assert!(v["capability"]["relative_error"].as_f64().unwrap().is_finite(), "{v}");

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "| `a` | 1 |",
        "(target)",
        "figures/loss_p.png",
        "figures/probe_hindsight.png",
        "Model selection by forward-chaining cross-validation",
        "| `L = a·C^b` |",
    ] {
        assert!(report.contains(needle), "report.md lacks {needle:?}:\n{report}");
    }
    for f in ["loss_p.svg", "loss_p.png", "probe_hindsight.svg", "probe_hindsight.png"] {
        assert!(out.join("figures").join(f).exists(), "{f}");
    }
}

#[test]
fn a_bad_ladder_names_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let ladder = tmp.path().join("bad.toml");
    std::fs::write(&ladder, LADDER.replace("base_lr = 0.004", "base_lr = 0.004\nlearning_rate = 1.0")).unwrap();
    let o = ferrogpt(&["scale", "run", "--ladder", ladder.to_str().unwrap()], &tmp.path().join("o"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("learning_rate") && err.contains("bad.toml"), "{err}");
}
