//! Checkpoints.
//!
//! A checkpoint is a model folder (`model.safetensors`, `config.json`,
//! `tokenizer.json`, written by [`ferrogpt_infer::model_folder`]) at
//! `<out>/checkpoints/step_NNNNNNNN/`, plus `optimizer.safetensors` (AdamW's
//! `m.<name>` and `v.<name>`), `state.json` ([`TrainState`]: step, data cursor,
//! RNG, the run's config) and `checksums.json` (SHA-256 of every other file).
//!
//! Folders are published the model-folder way, under a temporary name and
//! renamed into place, so a process killed mid-write leaves either the whole
//! checkpoint or none of it; the checksums catch what renaming cannot (a disk
//! or copy that truncated or altered a file later), and loading names the file
//! that fails them.

use std::path::{Path, PathBuf};

use ferrogpt_engine::io;
use ferrogpt_engine::params::ParamLayout;
use ferrogpt_engine::ModelConfig;
use ferrogpt_infer::model_folder::{self, WEIGHTS_FILE};
use ferrogpt_rng::Xoshiro256StarStar;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::{io_err, TrainError};

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";

/// Bumped when `state.json` changes meaning.
const STATE_FORMAT: u32 = 1;

/// Everything besides tensors that exact resumption needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    pub format: u32,
    /// Optimizer steps completed.
    pub step: u64,
    pub tokens_seen: u64,
    /// AdamW's own step counter (bias correction).
    pub optimizer_step: u64,
    /// The data loader's cursor, as the loader serialises it.
    pub loader: serde_json::Value,
    pub rng: Xoshiro256StarStar,
    /// Wall-clock seconds spent training before this checkpoint (for reports).
    pub elapsed_secs: f64,
    pub config: TrainConfig,
}

impl TrainState {
    pub fn new(config: TrainConfig, loader: serde_json::Value, rng: Xoshiro256StarStar) -> Self {
        TrainState {
            format: STATE_FORMAT,
            step: 0,
            tokens_seen: 0,
            optimizer_step: 0,
            loader,
            rng,
            elapsed_secs: 0.0,
            config,
        }
    }
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: TrainState,
    pub params: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

fn ckpt_err(dir: &Path, file: &str, why: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        dir: dir.to_path_buf(),
        file: file.to_string(),
        why: why.into(),
    }
}

/// The folder name of the checkpoint after `step` optimizer steps.
pub fn checkpoint_name(step: u64) -> String {
    format!("step_{step:08}")
}

/// The checkpoints folder of a run.
pub fn checkpoints_dir(out_dir: &Path) -> PathBuf {
    out_dir.join("checkpoints")
}

