//! Training the ladder: the shared corpus once, then every rung (and later the
//! targets), each seed in its own folder with a `result.json`.
//!
//! ```text
//! DIR/corpus/            tokenizer.json, data/ (shards + manifest.json), spec.json
//! DIR/runs/NAME/seedK/   the training run (checkpoints, metrics, model/),
//!                        started.json (first start), result.json (when finished)
//! ```
//! A run with a `result.json` is skipped; one with a checkpoint resumes from
//! it; anything else starts over.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrogpt_data::{build_corpus, CorpusSpec, Split, TokenShards, MANIFEST_FILE};
use ferrogpt_progress::{Counter, Progress};
use ferrogpt_train::checkpoint::latest_checkpoint;
use ferrogpt_train::{train, TrainOptions};
use serde::{Deserialize, Serialize};

use crate::ladder::{Ladder, RunPlan};
use crate::ScalingError;

pub const CORPUS_DIR: &str = "corpus";
pub const RUNS_DIR: &str = "runs";
pub const RESULT_FILE: &str = "result.json";
pub const STARTED_FILE: &str = "started.json";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScalingError + '_ {
    move |source| ScalingError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a JSON file into `T`, naming the file on failure.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ScalingError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| ScalingError::File {
        path: path.to_path_buf(),
        why: format!("not the expected JSON: {e}"),
    })
}

/// Writes pretty JSON through a temporary file, so a crash never leaves half a file
/// that a later resume would take for a finished result.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ScalingError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| ScalingError::File {
        path: path.to_path_buf(),
        why: format!("cannot be written as JSON: {e}"),
    })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// A moment, as RFC 3339 UTC text and as Unix seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stamp {
    pub utc: String,
    pub unix: f64,
}

impl Stamp {
    pub fn now() -> Stamp {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let secs = d.as_secs();
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let days = (secs / 86_400) as i64;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let rem = secs % 86_400;
        Stamp {
            utc: format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            ),
            unix: d.as_secs_f64(),
        }
    }
}

/// The prepared corpus every run trains and is evaluated on.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub data_dir: PathBuf,
    pub tokenizer: PathBuf,
    pub manifest: PathBuf,
    pub train_tokens: usize,
    pub val_tokens: usize,
}

/// Prepares `DIR/corpus` once (tokenizer + shards with a held-out val split),
/// reusing it when the ladder's `[data]` is unchanged.
pub fn prepare_data(ladder: &Ladder, out: &Path, progress: bool) -> Result<Prepared, ScalingError> {
    let dir = out.join(CORPUS_DIR);
    let spec_path = dir.join("spec.json");
    let data_dir = dir.join("data");
    let manifest = data_dir.join(MANIFEST_FILE);
    let tokenizer = dir.join("tokenizer.json");
    let ready = spec_path.exists() && manifest.exists() && tokenizer.exists();
    if ready {
        let saved: CorpusSpec = read_json(&spec_path)?;
        if saved != ladder.data {
            return Err(ScalingError::Refused(format!(
                "{} was prepared from a different [data] section; runs on different data cannot share a fit (use another --out)",
                dir.display()
            )));
        }
    } else {
        build_corpus(&ladder.data, &dir, progress)?;
        write_json(&spec_path, &ladder.data)?;
    }
    let train_tokens = TokenShards::open(&data_dir, Split::Train)?.len();
    let val_tokens = TokenShards::open(&data_dir, Split::Val)?.len();
    // Every run must be scored on the same tokens; a short val split would
    // silently score big and small runs on different amounts.
    if val_tokens < ladder.recipe.eval_tokens + ladder.recipe.seq_len {
        return Err(ScalingError::Refused(format!(
            "the val split has {val_tokens} tokens, fewer than recipe.eval_tokens = {} (+ one window); raise data.max_bytes or data.val_fraction",
            ladder.recipe.eval_tokens
        )));
    }
    Ok(Prepared {
        data_dir,
        tokenizer,
        manifest,
        train_tokens,
        val_tokens,
    })
}

/// Rung (fit material) or held-out target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Rung,
    Target,
}

/// One finished run (one seed of one shape), as `result.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub name: String,
    pub kind: RunKind,
    pub seed: u64,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Every parameter (embeddings, norms and head included).
    pub params: usize,
    pub non_embedding_params: usize,
    /// Non-embedding weights plus the LM head: the N of the token budget.
    pub matmul_params: usize,
    pub tokens: u64,
    pub tokens_per_param: f64,
    pub on_recipe: bool,
    pub batch_size: usize,
    pub steps: u64,
    pub lr: f64,
    pub init_std: f64,
    /// Model FLOPs of the run (the compute axis of every fit).
    pub train_flops: f64,
    pub executed_flops: f64,
    /// Seconds in training steps, and wall seconds including evaluation and saving.
    pub train_secs: f64,
    pub wall_secs: f64,
    pub val_loss: f64,
    pub val_bpb: f64,
    pub eval_tokens: usize,
    pub started: Stamp,
    pub finished: Stamp,
    pub run_dir: PathBuf,
}

