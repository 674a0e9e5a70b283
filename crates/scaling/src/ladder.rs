//! The ladder: one training recipe and a list of model shapes, read from TOML.
//!
//! Every rung and target is trained with the same recipe; only the shape
//! changes, and the few hyper-parameters that must move with it follow fixed
//! rules (below), so nothing is tuned per size — the premise of predicting a
//! big run from small ones.
//!
//! ```toml
//! name = "ci"
//! [data]        # one tokenizer and one set of shards for the whole ladder
//! man_pages = true
//! synthetic = [{ generator = "arithmetic", count = 20000 }]
//! vocab_size = 512
//! tokenizer_bytes = 1048576
//! max_bytes = 8388608
//! val_fraction = 0.02
//! [recipe]
//! seq_len = 64
//! batch_size = 16
//! min_steps = 60
//! tokens_per_param = 20.0
//! warmup_frac = 0.05
//! cooldown_frac = 0.2
//! base_width = 64
//! base_lr = 0.004
//! eval_tokens = 65536
//! [[rung]]
//! name = "r1"
//! d_model = 16
//! n_layers = 1
//! n_heads = 2
//! seeds = 3
//! [[target]]
//! name = "target"
//! d_model = 96
//! n_layers = 3
//! n_heads = 4
//! [[prediction]]
//! name = "100x"
//! target = "target"
//! max_fraction = 0.01
//! ```
//!
//! Scaling rules (the muP-style part). The engine has one AdamW learning rate
//! for every tensor, so muP's per-tensor rates (hidden matrices ∝ 1/width,
//! embeddings and gains constant) are approximated by one global rate:
//! `lr = base_lr · (base_width / d_model)^lr_width_exponent`, with exponent 1
//! being muP's hidden-matrix rule. Initial weights follow fan-in scaling,
//! `init_std = base_init_std · sqrt(base_width / d_model)`. Tokens are
//! `tokens_per_param × N`, where N counts every weight a token multiplies
//! (non-embedding weights plus the LM head) because at these sizes the head is
//! a large share of the compute. The batch is the recipe's, shrunk for small
//! rungs so that every run takes at least `min_steps` optimizer steps (a run of
//! a dozen steps is all warm-up and cooldown). The schedule is the same shape
//! everywhere: warm-up as a fraction of steps, then constant and a (1−sqrt)
//! cooldown (Hägele et al. 2024), or cosine.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ferrogpt_data::CorpusSpec;
use ferrogpt_engine::config::swiglu_hidden;
use ferrogpt_engine::{AdamWConfig, ModelConfig, Schedule};
use ferrogpt_train::config::{CheckpointConfig, DataConfig, EvalConfig, Hyper};
use ferrogpt_train::TrainConfig;
use serde::{Deserialize, Serialize};

use crate::ScalingError;

/// The ladders shipped in `ladders/`, by preset name.
pub const PRESETS: &[(&str, &str)] = &[
    ("ci", include_str!("../../../ladders/ci.toml")),
    ("full", include_str!("../../../ladders/full.toml")),
];

/// The TOML text of a shipped ladder.
pub fn preset_text(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|p| p.0 == name).map(|p| p.1)
}

/// A whole ladder file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ladder {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The corpus, tokenizer and split shared by every run (`[data]`).
    pub data: CorpusSpec,
    pub recipe: Recipe,
    /// The small models the laws are fitted on.
    #[serde(rename = "rung")]
    pub rungs: Vec<Shape>,
    /// Held-out models: trained only after their predictions are registered.
    #[serde(rename = "target", default)]
    pub targets: Vec<Shape>,
    /// Predictions `scale run` registers and then verifies.
    #[serde(rename = "prediction", default)]
    pub predictions: Vec<PredictionSpec>,
    /// Pass-rate and probe measurements after each run (absent: loss only).
    #[serde(default)]
    pub capability: Option<CapabilitySpec>,
}

/// Schedule shape, the same at every size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Warm-up, constant, (1−sqrt) cooldown over `cooldown_frac` of the steps.
    Wsd,
    /// Warm-up, cosine to `min_lr_ratio` of the peak.
    Cosine,
}