/// Completed checkpoints of a run, oldest first (temporary folders are ignored).
pub fn list_checkpoints(out_dir: &Path) -> Result<Vec<(u64, PathBuf)>, TrainError> {
    let root = checkpoints_dir(out_dir);
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(io_err(&root))? {
        let entry = entry.map_err(io_err(&root))?;
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix("step_"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((step, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// The newest completed checkpoint of a run, if any.
pub fn latest_checkpoint(out_dir: &Path) -> Result<Option<PathBuf>, TrainError> {
    Ok(list_checkpoints(out_dir)?.pop().map(|(_, p)| p))
}

/// Writes a checkpoint folder atomically.
pub fn save_checkpoint(
    dir: &Path,
    params: &[f32],
    m: &[f32],
    v: &[f32],
    state: &TrainState,
    tokenizer_json: &[u8],
) -> Result<(), TrainError> {
    write_checkpoint(dir, &state.config.model, params, m, v, state, tokenizer_json)
}

/// Writes a checkpoint folder atomically, with any stage's state as `state.json`
/// (pretraining and SFT write a [`TrainState`]; the post-training stages their own).
pub fn write_checkpoint<S: Serialize>(
    dir: &Path,
    model: &ModelConfig,
    params: &[f32],
    m: &[f32],
    v: &[f32],
    state: &S,
    tokenizer_json: &[u8],
) -> Result<(), TrainError> {
    model_folder::publish(dir, |tmp| -> Result<(), TrainError> {
        model_folder::write_model_files(tmp, model, params, tokenizer_json)?;
        let layout = ParamLayout::new(model);
        let mut tensors = Vec::with_capacity(2 * layout.tensors.len());
        for (prefix, buf) in [("m", m), ("v", v)] {
            for t in &layout.tensors {
                tensors.push((format!("{prefix}.{}", t.name), t.shape.clone(), &buf[t.range()]));
            }
        }
        io::save_tensors(&tmp.join(OPTIMIZER_FILE), &tensors, None)?;
        let text = serde_json::to_string_pretty(state).map_err(|e| ckpt_err(tmp, STATE_FILE, format!("cannot serialise: {e}")))?;
        let state_path = tmp.join(STATE_FILE);
        std::fs::write(&state_path, text).map_err(io_err(&state_path))
    })
}

/// The tensors of a checkpoint: weights and AdamW's moments in the layout of `config`.
pub struct CheckpointTensors {
    pub config: ModelConfig,
    pub params: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// Reads a checkpoint folder written by [`write_checkpoint`] after verifying its
/// checksums: its stage state and its tensors (shape from its `config.json`).
pub fn read_checkpoint<S: DeserializeOwned>(dir: &Path) -> Result<(S, CheckpointTensors), TrainError> {
    model_folder::verify_checksums(dir)?;
    let state_text = std::fs::read_to_string(dir.join(STATE_FILE)).map_err(|e| ckpt_err(dir, STATE_FILE, e.to_string()))?;
    let state: S = serde_json::from_str(&state_text).map_err(|e| ckpt_err(dir, STATE_FILE, format!("not a valid training state ({e})")))?;
    let config = model_folder::read_config(dir)?;
    let layout = ParamLayout::new(&config);
    let params = io::load_model(&dir.join(WEIGHTS_FILE), &layout)?;
    let mut opt = io::load_tensors(&dir.join(OPTIMIZER_FILE))?;
    let mut take = |prefix: &str| -> Result<Vec<f32>, TrainError> {
        let mut buf = vec![0.0f32; layout.total];
        for t in &layout.tensors {
            let name = format!("{prefix}.{}", t.name);
            let (shape, data) = opt
                .remove(&name)
                .ok_or_else(|| ckpt_err(dir, OPTIMIZER_FILE, format!("tensor {name} is missing")))?;
            if shape != t.shape {
                return Err(ckpt_err(
                    dir,
                    OPTIMIZER_FILE,
                    format!("tensor {name} has shape {shape:?}, the config needs {:?}", t.shape),
                ));
            }
            buf[t.range()].copy_from_slice(&data);
        }
        Ok(buf)
    };
    let m = take("m")?;
    let v = take("v")?;
    Ok((state, CheckpointTensors { config, params, m, v }))
}

impl Checkpoint {
    /// Loads a checkpoint folder after verifying its checksums.
    pub fn load(dir: &Path) -> Result<Checkpoint, TrainError> {
        let (state, tensors): (TrainState, _) = read_checkpoint(dir)?;
        if state.format != STATE_FORMAT {
            return Err(ckpt_err(
                dir,
                STATE_FILE,
                format!("format {} is not the supported {STATE_FORMAT}", state.format),
            ));
        }
        state.config.validate()?;
        if tensors.config != state.config.model {
            return Err(ckpt_err(
                dir,
                STATE_FILE,
                "its model config differs from the checkpoint's config.json",
            ));
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            state,
            params: tensors.params,
            m: tensors.m,
            v: tensors.v,
        })
    }
}

/// Removes all but the newest `keep` checkpoints.
pub fn prune_checkpoints(out_dir: &Path, keep: usize) -> Result<(), TrainError> {
    let all = list_checkpoints(out_dir)?;
    let excess = all.len().saturating_sub(keep);
    for (_, path) in &all[..excess] {
        std::fs::remove_dir_all(path).map_err(io_err(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_state() -> TrainState {
        let text = r#"
out_dir = "unused"
[model]
vocab_size = 300
d_model = 16
n_layers = 2
n_heads = 2
n_kv_heads = 1
ffn_hidden = 32
max_seq_len = 16
[data]
dir = "unused"
[train]
seq_len = 8
batch_size = 2
steps = 10
lr = 1e-3
"#;
        let cfg = TrainConfig::from_toml(text).unwrap();
        TrainState::new(cfg, serde_json::json!({"cursor": 42}), Xoshiro256StarStar::new(3))
    }

    fn tiny_buffers(state: &TrainState) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let layout = ParamLayout::new(&state.config.model);
        let params: Vec<f32> = layout.init(&state.config.model, 0.02, 1);
        let m: Vec<f32> = (0..layout.total).map(|i| i as f32 * 1e-3).collect();
        let v: Vec<f32> = (0..layout.total).map(|i| (i as f32).sqrt()).collect();
        (params, m, v)
    }

    #[test]
    fn checkpoint_round_trips_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let mut state = tiny_state();
        state.step = 7;
        state.rng.next_u64();
        let (params, m, v) = tiny_buffers(&state);
        let dir = checkpoints_dir(tmp.path()).join(checkpoint_name(7));
        save_checkpoint(&dir, &params, &m, &v, &state, b"{\"tok\":1}").unwrap();
        let back = Checkpoint::load(&dir).unwrap();
        assert_eq!(back.params, params);
        assert_eq!(back.m, m);
        assert_eq!(back.v, v);
        assert_eq!(back.state.step, 7);
        assert_eq!(back.state.rng, state.rng);
        assert_eq!(back.state.loader, state.loader);
        assert_eq!(back.state.config, state.config);
        assert_eq!(latest_checkpoint(tmp.path()).unwrap(), Some(dir.clone()));
        assert_eq!(model_folder::read_config(&dir).unwrap(), state.config.model);
        // No temporary folder is left behind.
        let names: Vec<_> = std::fs::read_dir(checkpoints_dir(tmp.path())).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn corrupt_or_truncated_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tiny_state();
        let (params, m, v) = tiny_buffers(&state);
        let dir = tmp.path().join("ck");
        save_checkpoint(&dir, &params, &m, &v, &state, b"{}").unwrap();

        let opt = dir.join(OPTIMIZER_FILE);
        let bytes = std::fs::read(&opt).unwrap();
        std::fs::write(&opt, &bytes[..bytes.len() / 2]).unwrap();
        let e = Checkpoint::load(&dir).err().unwrap().to_string();
        assert!(e.contains(OPTIMIZER_FILE) && e.contains("mismatch"), "{e}");
        std::fs::write(&opt, &bytes).unwrap();

        let model = dir.join(WEIGHTS_FILE);
        let mut bytes = std::fs::read(&model).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&model, &bytes).unwrap();
        let e = Checkpoint::load(&dir).err().unwrap().to_string();
        assert!(e.contains(WEIGHTS_FILE) && e.contains("mismatch"), "{e}");
        bytes[last] ^= 1;
        std::fs::write(&model, &bytes).unwrap();
        Checkpoint::load(&dir).unwrap();

        std::fs::remove_file(dir.join(STATE_FILE)).unwrap();
        let e = Checkpoint::load(&dir).err().unwrap().to_string();
        assert!(e.contains(STATE_FILE) && e.contains("missing"), "{e}");
    }

    #[test]
    fn a_state_saved_before_the_rng_moved_still_loads() {
        let mut json = serde_json::to_value(tiny_state()).unwrap();
        // `rng` as ferrogpt-engine's `rng::Rng` wrote it into `state.json`: Rng::new(42) after
        // four draws.
        json["rng"] =
            serde_json::json!({"s": [7903954225905035531u64, 9357853297271469720u64, 2724644940759801119u64, 10543582298886573110u64]});
        let state: TrainState = serde_json::from_value(json).unwrap();
        let mut expected = Xoshiro256StarStar::new(42);
        for _ in 0..4 {
            expected.next_u64();
        }
        assert_eq!(state.rng, expected);
    }

    #[test]
    fn pruning_keeps_the_newest() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tiny_state();
        let (params, m, v) = tiny_buffers(&state);
        for step in [5, 10, 15] {
            let dir = checkpoints_dir(tmp.path()).join(checkpoint_name(step));
            save_checkpoint(&dir, &params, &m, &v, &state, b"{}").unwrap();
        }
        prune_checkpoints(tmp.path(), 2).unwrap();
        let steps: Vec<u64> = list_checkpoints(tmp.path()).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![10, 15]);
    }
}