/// The folder of one seed of a run.
pub fn run_dir(out: &Path, name: &str, seed: u64) -> PathBuf {
    out.join(RUNS_DIR).join(name).join(format!("seed{seed}"))
}

/// When a run first started training, if it ever did.
pub fn started_at(out: &Path, name: &str, seed: u64) -> Result<Option<Stamp>, ScalingError> {
    let p = run_dir(out, name, seed).join(STARTED_FILE);
    if p.exists() {
        read_json(&p).map(Some)
    } else {
        Ok(None)
    }
}

/// The finished record of a run, if any.
pub fn finished(out: &Path, name: &str, seed: u64) -> Result<Option<RunRecord>, ScalingError> {
    let p = run_dir(out, name, seed).join(RESULT_FILE);
    if p.exists() {
        read_json(&p).map(Some)
    } else {
        Ok(None)
    }
}

/// One bar over the whole ladder, advanced by each finished run's FLOPs.
pub struct LadderBar {
    bar: Progress,
}

impl LadderBar {
    /// `total_flops`: everything the ladder will train (all seeds, targets included).
    pub fn new(show: bool, total_flops: f64) -> LadderBar {
        LadderBar {
            bar: Progress::bar(show, "ladder (FLOPs)", to_mflops(total_flops), Counter::Percent),
        }
    }

    pub fn hidden() -> LadderBar {
        LadderBar::new(false, 0.0)
    }

    fn start(&self, what: &str) {
        self.bar.set_message(what.to_string());
    }

    fn done(&self, flops: f64) {
        self.bar.inc(to_mflops(flops));
    }

    /// A line above the bar, or on stderr directly without one (`--quiet`, or no terminal),
    /// so logs still show each finished run.
    pub fn println(&self, line: &str) {
        self.bar.println(line);
    }

    pub fn finish(&self) {
        self.bar.finish();
    }
}

fn to_mflops(f: f64) -> u64 {
    (f / 1e6).round() as u64
}

/// Trains one seed of a planned run (or returns its finished record).
pub fn run_one(
    ladder: &Ladder,
    plan: &RunPlan,
    kind: RunKind,
    seed: u64,
    data: &Prepared,
    out: &Path,
    bar: &LadderBar,
) -> Result<RunRecord, ScalingError> {
    if let Some(done) = finished(out, &plan.name, seed)? {
        bar.done(plan.train_flops);
        return Ok(done);
    }
    let dir = run_dir(out, &plan.name, seed);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let started = match started_at(out, &plan.name, seed)? {
        Some(s) => s,
        None => {
            let s = Stamp::now();
            write_json(&dir.join(STARTED_FILE), &s)?;
            s
        }
    };
    let cfg = ladder.train_config(plan, seed, dir.clone(), &data.data_dir, &data.tokenizer);
    let cfg_path = dir.join("train.toml");
    std::fs::write(&cfg_path, cfg.to_toml()?).map_err(io(&cfg_path))?;
    let resume = latest_checkpoint(&dir)?.is_some();
    bar.start(&format!(
        "{} seed {seed}: {:.2e} FLOPs{}",
        plan.name,
        plan.train_flops,
        if resume { " (resuming)" } else { "" }
    ));
    let t = Instant::now();
    let s = train(&cfg, &TrainOptions { resume, progress: false })?;
    let record = RunRecord {
        name: plan.name.clone(),
        kind,
        seed,
        d_model: plan.model.d_model,
        n_layers: plan.model.n_layers,
        n_heads: plan.model.n_heads,
        params: s.params,
        non_embedding_params: s.non_embedding_params,
        matmul_params: plan.matmul_params,
        tokens: s.tokens,
        tokens_per_param: plan.tokens_per_param,
        on_recipe: plan.on_recipe,
        batch_size: plan.batch_size,
        steps: s.steps,
        lr: plan.lr,
        init_std: plan.init_std,
        train_flops: s.train_flops,
        executed_flops: plan.executed_flops,
        train_secs: s.train_secs,
        wall_secs: t.elapsed().as_secs_f64(),
        val_loss: s.val_loss,
        val_bpb: s.val_bpb,
        eval_tokens: ladder.recipe.eval_tokens,
        started,
        finished: Stamp::now(),
        run_dir: dir.clone(),
    };
    write_json(&dir.join(RESULT_FILE), &record)?;
    bar.done(plan.train_flops);
    bar.println(&format!(
        "{:<12} seed {seed}  {:>9.3e} FLOPs  {:>8} tokens  {:>7.1}s  val {:.4} bits/byte",
        plan.name, record.train_flops, record.tokens, record.wall_secs, record.val_bpb
    ));
    Ok(record)
}

