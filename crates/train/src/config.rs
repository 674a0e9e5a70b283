//! The training run's TOML config. Every table denies unknown keys, and
//! [`TrainConfig::validate`] names the offending key (`section.key`) for values
//! out of range, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use ferrogpt_engine::{AdamWConfig, ModelConfig, Schedule};
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// A whole training run: model shape, data, optimisation and bookkeeping.
/// Relative paths are taken relative to the current directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Where checkpoints, metrics, the loss curve and the final model go.
    pub out_dir: PathBuf,
    pub model: ModelConfig,
    pub data: DataConfig,
    pub train: Hyper,
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    #[serde(default)]
    pub optimizer: AdamWConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
}

/// What to train on: token shards (pretraining) or conversations (supervised fine-tuning),
/// exactly one of the two.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Pretraining: the folder with `manifest.json` and the shards (`ferrogpt data prepare`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Fine-tuning: the conversations to train on, JSONL in OpenAI's chat fine-tuning format
    /// (see [`crate::conversations`]); only the assistant replies are trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<PathBuf>,
    /// Fine-tuning: held-out conversations, the validation set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_conversations: Option<PathBuf>,
    /// `tokenizer.json`; defaults to the one in `dir`, or in `train.init_from` when fine-tuning.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
}

/// The training data a [`DataConfig`] names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DataSource<'a> {
    Shards(&'a Path),
    Conversations { train: &'a Path, val: &'a Path },
}

impl DataConfig {
    /// Pretraining on the shards in `dir`, encoded with `tokenizer`.
    pub fn shards(dir: &Path, tokenizer: &Path) -> Self {
        DataConfig {
            dir: Some(dir.to_path_buf()),
            conversations: None,
            val_conversations: None,
            tokenizer: Some(tokenizer.to_path_buf()),
        }
    }

    pub fn source(&self) -> Result<DataSource<'_>, TrainError> {
        match (&self.dir, &self.conversations, &self.val_conversations) {
            (Some(dir), None, None) => Ok(DataSource::Shards(dir)),
            (None, Some(train), Some(val)) => Ok(DataSource::Conversations { train, val }),
            (None, Some(_), None) => Err(invalid(
                "data.val_conversations",
                "fine-tuning needs held-out conversations to validate on",
            )),
            (Some(_), _, _) | (None, None, Some(_)) => Err(invalid(
                "data",
                "give either `dir` (token shards) or `conversations` and `val_conversations`, not both",
            )),
            (None, None, None) => Err(invalid("data", "give `dir` (token shards) or `conversations` to train on")),
        }
    }
}

/// Optimisation hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hyper {
    /// Tokens per sequence (at most `model.max_seq_len`).
    pub seq_len: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed before one optimizer step.
    #[serde(default = "one")]
    pub grad_accum: usize,
    /// Optimizer steps in the whole run (the schedule spans them).
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Standard deviation of the initial weights.
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    /// Global gradient-norm clip; 0 disables clipping.
    #[serde(default = "default_clip")]
    pub clip_norm: f64,
    /// Seeds the initial weights and the data order.
    #[serde(default)]
    pub seed: u64,
    /// A model folder whose weights the run starts from (fine-tuning) instead of random ones;
    /// its config must equal `[model]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
}

/// Validation: `tokens` held-out tokens every `every` steps (0 = only at the end).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    #[serde(default = "default_eval_every")]
    pub every: u64,
    #[serde(default = "default_eval_tokens")]
    pub tokens: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            every: default_eval_every(),
            tokens: default_eval_tokens(),
        }
    }
}

/// Checkpoint folders every `every` steps (0 = none); the newest `keep` are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    #[serde(default = "default_ckpt_every")]
    pub every: u64,
    #[serde(default = "default_keep")]
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every: default_ckpt_every(),
            keep: default_keep(),
        }
    }
}

fn one() -> usize {
    1
}
fn default_init_std() -> f64 {
    0.02
}
fn default_clip() -> f64 {
    1.0
}
fn default_eval_every() -> u64 {
    100
}
fn default_eval_tokens() -> usize {
    32_768
}
fn default_ckpt_every() -> u64 {
    200
}
fn default_keep() -> usize {
    2
}
fn default_schedule() -> Schedule {
    Schedule::Cosine {
        warmup_frac: 0.05,
        min_lr_ratio: 0.1,
    }
}