/// The training recipe and its scaling rules (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub seq_len: usize,
    /// Sequences per step for rungs big enough to keep `min_steps` steps.
    pub batch_size: usize,
    #[serde(default = "default_min_steps")]
    pub min_steps: u64,
    pub tokens_per_param: f64,
    #[serde(default = "default_schedule")]
    pub schedule: ScheduleKind,
    pub warmup_frac: f64,
    /// WSD only: fraction of steps in the cooldown.
    #[serde(default = "default_cooldown")]
    pub cooldown_frac: f64,
    /// Cosine only: final learning rate as a fraction of the peak.
    #[serde(default = "default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    /// Width at which `base_lr` and `base_init_std` were tuned.
    pub base_width: usize,
    pub base_lr: f64,
    #[serde(default = "default_init_std")]
    pub base_init_std: f64,
    #[serde(default = "one_f64")]
    pub lr_width_exponent: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    #[serde(default = "one_f64")]
    pub clip_norm: f64,
    /// Validation tokens every run is scored on (the same first tokens of the val split).
    pub eval_tokens: usize,
    /// Runs with at least this many steps write checkpoints (so an interrupted
    /// big run resumes); smaller ones simply restart.
    #[serde(default = "default_checkpoint_min_steps")]
    pub checkpoint_min_steps: u64,
}

/// A model shape on the ladder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    pub name: String,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Independent seeds (averaged); use several where noise is largest.
    #[serde(default = "one_usize")]
    pub seeds: usize,
    /// Off-recipe data budget: such rungs feed only the Chinchilla L(N, D)
    /// view, never the compute law, whose points must follow the recipe.
    #[serde(default)]
    pub tokens_per_param: Option<f64>,
}

/// A prediction to register before its target is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionSpec {
    pub name: String,
    pub target: String,
    /// Largest fit point allowed, as a fraction of the target's compute.
    pub max_fraction: f64,
    /// Same for the capability fit (the GPT-4 report used 1/1000).
    #[serde(default = "default_capability_fraction")]
    pub capability_max_fraction: f64,
}

/// Held-out coding tasks and the hindsight-neglect probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitySpec {
    /// Held-out tasks of the general tier (every family).
    pub tasks: usize,
    /// Held-out tasks of the easy tier measured before the general ones
    /// ([`ferrogpt_data::code_task::tiered_heldout_tasks`]): what the smallest rungs can solve.
    #[serde(default)]
    pub easy_tasks: usize,
    pub samples: usize,
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    #[serde(default = "default_buckets")]
    pub buckets: usize,
    #[serde(default)]
    pub probe_items: usize,
    #[serde(default)]
    pub seed: u64,
}

fn one_f64() -> f64 {
    1.0
}
fn one_usize() -> usize {
    1
}
fn default_min_steps() -> u64 {
    50
}
fn default_schedule() -> ScheduleKind {
    ScheduleKind::Wsd
}
fn default_cooldown() -> f64 {
    0.2
}
fn default_min_lr_ratio() -> f64 {
    0.1
}
fn default_init_std() -> f64 {
    0.02
}
fn default_beta2() -> f64 {
    0.95
}
fn default_wd() -> f64 {
    0.1
}
fn default_checkpoint_min_steps() -> u64 {
    5000
}
fn default_capability_fraction() -> f64 {
    1e-3
}
fn default_temperature() -> f32 {
    1.0
}
fn default_buckets() -> usize {
    3
}

/// Everything one run of a shape uses, derived from the recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub name: String,
    pub model: ModelConfig,
    pub seeds: usize,
    /// Weights a token multiplies: non-embedding plus the LM head (the N of the token budget).
    pub matmul_params: usize,
    pub non_embedding_params: usize,
    pub tokens_per_param: f64,
    /// Whether the rung follows the recipe's data budget (a compute-law point).
    pub on_recipe: bool,
    pub batch_size: usize,
    pub steps: u64,
    /// `steps × batch × seq_len`.
    pub tokens: u64,
    pub lr: f64,
    pub init_std: f64,
    /// Model FLOPs of one run: every matmul (blocks, attention, LM head), forward and backward.
    pub train_flops: f64,
    /// FLOPs the engine executes (adds flash-attention recomputation and block granularity).
    pub executed_flops: f64,
}