/// Trains every seed of every rung, smallest first.
pub fn sweep(ladder: &Ladder, data: &Prepared, out: &Path, bar: &LadderBar) -> Result<Vec<RunRecord>, ScalingError> {
    let mut plans: Vec<RunPlan> = ladder.rungs.iter().map(|s| ladder.plan(s)).collect();
    plans.sort_by(|a, b| a.train_flops.total_cmp(&b.train_flops));
    let mut records = Vec::new();
    for plan in &plans {
        for seed in 0..plan.seeds as u64 {
            records.push(run_one(ladder, plan, RunKind::Rung, seed, data, out, bar)?);
        }
    }
    Ok(records)
}

/// FLOPs the whole ladder trains: every seed of every rung, and every target.
pub fn total_flops(ladder: &Ladder) -> f64 {
    let rungs: f64 = ladder
        .rungs
        .iter()
        .map(|s| ladder.plan(s))
        .map(|p| p.train_flops * p.seeds as f64)
        .sum();
    let targets: f64 = ladder.targets.iter().map(|s| ladder.plan(s).train_flops).sum();
    rungs + targets
}

/// A rung's seeds averaged: one fit point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RungPoint {
    pub name: String,
    pub train_flops: f64,
    pub val_bpb: f64,
    /// Standard deviation across seeds (0 for one seed).
    pub val_bpb_std: f64,
    pub seeds: usize,
    pub matmul_params: usize,
    pub non_embedding_params: usize,
    pub tokens: u64,
    pub on_recipe: bool,
}

/// Groups records by shape name (in the order they first appear) and averages seeds.
pub fn rung_points(records: &[RunRecord]) -> Vec<RungPoint> {
    let mut names: Vec<&str> = Vec::new();
    for r in records {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            let group: Vec<&RunRecord> = records.iter().filter(|r| r.name == name).collect();
            let first = group.first()?;
            let n = group.len() as f64;
            let mean = group.iter().map(|r| r.val_bpb).sum::<f64>() / n;
            let var = group.iter().map(|r| (r.val_bpb - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            Some(RungPoint {
                name: name.to_string(),
                train_flops: first.train_flops,
                val_bpb: mean,
                val_bpb_std: var.sqrt(),
                seeds: group.len(),
                matmul_params: first.matmul_params,
                non_embedding_params: first.non_embedding_params,
                tokens: first.tokens,
                on_recipe: first.on_recipe,
            })
        })
        .collect()
}

/// Every finished rung record under `out` for this ladder (seeds in order).
pub fn finished_rungs(ladder: &Ladder, out: &Path) -> Result<Vec<RunRecord>, ScalingError> {
    let mut records = Vec::new();
    for s in &ladder.rungs {
        for seed in 0..s.seeds as u64 {
            if let Some(r) = finished(out, &s.name, seed)? {
                records.push(r);
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::tests_support::record;
    use super::*;

    #[test]
    fn stamps_are_rfc3339_utc() {
        let s = Stamp::now();
        assert_eq!(s.utc.len(), 20, "{}", s.utc);
        assert!(s.utc.ends_with('Z') && s.utc.as_bytes()[10] == b'T', "{}", s.utc);
        assert!(s.unix > 1.7e9);
    }

    #[test]
    fn seeds_are_averaged_into_one_point() {
        let pts = rung_points(&[record("a", 2.0), record("a", 3.0), record("b", 1.5)]);
        assert_eq!(pts.len(), 2);
        assert_eq!((pts[0].name.as_str(), pts[0].seeds, pts[0].val_bpb), ("a", 2, 2.5));
        assert!((pts[0].val_bpb_std - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!((pts[1].seeds, pts[1].val_bpb_std), (1, 0.0));
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn record(name: &str, bpb: f64) -> RunRecord {
        RunRecord {
            name: name.into(),
            kind: RunKind::Rung,
            seed: 0,
            d_model: 8,
            n_layers: 1,
            n_heads: 2,
            params: 10,
            non_embedding_params: 5,
            matmul_params: 7,
            tokens: 100,
            tokens_per_param: 20.0,
            on_recipe: true,
            batch_size: 1,
            steps: 1,
            lr: 1e-3,
            init_std: 0.02,
            train_flops: 1e9,
            executed_flops: 1.1e9,
            train_secs: 1.0,
            wall_secs: 1.0,
            val_loss: 1.0,
            val_bpb: bpb,
            eval_tokens: 10,
            started: Stamp::now(),
            finished: Stamp::now(),
            run_dir: PathBuf::from("x"),
        }
    }
}
