//! The optimisation loop of the post-training stages that train on losses of
//! their own — the reward model, the safety classifier, RLHF — so that each
//! stage is only its [`Objective`]: what one step's gradient is.
//!
//! The loop owns AdamW, the learning-rate schedule, gradient clipping, the
//! progress bar, `metrics.jsonl` and checkpoints with exact resume: a
//! checkpoint holds the weights, AdamW's moments and a [`StageState`] (step,
//! the objective's cursor), so a run killed at any point and resumed
//! continues with the same numbers as one that never stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ferrogpt_engine::optim::{self, AdamW, AdamWConfig, Schedule};
use ferrogpt_engine::Model;
use ferrogpt_infer::model_folder;
use ferrogpt_progress::{Counter, Progress};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointTensors};
use crate::metrics::{MetricsLog, Record};
use crate::trainer::{METRICS_FILE, MODEL_DIR};
use crate::{io_err, TrainError};

/// What one optimizer step of a stage measured (logged and shown on the bar).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    pub loss: f64,
    /// Stage-specific figures: `accuracy`, `reward`, `kl`, `refusal_rate`...
    pub figures: BTreeMap<String, f64>,
}

/// One post-training stage's loss and data.
pub trait Objective {
    /// Everything besides the weights that exact resumption of the data order
    /// and sampling needs.
    type Cursor: Serialize + DeserializeOwned;

    /// Adds the gradient of step `step`'s loss into `model.grads` (zeroed by
    /// the loop) and reports the step.
    fn step(&mut self, model: &mut Model<f32>, step: u64) -> Result<StepReport, TrainError>;
    fn cursor(&self) -> Self::Cursor;
    fn restore(&mut self, cursor: Self::Cursor) -> Result<(), TrainError>;
}

/// The optimisation settings of a stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageConfig {
    /// The stage's name, on the progress bar and in errors (`reward model`).
    pub name: String,
    pub out_dir: PathBuf,
    pub steps: u64,
    pub lr: f64,
    pub schedule: Schedule,
    pub optimizer: AdamWConfig,
    pub clip_norm: f64,
    /// 0: no checkpoints.
    pub checkpoint_every: u64,
}

/// The non-tensor part of a stage checkpoint.
#[derive(Serialize, Deserialize)]
pub struct StageState<C> {
    pub stage: StageConfig,
    pub step: u64,
    pub optimizer_step: u64,
    pub elapsed_secs: f64,
    pub cursor: C,
}

/// A finished stage.
#[derive(Clone, Debug)]
pub struct StageSummary {
    pub steps: u64,
    pub resumed_from: u64,
    pub train_secs: f64,
    pub last: StepReport,
    pub model_dir: PathBuf,
    pub metrics: PathBuf,
}

/// Checkpoints kept on disk (the newest).
const KEEP_CHECKPOINTS: usize = 2;

