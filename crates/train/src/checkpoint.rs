//! Checkpoint and model folders.
//!
//! A checkpoint is a folder `<out>/checkpoints/step_NNNNNNNN/` holding
//! `model.safetensors` (Hugging Face Llama tensor names), `config.json` (an HF
//! `LlamaConfig`), `tokenizer.json`, `optimizer.safetensors` (AdamW's `m.<name>`
//! and `v.<name>`), `state.json` ([`TrainState`]: step, data cursor, RNG, the
//! run's config) and `checksums.json` (SHA-256 of every other file).
//!
//! Folders are written under a temporary name and renamed into place, so a
//! process killed mid-write leaves either the whole checkpoint or none of it;
//! the checksums catch what renaming cannot (a disk or copy that truncated or
//! altered a file later), and loading names the file that fails them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use ferrogpt_engine::params::ParamLayout;
use ferrogpt_engine::{io, ModelConfig};
use ferrogpt_rng::Xoshiro256StarStar;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::TrainConfig;
use crate::{io_err, TrainError};

pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
pub const CHECKSUMS_FILE: &str = "checksums.json";

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

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, TrainError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(ferrogpt_tokenizer::hex(&h.finalize()))
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

/// Writes `model.safetensors`, `config.json` and `tokenizer.json` into `dir`,
/// which must exist.
fn write_model_files(dir: &Path, cfg: &ModelConfig, params: &[f32], tokenizer_json: &[u8]) -> Result<(), TrainError> {
    let layout = ParamLayout::new(cfg);
    io::save_model(&dir.join(MODEL_FILE), &layout, params, None)?;
    let bos = ferrogpt_tokenizer::Special::Bos.id();
    let eos = ferrogpt_tokenizer::Special::End.id();
    let hf = serde_json::to_string_pretty(&cfg.to_hf_json(bos, eos)).unwrap_or_default();
    write_file(&dir.join(CONFIG_FILE), hf.as_bytes())?;
    write_file(&dir.join(TOKENIZER_FILE), tokenizer_json)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    std::fs::write(path, bytes).map_err(io_err(path))
}

fn write_checksums(dir: &Path, files: &[&str]) -> Result<(), TrainError> {
    let mut sums = BTreeMap::new();
    for f in files {
        sums.insert(f.to_string(), sha256_file(&dir.join(f))?);
    }
    let text = serde_json::to_string_pretty(&sums).unwrap_or_default();
    write_file(&dir.join(CHECKSUMS_FILE), text.as_bytes())
}

/// Flushes every file of a folder to disk, then the folder, so the rename that
/// publishes it never exposes a folder whose contents are still in flight.
fn sync_dir(dir: &Path) -> Result<(), TrainError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(io_err(&path))?;
    }
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io_err(dir))
}

/// Builds `dest` through a sibling temporary folder and renames it into place,
/// replacing an older folder of the same name.
fn publish(dest: &Path, fill: impl FnOnce(&Path) -> Result<(), TrainError>) -> Result<(), TrainError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("folder");
    let tmp = parent.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    fill(&tmp)?;
    sync_dir(&tmp)?;
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(io_err(dest))?;
    }
    std::fs::rename(&tmp, dest).map_err(io_err(dest))
}

/// Writes the final model folder that `ferrogpt generate --model DIR` loads.
pub fn save_model_folder(dir: &Path, cfg: &ModelConfig, params: &[f32], tokenizer_json: &[u8]) -> Result<(), TrainError> {
    publish(dir, |tmp| {
        write_model_files(tmp, cfg, params, tokenizer_json)?;
        write_checksums(tmp, &[MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE])
    })
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
    let cfg = &state.config.model;
    publish(dir, |tmp| {
        write_model_files(tmp, cfg, params, tokenizer_json)?;
        let layout = ParamLayout::new(cfg);
        let mut tensors = Vec::with_capacity(2 * layout.tensors.len());
        for (prefix, buf) in [("m", m), ("v", v)] {
            for t in &layout.tensors {
                tensors.push((format!("{prefix}.{}", t.name), t.shape.clone(), &buf[t.range()]));
            }
        }
        io::save_tensors(&tmp.join(OPTIMIZER_FILE), &tensors, None)?;
        let text = serde_json::to_string_pretty(state).map_err(|e| ckpt_err(tmp, STATE_FILE, format!("cannot serialise: {e}")))?;
        write_file(&tmp.join(STATE_FILE), text.as_bytes())?;
        write_checksums(tmp, &[MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, OPTIMIZER_FILE, STATE_FILE])
    })
}

/// Checks every file listed in `checksums.json` against its SHA-256.
pub fn verify_checksums(dir: &Path) -> Result<(), TrainError> {
    let path = dir.join(CHECKSUMS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| ckpt_err(dir, CHECKSUMS_FILE, e.to_string()))?;
    let sums: BTreeMap<String, String> =
        serde_json::from_str(&text).map_err(|e| ckpt_err(dir, CHECKSUMS_FILE, format!("not valid JSON ({e})")))?;
    for (file, want) in &sums {
        let p = dir.join(file);
        if !p.exists() {
            return Err(ckpt_err(dir, file, "is missing"));
        }
        let got = sha256_file(&p)?;
        if &got != want {
            return Err(ckpt_err(
                dir,
                file,
                format!("SHA-256 mismatch (file truncated or corrupted): expected {want}, found {got}"),
            ));
        }
    }
    Ok(())
}

impl Checkpoint {
    /// Loads a checkpoint folder after verifying its checksums.
    pub fn load(dir: &Path) -> Result<Checkpoint, TrainError> {
        verify_checksums(dir)?;
        let state_text = std::fs::read_to_string(dir.join(STATE_FILE)).map_err(|e| ckpt_err(dir, STATE_FILE, e.to_string()))?;
        let state: TrainState =
            serde_json::from_str(&state_text).map_err(|e| ckpt_err(dir, STATE_FILE, format!("not a valid training state ({e})")))?;
        if state.format != STATE_FORMAT {
            return Err(ckpt_err(
                dir,
                STATE_FILE,
                format!("format {} is not the supported {STATE_FORMAT}", state.format),
            ));
        }
        state.config.validate()?;
        let layout = ParamLayout::new(&state.config.model);
        let params = io::load_model(&dir.join(MODEL_FILE), &layout)?;
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
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            state,
            params,
            m,
            v,
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
        let hf: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(ModelConfig::from_hf_json(&hf).unwrap(), state.config.model);
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

        let model = dir.join(MODEL_FILE);
        let mut bytes = std::fs::read(&model).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&model, &bytes).unwrap();
        let e = Checkpoint::load(&dir).err().unwrap().to_string();
        assert!(e.contains(MODEL_FILE) && e.contains("mismatch"), "{e}");
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