fn bad(path: &Path, key: impl Into<String>, why: impl Into<String>) -> ScalingError {
    ScalingError::Ladder {
        path: path.to_path_buf(),
        key: key.into(),
        why: why.into(),
    }
}

impl Ladder {
    /// Reads and validates a ladder file; also returns its exact bytes (hashed into predictions).
    pub fn from_file(path: &Path) -> Result<(Ladder, String), ScalingError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScalingError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let ladder = Ladder::from_toml(&text, path)?;
        Ok((ladder, text))
    }

    /// Parses and validates TOML; `path` only labels errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Ladder, ScalingError> {
        // toml's message names the unknown or missing key and its line.
        let ladder: Ladder = toml::from_str(text).map_err(|e| bad(path, "toml", e.to_string().trim_end().to_string()))?;
        ladder.validate(path)?;
        Ok(ladder)
    }

    /// Range and consistency checks the types cannot express; errors name the key.
    pub fn validate(&self, path: &Path) -> Result<(), ScalingError> {
        let d = &self.data;
        if d.vocab_size < 260 {
            return Err(bad(
                path,
                "data.vocab_size",
                format!("{} must be at least 260 (256 bytes + specials)", d.vocab_size),
            ));
        }
        for (key, v) in [("data.tokenizer_bytes", d.tokenizer_bytes), ("data.max_bytes", d.max_bytes)] {
            if v == 0 {
                return Err(bad(path, key, "must be at least 1"));
            }
        }
        if !(d.val_fraction > 0.0 && d.val_fraction < 0.5) {
            return Err(bad(path, "data.val_fraction", format!("{} must be in (0, 0.5)", d.val_fraction)));
        }
        if !d.man_pages && d.synthetic.is_empty() {
            return Err(bad(
                path,
                "data.synthetic",
                "no sources: enable man_pages or list a synthetic generator",
            ));
        }
        for (i, s) in d.synthetic.iter().enumerate() {
            if ferrogpt_data::synthetic::generator(&s.generator).is_none() {
                return Err(bad(
                    path,
                    format!("data.synthetic[{i}].generator"),
                    format!(
                        "unknown generator `{}` (known: {})",
                        s.generator,
                        ferrogpt_data::synthetic::generator_names().join(", ")
                    ),
                ));
            }
            if s.count == 0 {
                return Err(bad(path, format!("data.synthetic[{i}].count"), "must be at least 1"));
            }
        }
        let r = &self.recipe;
        for (key, v) in [
            ("recipe.seq_len", r.seq_len),
            ("recipe.batch_size", r.batch_size),
            ("recipe.base_width", r.base_width),
            ("recipe.eval_tokens", r.eval_tokens),
        ] {
            if v == 0 {
                return Err(bad(path, key, "must be at least 1"));
            }
        }
        if r.min_steps == 0 {
            return Err(bad(path, "recipe.min_steps", "must be at least 1"));
        }
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(bad(path, key, format!("{v} must be finite and > 0")))
            }
        };
        positive("recipe.tokens_per_param", r.tokens_per_param)?;
        positive("recipe.base_lr", r.base_lr)?;
        positive("recipe.base_init_std", r.base_init_std)?;
        if !(r.lr_width_exponent.is_finite() && (0.0..=2.0).contains(&r.lr_width_exponent)) {
            return Err(bad(
                path,
                "recipe.lr_width_exponent",
                format!("{} must be in [0, 2]", r.lr_width_exponent),
            ));
        }
        for (key, v) in [
            ("recipe.warmup_frac", r.warmup_frac),
            ("recipe.cooldown_frac", r.cooldown_frac),
            ("recipe.min_lr_ratio", r.min_lr_ratio),
            ("recipe.beta2", r.beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(bad(path, key, format!("{v} must be in [0, 1)")));
            }
        }
        if r.warmup_frac + if r.schedule == ScheduleKind::Wsd { r.cooldown_frac } else { 0.0 } > 1.0 {
            return Err(bad(path, "recipe.cooldown_frac", "warm-up and cooldown together exceed the run"));
        }
        if !(r.weight_decay.is_finite() && (0.0..1.0).contains(&r.weight_decay)) {
            return Err(bad(path, "recipe.weight_decay", format!("{} must be in [0, 1)", r.weight_decay)));
        }
        if !(r.clip_norm.is_finite() && r.clip_norm >= 0.0) {
            return Err(bad(path, "recipe.clip_norm", format!("{} must be >= 0", r.clip_norm)));
        }
        if self.rungs.len() < 3 {
            return Err(bad(
                path,
                "rung",
                format!("{} rungs: a three-parameter law needs at least 3", self.rungs.len()),
            ));
        }
        let mut names = HashSet::new();
        for (kind, shapes) in [("rung", &self.rungs), ("target", &self.targets)] {
            for (i, s) in shapes.iter().enumerate() {
                let key = |field: &str| format!("{kind}[{i}].{field}");
                if s.name.is_empty() || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    return Err(bad(
                        path,
                        key("name"),
                        format!("`{}` must be non-empty [A-Za-z0-9_-] (it names a folder)", s.name),
                    ));
                }
                if !names.insert(s.name.as_str()) {
                    return Err(bad(path, key("name"), format!("`{}` is used twice", s.name)));
                }
                if s.seeds == 0 {
                    return Err(bad(path, key("seeds"), "must be at least 1"));
                }
                if let Some(t) = s.tokens_per_param {
                    if kind == "target" {
                        return Err(bad(path, key("tokens_per_param"), "targets follow the recipe's budget"));
                    }
                    positive(&key("tokens_per_param"), t)?;
                }
                self.model_of(s).validate().map_err(|e| match e {
                    ferrogpt_engine::EngineError::Config { field, why } => bad(path, key(&field), why),
                    other => bad(path, key("shape"), other.to_string()),
                })?;
            }
        }
        let on_recipe = self.rungs.iter().filter(|s| s.tokens_per_param.is_none()).count();
        if on_recipe < 3 {
            return Err(bad(
                path,
                "rung",
                format!("{on_recipe} rungs follow the recipe's tokens_per_param; the compute law needs 3"),
            ));
        }
        let mut pred_names = HashSet::new();
        for (i, p) in self.predictions.iter().enumerate() {
            let key = |field: &str| format!("prediction[{i}].{field}");
            if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(bad(path, key("name"), format!("`{}` must be non-empty [A-Za-z0-9_-]", p.name)));
            }
            if !pred_names.insert(p.name.as_str()) {
                return Err(bad(path, key("name"), format!("`{}` is used twice", p.name)));
            }
            if !self.targets.iter().any(|t| t.name == p.target) {
                return Err(bad(
                    path,
                    key("target"),
                    format!("`{}` is not a [[target]] of this ladder", p.target),
                ));
            }
            for (field, v) in [
                ("max_fraction", p.max_fraction),
                ("capability_max_fraction", p.capability_max_fraction),
            ] {
                if !(v > 0.0 && v < 1.0) {
                    return Err(bad(path, key(field), format!("{v} must be in (0, 1)")));
                }
            }
        }
        if let Some(c) = &self.capability {
            for (key, v) in [
                ("capability.tasks", c.tasks),
                ("capability.samples", c.samples),
                ("capability.buckets", c.buckets),
            ] {
                if v == 0 {
                    return Err(bad(path, key, "must be at least 1"));
                }
            }
            if !(c.temperature.is_finite() && c.temperature > 0.0) {
                return Err(bad(path, "capability.temperature", format!("{} must be > 0", c.temperature)));
            }
        }
        Ok(())
    }

    pub fn model_of(&self, s: &Shape) -> ModelConfig {
        ModelConfig {
            vocab_size: self.data.vocab_size,
            d_model: s.d_model,
            n_layers: s.n_layers,
            n_heads: s.n_heads,
            n_kv_heads: s.n_heads,
            ffn_hidden: swiglu_hidden(s.d_model),
            max_seq_len: self.recipe.seq_len,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
            tie_embeddings: false,
            num_labels: None,
        }
    }

    /// Applies the recipe's scaling rules to a shape.
    pub fn plan(&self, s: &Shape) -> RunPlan {
        let r = &self.recipe;
        let model = self.model_of(s);
        let non_embedding_params = model.non_embedding_params();
        let matmul_params = non_embedding_params + model.vocab_size * model.d_model;
        let tokens_per_param = s.tokens_per_param.unwrap_or(r.tokens_per_param);
        let wanted = (tokens_per_param * matmul_params as f64).ceil().max(1.0) as u64;
        let seq = r.seq_len as u64;
        // Largest batch (up to the recipe's) that still leaves `min_steps` steps.
        let batch = (wanted / (seq * r.min_steps)).clamp(1, r.batch_size as u64);
        let steps = wanted.div_ceil(batch * seq).max(1);
        let tokens = steps * batch * seq;
        let width_ratio = r.base_width as f64 / s.d_model as f64;
        RunPlan {
            name: s.name.clone(),
            seeds: s.seeds,
            matmul_params,
            non_embedding_params,
            tokens_per_param,
            on_recipe: s.tokens_per_param.is_none(),
            batch_size: batch as usize,
            steps,
            tokens,
            lr: r.base_lr * width_ratio.powf(r.lr_width_exponent),
            init_std: r.base_init_std * width_ratio.sqrt(),
            train_flops: model.train_flops_per_token(r.seq_len) * tokens as f64,
            executed_flops: model.executed_train_flops(batch as usize, r.seq_len) * steps as f64,
            model,
        }
    }

    pub fn rung(&self, name: &str) -> Option<&Shape> {
        self.rungs.iter().find(|s| s.name == name)
    }

    pub fn target(&self, name: &str) -> Option<&Shape> {
        self.targets.iter().find(|s| s.name == name)
    }

    /// The exact training config of one seed of a planned run.
    pub fn train_config(&self, plan: &RunPlan, seed: u64, out_dir: PathBuf, data_dir: &Path, tokenizer: &Path) -> TrainConfig {
        let r = &self.recipe;
        let schedule = match r.schedule {
            ScheduleKind::Wsd => Schedule::Wsd {
                warmup_frac: r.warmup_frac,
                cooldown_frac: r.cooldown_frac,
            },
            ScheduleKind::Cosine => Schedule::Cosine {
                warmup_frac: r.warmup_frac,
                min_lr_ratio: r.min_lr_ratio,
            },
        };
        let checkpoint_every = if plan.steps >= r.checkpoint_min_steps { plan.steps / 8 } else { 0 };
        TrainConfig {
            out_dir,
            model: plan.model.clone(),
            data: DataConfig::shards(data_dir, tokenizer),
            train: Hyper {
                seq_len: r.seq_len,
                batch_size: plan.batch_size,
                grad_accum: 1,
                steps: plan.steps,
                lr: plan.lr,
                init_std: plan.init_std,
                clip_norm: r.clip_norm,
                seed,
                init_from: None,
            },
            schedule,
            optimizer: AdamWConfig {
                beta2: r.beta2,
                weight_decay: r.weight_decay,
                ..AdamWConfig::default()
            },
            // Only the final evaluation: the fit uses final losses, never partial curves.
            eval: EvalConfig {
                every: 0,
                tokens: r.eval_tokens,
            },
            checkpoint: CheckpointConfig {
                every: checkpoint_every,
                keep: 1,
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const TINY: &str = r#"
name = "tiny"
[data]
man_pages = false
synthetic = [{ generator = "arithmetic", count = 100 }]
vocab_size = 300
tokenizer_bytes = 10000
max_bytes = 20000
val_fraction = 0.1
[recipe]
seq_len = 32
batch_size = 4
min_steps = 10
tokens_per_param = 2.0
warmup_frac = 0.1
base_width = 16
base_lr = 0.004
eval_tokens = 256
[[rung]]
name = "a"
d_model = 8
n_layers = 1
n_heads = 2
seeds = 2
[[rung]]
name = "b"
d_model = 16
n_layers = 1
n_heads = 2
[[rung]]
name = "c"
d_model = 32
n_layers = 1
n_heads = 2
[[target]]
name = "t"
d_model = 64
n_layers = 2
n_heads = 4
[[prediction]]
name = "p"
target = "t"
max_fraction = 0.5
"#;

    fn parse(text: &str) -> Result<Ladder, ScalingError> {
        Ladder::from_toml(text, Path::new("ladder.toml"))
    }

    #[test]
    fn the_tiny_ladder_parses_and_plans() {
        let l = parse(TINY).unwrap();
        let plans: Vec<RunPlan> = l.rungs.iter().map(|s| l.plan(s)).collect();
        for w in plans.windows(2) {
            assert!(w[1].train_flops > w[0].train_flops, "rungs grow in compute");
        }
        for p in &plans {
            assert!(p.steps >= l.recipe.min_steps || p.batch_size == 1, "{p:?}");
            assert!(p.tokens as f64 >= p.tokens_per_param * p.matmul_params as f64);
            let cfg = l.train_config(p, 0, "o".into(), Path::new("d"), Path::new("t.json"));
            cfg.validate().unwrap();
        }
        // Width 8 is half the base width: lr doubles (exponent 1), init grows by sqrt(2).
        assert!((plans[0].lr - 0.008).abs() < 1e-12);
        assert!((plans[0].init_std - 0.02 * 2f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn planned_flops_are_the_engines_formula() {
        let l = parse(TINY).unwrap();
        let p = l.plan(&l.targets[0]);
        let per_token = p.model.train_flops_per_token(32);
        assert_eq!(p.train_flops, per_token * p.tokens as f64);
        assert_eq!(p.executed_flops, p.model.executed_train_flops(p.batch_size, 32) * p.steps as f64);
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(&TINY.replace("base_lr = 0.004", "base_lr = 0.004\nbase_lrr = 1.0"));
        assert!(e.contains("base_lrr"), "{e}");
        let e = err(&TINY.replace("seeds = 2", "seeds = 2\nwidth = 3"));
        assert!(e.contains("width"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (from, to, key) in [
            ("base_lr = 0.004", "base_lr = -1.0", "recipe.base_lr"),
            ("val_fraction = 0.1", "val_fraction = 0.9", "data.val_fraction"),
            ("d_model = 16\n", "d_model = 15\n", "rung[1].d_model"),
            ("seeds = 2", "seeds = 0", "rung[0].seeds"),
            ("target = \"t\"", "target = \"nope\"", "prediction[0].target"),
            ("max_fraction = 0.5", "max_fraction = 2.0", "prediction[0].max_fraction"),
            (
                "generator = \"arithmetic\"",
                "generator = \"poetry\"",
                "data.synthetic[0].generator",
            ),
            ("name = \"b\"", "name = \"a\"", "rung[1].name"),
        ] {
            assert!(TINY.contains(from), "{from}");
            let e = err(&TINY.replacen(from, to, 1));
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn the_presets_extrapolate_as_promised() {
        for (name, text) in PRESETS {
            let l = Ladder::from_toml(text, Path::new(name)).unwrap();
            for p in &l.predictions {
                let target = l.plan(l.target(&p.target).unwrap()).train_flops;
                let fit: Vec<f64> = l
                    .rungs
                    .iter()
                    .map(|s| l.plan(s))
                    .filter(|r| r.on_recipe && r.train_flops <= p.max_fraction * target)
                    .map(|r| r.train_flops)
                    .collect();
                assert!(fit.len() >= 3, "{name}/{}: {} fit rungs", p.name, fit.len());
                let reach = target / fit.iter().cloned().fold(0.0, f64::max);
                assert!(reach >= 1.0 / p.max_fraction, "{name}/{}: {reach}x", p.name);
                assert!(reach >= 100.0, "{name}/{}: {reach}x", p.name);
            }
        }
    }

    #[test]
    fn a_missing_key_is_named() {
        let e = err(&TINY.replace("eval_tokens = 256\n", ""));
        assert!(e.contains("eval_tokens"), "{e}");
    }
}