fn invalid(key: &str, why: impl Into<String>) -> TrainError {
    TrainError::Config {
        key: key.to_string(),
        why: why.into(),
    }
}

impl TrainConfig {
    /// Reads and validates a TOML config file.
    pub fn from_file(path: &Path) -> Result<TrainConfig, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            TrainError::Parse { why, .. } => TrainError::Parse {
                path: path.to_path_buf(),
                why,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text (errors name no file; see [`Self::from_file`]).
    pub fn from_toml(text: &str) -> Result<TrainConfig, TrainError> {
        let cfg: TrainConfig = toml::from_str(text).map_err(|e| TrainError::Parse {
            path: PathBuf::from("<config>"),
            why: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as TOML (what `from_toml` reads back).
    pub fn to_toml(&self) -> Result<String, TrainError> {
        toml::to_string_pretty(self).map_err(|e| invalid("config", format!("cannot be written as TOML: {e}")))
    }

    /// Checks every range the types cannot express; errors name `section.key`.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.model.validate().map_err(|e| match e {
            ferrogpt_engine::EngineError::Config { field, why } => invalid(&format!("model.{field}"), why),
            other => invalid("model", other.to_string()),
        })?;
        let t = &self.train;
        if t.seq_len == 0 || t.seq_len > self.model.max_seq_len {
            return Err(invalid(
                "train.seq_len",
                format!("{} must be in 1..={} (model.max_seq_len)", t.seq_len, self.model.max_seq_len),
            ));
        }
        for (key, v) in [("train.batch_size", t.batch_size), ("train.grad_accum", t.grad_accum)] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if t.steps == 0 {
            return Err(invalid("train.steps", "must be at least 1"));
        }
        if !(t.lr.is_finite() && t.lr > 0.0 && t.lr < 1.0) {
            return Err(invalid("train.lr", format!("{} must be in (0, 1)", t.lr)));
        }
        if !(t.init_std.is_finite() && t.init_std > 0.0 && t.init_std < 1.0) {
            return Err(invalid("train.init_std", format!("{} must be in (0, 1)", t.init_std)));
        }
        if !(t.clip_norm.is_finite() && t.clip_norm >= 0.0) {
            return Err(invalid("train.clip_norm", format!("{} must be >= 0", t.clip_norm)));
        }
        self.schedule.validate().map_err(|why| invalid("schedule", why))?;
        let o = &self.optimizer;
        for (key, v) in [("optimizer.beta1", o.beta1), ("optimizer.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(invalid(key, format!("{v} must be in [0, 1)")));
            }
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return Err(invalid("optimizer.eps", format!("{} must be > 0", o.eps)));
        }
        if !(o.weight_decay.is_finite() && (0.0..1.0).contains(&o.weight_decay)) {
            return Err(invalid("optimizer.weight_decay", format!("{} must be in [0, 1)", o.weight_decay)));
        }
        if self.eval.tokens == 0 {
            return Err(invalid("eval.tokens", "must be at least 1"));
        }
        if self.checkpoint.keep == 0 {
            return Err(invalid("checkpoint.keep", "must be at least 1"));
        }
        if let (DataSource::Conversations { .. }, None, None) = (self.data.source()?, &self.data.tokenizer, &t.init_from) {
            return Err(invalid(
                "data.tokenizer",
                "fine-tuning needs the tokenizer of its starting model: set `train.init_from` or `data.tokenizer`",
            ));
        }
        Ok(())
    }

    /// The `tokenizer.json` the run encodes with: `data.tokenizer`, else the one beside the
    /// data (shards) or the starting weights (fine-tuning).
    pub fn tokenizer_path(&self) -> PathBuf {
        if let Some(t) = &self.data.tokenizer {
            return t.clone();
        }
        match (&self.data.dir, &self.train.init_from) {
            (Some(dir), _) => dir.join("tokenizer.json"),
            (None, Some(init)) => init.join("tokenizer.json"),
            (None, None) => PathBuf::from("tokenizer.json"),
        }
    }

    /// Tokens consumed by one optimizer step.
    pub fn tokens_per_step(&self) -> usize {
        self.train.seq_len * self.train.batch_size * self.train.grad_accum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r#"
out_dir = "runs/x"
[model]
vocab_size = 300
d_model = 16
n_layers = 1
n_heads = 2
n_kv_heads = 2
ffn_hidden = 32
max_seq_len = 16
[data]
dir = "data/x"
[train]
seq_len = 8
batch_size = 2
steps = 10
lr = 1e-3
"#;

    fn err_of(text: &str) -> String {
        TrainConfig::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn tiny_config_parses_with_defaults() {
        let c = TrainConfig::from_toml(TINY).unwrap();
        assert_eq!(c.train.grad_accum, 1);
        assert_eq!(c.checkpoint.keep, 2);
        assert_eq!(c.tokenizer_path(), PathBuf::from("data/x/tokenizer.json"));
        assert_eq!(TrainConfig::from_toml(&c.to_toml().unwrap()).unwrap(), c);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err_of(&TINY.replace("lr = 1e-3", "lr = 1e-3\nlearning_rate = 1"));
        assert!(e.contains("learning_rate"), "{e}");
        let e = err_of(&format!("{TINY}\n[checkpoint]\nevery = 5\nkep = 2\n"));
        assert!(e.contains("kep"), "{e}");
        let e = err_of(&TINY.replace("ffn_hidden = 32", "ffn_hidden = 32\nhidden = 3"));
        assert!(e.contains("hidden"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        let cases = [
            ("lr = 1e-3", "lr = 2.0", "train.lr"),
            ("seq_len = 8", "seq_len = 32", "train.seq_len"),
            ("batch_size = 2", "batch_size = 0", "train.batch_size"),
            ("steps = 10", "steps = 0", "train.steps"),
            ("n_kv_heads = 2", "n_kv_heads = 3", "model.n_kv_heads"),
        ];
        for (from, to, key) in cases {
            let e = err_of(&TINY.replace(from, to));
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = err_of(&format!("{TINY}\n[optimizer]\nbeta2 = 1.5\n"));
        assert!(e.contains("optimizer.beta2"), "{e}");
        let e = err_of(&format!(
            "{TINY}\n[schedule]\nkind = \"wsd\"\nwarmup_frac = 0.7\ncooldown_frac = 0.7\n"
        ));
        assert!(e.contains("schedule") && e.contains("cooldown_frac"), "{e}");
    }

    #[test]
    fn fine_tuning_data_needs_both_files_and_a_tokenizer() {
        let sft = TINY.replace("dir = \"data/x\"", "conversations = \"c.jsonl\"\nval_conversations = \"v.jsonl\"");
        let e = err_of(&sft);
        assert!(e.contains("data.tokenizer"), "{e}");
        let c = TrainConfig::from_toml(&sft.replace("lr = 1e-3", "lr = 1e-3\ninit_from = \"runs/base/model\"")).unwrap();
        assert_eq!(c.tokenizer_path(), PathBuf::from("runs/base/model/tokenizer.json"));
        assert!(matches!(c.data.source().unwrap(), DataSource::Conversations { .. }));
        assert_eq!(TrainConfig::from_toml(&c.to_toml().unwrap()).unwrap(), c);
        let e = err_of(&sft.replace("val_conversations = \"v.jsonl\"", ""));
        assert!(e.contains("data.val_conversations"), "{e}");
        let e = err_of(&TINY.replace("dir = \"data/x\"", "dir = \"data/x\"\nconversations = \"c.jsonl\""));
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny.toml");
        let c = TrainConfig::from_file(&path).unwrap();
        assert_eq!(c.model.vocab_size, 1024);
    }

    #[test]
    fn negative_numbers_for_counts_are_rejected_with_the_key() {
        let e = err_of(&TINY.replace("steps = 10", "steps = -1"));
        assert!(e.contains("steps"), "{e}");
    }
}
