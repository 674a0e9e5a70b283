//! `ferrogpt train` killed with SIGKILL after a checkpoint and resumed with
//! `--resume` produces the same loss at every later step as a run that was
//! never interrupted, bit for bit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrogpt_data::{build_corpus, Corpus, CorpusSpec, SyntheticSource};
use ferrogpt_train::checkpoint::list_checkpoints;
use ferrogpt_train::metrics::read_records;

const STEPS: u64 = 300;

fn write_config(path: &Path, out: &Path, corpus: &Corpus) {
    let text = format!(
        r#"
out_dir = "{out}"
[model]
vocab_size = 300
d_model = 32
n_layers = 2
n_heads = 2
n_kv_heads = 2
ffn_hidden = 64
max_seq_len = 32
[data]
dir = "{data}"
tokenizer = "{tok}"
[train]
seq_len = 32
batch_size = 4
steps = {STEPS}
lr = 3e-3
seed = 11
[eval]
every = 25
tokens = 256
[checkpoint]
every = 10
keep = 3
"#,
        out = out.display(),
        data = corpus.data_dir.display(),
        tok = corpus.tokenizer_path.display(),
    );
    std::fs::write(path, text).unwrap();
}

fn ferrogpt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrogpt"));
    // Same thread count for both runs: that is what determinism is promised for.
    c.env("FERROGPT_THREADS", "2").env("RUST_LOG", "warn");
    c
}

fn losses(out: &Path) -> Vec<(u64, f64)> {
    read_records(&out.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| r.loss.map(|l| (r.step, l)))
        .collect()
}

fn val_bpb(out: &Path) -> Vec<(u64, f64)> {
    read_records(&out.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| r.val_bpb.map(|b| (r.step, b)))
        .collect()
}

#[test]
fn kill_9_then_resume_matches_an_uninterrupted_run_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = CorpusSpec {
        man_pages: false,
        synthetic: vec![SyntheticSource::new("arithmetic", 1500), SyntheticSource::new("counting", 500)],
        english: Vec::new(),
        vocab_size: 300,
        tokenizer_bytes: 1 << 20,
        max_bytes: 1 << 20,
        val_fraction: 0.1,
        seed: 2,
    };
    let corpus = build_corpus(&spec, &tmp.path().join("corpus"), false).unwrap();

    let (full, killed) = (tmp.path().join("full"), tmp.path().join("killed"));
    let (cfg_full, cfg_killed) = (tmp.path().join("full.toml"), tmp.path().join("killed.toml"));
    write_config(&cfg_full, &full, &corpus);
    write_config(&cfg_killed, &killed, &corpus);

    let st = ferrogpt()
        .args(["train", "--quiet", "--config"])
        .arg(&cfg_full)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());

    let mut child = ferrogpt()
        .args(["train", "--quiet", "--config"])
        .arg(&cfg_killed)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if !list_checkpoints(&killed).unwrap_or_default().is_empty() {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first checkpoint");
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let ckpts = list_checkpoints(&killed).unwrap();
    let resumed_from = ckpts.last().unwrap().0;
    assert!(resumed_from < STEPS, "the run finished before it was killed");

    let st = ferrogpt()
        .args(["train", "--quiet", "--resume", "--config"])
        .arg(&cfg_killed)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());

    let (a, b) = (losses(&full), losses(&killed));
    assert_eq!(a.len(), STEPS as usize);
    let later = |v: &[(u64, f64)]| v.iter().filter(|(s, _)| *s > resumed_from).copied().collect::<Vec<_>>();
    assert!(!later(&b).is_empty());
    assert_eq!(later(&a), later(&b), "losses after step {resumed_from} differ");
    assert_eq!(a, b);
    assert_eq!(val_bpb(&full), val_bpb(&killed));
    assert_eq!(
        std::fs::read(full.join("model/model.safetensors")).unwrap(),
        std::fs::read(killed.join("model/model.safetensors")).unwrap()
    );
}

#[test]
fn a_bad_config_key_is_named_on_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "out_dir = \"x\"\n[model]\nvocab_size = 300\nd_model = 32\nn_layers = 1\nn_heads = 2\nn_kv_heads = 2\n\
         ffn_hidden = 64\nmax_seq_len = 32\n[data]\ndir = \"d\"\n[train]\nseq_len = 32\nbatch_size = 2\nsteps = 5\n\
         lr = 1e-3\nwarmup = 3\n",
    )
    .unwrap();
    let out = ferrogpt().args(["train", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warmup") && err.contains("bad.toml"), "{err}");
}