/// Trains `model` under `objective` for `cfg.steps` optimizer steps, resuming
/// from the newest checkpoint in `cfg.out_dir` when `resume` is set, and
/// writes the result as a model folder `cfg.out_dir/model`.
pub fn run_stage<O: Objective>(
    mut model: Model<f32>,
    objective: &mut O,
    cfg: &StageConfig,
    tokenizer_json: &[u8],
    resume: bool,
    progress: bool,
) -> Result<(Model<f32>, StageSummary), TrainError> {
    let out = cfg.out_dir.as_path();
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let latest = checkpoint::latest_checkpoint(out)?;
    let mut opt = AdamW::new(cfg.optimizer.clone(), &model.layout);
    let mut start = (0u64, 0.0f64);
    match (&latest, resume) {
        (Some(dir), true) => {
            let (state, tensors): (StageState<O::Cursor>, CheckpointTensors) = checkpoint::read_checkpoint(dir)?;
            // A run may be moved or copied: only its settings must match, not its folder.
            let saved = StageConfig {
                out_dir: cfg.out_dir.clone(),
                ..state.stage
            };
            if saved != *cfg {
                return Err(stage_mismatch(dir, &saved, cfg));
            }
            if tensors.config != model.cfg {
                return Err(TrainError::Config {
                    key: "model".into(),
                    why: format!("the model differs from the one in checkpoint {}", dir.display()),
                });
            }
            model.params.copy_from_slice(&tensors.params);
            opt.m = tensors.m;
            opt.v = tensors.v;
            opt.step = state.optimizer_step;
            objective.restore(state.cursor)?;
            start = (state.step, state.elapsed_secs);
            tracing::info!("{}: resuming from {} at step {}", cfg.name, dir.display(), state.step);
        }
        (Some(dir), false) => {
            return Err(TrainError::Config {
                key: "out_dir".into(),
                why: format!(
                    "{} already holds checkpoint {}; pass --resume to continue it or choose another folder",
                    out.display(),
                    dir.display()
                ),
            })
        }
        (None, _) => {}
    }
    let (start_step, mut elapsed) = start;
    let metrics_path = out.join(METRICS_FILE);
    let mut log = MetricsLog::open(&metrics_path, latest.as_ref().filter(|_| resume).map(|_| start_step))?;
    model.enable_grads();
    let pb = Progress::bar(progress, &cfg.name, cfg.steps, Counter::Count("steps"));
    pb.set_position(start_step);
    let mut last = StepReport::default();
    for step in start_step + 1..=cfg.steps {
        let t0 = Instant::now();
        model.zero_grad();
        let report = objective.step(&mut model, step)?;
        if !report.loss.is_finite() {
            return Err(TrainError::Diverged { step, loss: report.loss });
        }
        let grad_norm = optim::clip_grad_norm(&mut model.grads, cfg.clip_norm);
        let lr = cfg.schedule.lr(cfg.lr, step - 1, cfg.steps);
        opt.update(&mut model.params, &model.grads, lr);
        elapsed += t0.elapsed().as_secs_f64();
        log.write(&Record {
            step,
            loss: Some(report.loss),
            lr: Some(lr),
            grad_norm: Some(grad_norm),
            figures: report.figures.clone(),
            ..Record::default()
        })?;
        let shown: Vec<String> = report.figures.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        pb.set_message(format!("loss {:.4} | {}", report.loss, shown.join(" | ")));
        pb.set_position(step);
        last = report;
        if cfg.checkpoint_every > 0 && (step % cfg.checkpoint_every == 0 || step == cfg.steps) {
            let state = StageState {
                stage: cfg.clone(),
                step,
                optimizer_step: opt.step,
                elapsed_secs: elapsed,
                cursor: objective.cursor(),
            };
            let dir = checkpoint::checkpoints_dir(out).join(checkpoint::checkpoint_name(step));
            checkpoint::write_checkpoint(&dir, &model.cfg, &model.params, &opt.m, &opt.v, &state, tokenizer_json)?;
            checkpoint::prune_checkpoints(out, KEEP_CHECKPOINTS)?;
        }
    }
    pb.finish();
    let model_dir = out.join(MODEL_DIR);
    model_folder::write(&model_dir, &model.cfg, &model.params, tokenizer_json)?;
    if last.figures.is_empty() && last.loss == 0.0 {
        last = last_logged(&metrics_path)?;
    }
    let summary = StageSummary {
        steps: cfg.steps,
        resumed_from: start_step,
        train_secs: elapsed,
        last,
        model_dir,
        metrics: metrics_path,
    };
    Ok((model, summary))
}

fn stage_mismatch(dir: &Path, saved: &StageConfig, cfg: &StageConfig) -> TrainError {
    let as_map = |c: &StageConfig| match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (saved, now) = (as_map(saved), as_map(cfg));
    let differing: Vec<String> = now
        .iter()
        .filter(|(k, v)| saved.get(*k) != Some(v))
        .map(|(k, v)| format!("{k} = {v} (checkpoint: {})", saved.get(k).unwrap_or(&serde_json::Value::Null)))
        .collect();
    TrainError::Config {
        key: cfg.name.clone(),
        why: format!(
            "resuming needs the settings saved in checkpoint {}; these differ: {}",
            dir.display(),
            differing.join(", ")
        ),
    }
}

/// The last step's report from `metrics.jsonl`, for a run resumed after its last step.
fn last_logged(path: &Path) -> Result<StepReport, TrainError> {
    let records = crate::metrics::read_records(path)?;
    Ok(records
        .iter()
        .rev()
        .find_map(|r| {
            r.loss.map(|loss| StepReport {
                loss,
                figures: r.figures.clone(),
            })
        })
        .unwrap_or_default())
}
