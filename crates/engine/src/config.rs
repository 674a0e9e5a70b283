//! Model shape, and its mapping to a Hugging Face `LlamaConfig` (`config.json`)
//! so our checkpoints load in `transformers` and theirs in ours.

use serde::{Deserialize, Serialize};

use crate::EngineError;

/// The shape of a Llama-style decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Key/value heads; fewer than `n_heads` gives grouped-query attention.
    pub n_kv_heads: usize,
    /// Hidden width of the SwiGLU MLP.
    pub ffn_hidden: usize,
    /// Longest sequence the model is trained for (RoPE tables, KV cache size).
    pub max_seq_len: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// Share the token embedding with the LM head.
    #[serde(default)]
    pub tie_embeddings: bool,
    /// `Some(n)`: a sequence classifier or reward model (Hugging Face's
    /// `LlamaForSequenceClassification`): the head is `score.weight [n, d]`
    /// in place of the LM head, and a sequence's scores are the head's output
    /// at its last token. `None`: a language model.
    #[serde(default)]
    pub num_labels: Option<usize>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_norm_eps() -> f64 {
    1e-5
}

impl ModelConfig {
    /// The benchmark's reference shape: vocab 4096, context 256, d 256, 4 layers,
    /// 4 heads, SwiGLU hidden 688 (8d/3 rounded to a multiple of 16, which matches
    /// the parameter count of a 4x GELU MLP within 1%), untied head.
    pub fn reference() -> Self {
        ModelConfig {
            vocab_size: 4096,
            d_model: 256,
            n_layers: 4,
            n_heads: 4,
            n_kv_heads: 4,
            ffn_hidden: swiglu_hidden(256),
            max_seq_len: 256,
            rope_theta: default_rope_theta(),
            norm_eps: default_norm_eps(),
            tie_embeddings: false,
            num_labels: None,
        }
    }

    /// Output rows of the head: the vocabulary for a language model, the
    /// labels for a classifier.
    pub fn head_rows(&self) -> usize {
        self.num_labels.unwrap_or(self.vocab_size)
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Width of the fused q|k|v projection output.
    pub fn qkv_dim(&self) -> usize {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim()
    }

    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |field: &str, why: String| {
            Err(EngineError::Config {
                field: field.to_string(),
                why,
            })
        };
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("ffn_hidden", self.ffn_hidden),
            ("max_seq_len", self.max_seq_len),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return bad(
                "d_model",
                format!("{} is not divisible by n_heads = {}", self.d_model, self.n_heads),
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad("n_heads", format!("head dimension {} must be even for RoPE", self.head_dim()));
        }
        if self.n_kv_heads > self.n_heads || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad("n_kv_heads", format!("{} must divide n_heads = {}", self.n_kv_heads, self.n_heads));
        }
        match self.num_labels {
            Some(0) => return bad("num_labels", "must be at least 1".into()),
            Some(_) if self.tie_embeddings => {
                return bad("num_labels", "a classifier's score head cannot be tied to the embeddings".into())
            }
            _ => {}
        }
        if self.vocab_size > u32::MAX as usize / 2 {
            return bad("vocab_size", format!("{} is too large", self.vocab_size));
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 1.0 {
            return bad("rope_theta", format!("{} must be > 1", self.rope_theta));
        }
        if self.norm_eps.is_nan() || self.norm_eps <= 0.0 || self.norm_eps >= 1.0 {
            return bad("norm_eps", format!("{} must be in (0, 1)", self.norm_eps));
        }
        Ok(())
    }

    /// Parameters that multiply activations (everything but embeddings and norms),
    /// the N of scaling-law papers. The LM head is counted when untied.
    pub fn non_embedding_params(&self) -> usize {
        let d = self.d_model;
        let per_layer = d * self.qkv_dim() + self.n_heads * self.head_dim() * d + 3 * d * self.ffn_hidden;
        self.n_layers * per_layer
    }

    /// Forward+backward matmul FLOPs of one training token at sequence length `seq`:
    /// 6 per weight in the blocks and LM head, plus attention's two products
    /// (QKᵀ and PV, 2·hd FLOPs per visible key each, forward) — 3x for training, with
    /// the causal mask counting (seq+1)/2 visible keys on average. These are model
    /// FLOPs (the MFU convention): the flash backward's recomputation of QKᵀ and the
    /// masked half of diagonal blocks are work the engine does on top.
    pub fn train_flops_per_token(&self, seq: usize) -> f64 {
        let weights = (self.non_embedding_params() + self.vocab_size * self.d_model) as f64;
        let avg_keys = (seq as f64 + 1.0) / 2.0;
        let attn_fwd = 2.0 * 2.0 * (self.n_heads * self.head_dim()) as f64 * avg_keys * self.n_layers as f64;
        6.0 * weights + 3.0 * attn_fwd
    }

    /// Matmul FLOPs the engine actually executes for one causal training step
    /// of `batch` sequences of `seq` tokens (what [`crate::matmul::flops_executed`]
    /// counts): every linear layer 2·rows·in·out forward and twice that backward;
    /// attention at block granularity — query block `[q0, q0+nq)` scores keys
    /// `[0, q0+nq)`, costing 4·hd per (query, key) pair forward (QKᵀ and PV) and
    /// 10·hd backward (QKᵀ recomputed, dV, dP, dQ, dK).
    pub fn executed_train_flops(&self, batch: usize, seq: usize) -> f64 {
        let n = (batch * seq) as f64;
        let (d, qd, f, v) = (
            self.d_model as f64,
            self.qkv_dim() as f64,
            self.ffn_hidden as f64,
            self.vocab_size as f64,
        );
        let hd_all = (self.n_heads * self.head_dim()) as f64;
        let linear_fwd = 2.0 * n * (self.n_layers as f64 * (d * qd + hd_all * d + d * 2.0 * f + f * d) + d * v);
        let bq = crate::kernels::attention::BQ;
        let pairs: usize = (0..seq).step_by(bq).map(|q0| bq.min(seq - q0) * (q0 + bq.min(seq - q0))).sum();
        let attn = (batch * self.n_heads * self.n_layers) as f64 * 14.0 * self.head_dim() as f64 * pairs as f64;
        3.0 * linear_fwd + attn
    }

    /// Forward-only matmul FLOPs per token (evaluation, prefill).
    pub fn forward_flops_per_token(&self, seq: usize) -> f64 {
        self.train_flops_per_token(seq) / 3.0
    }

    /// The Hugging Face `config.json` of this shape.
    pub fn to_hf_json(&self, bos_token_id: u32, eos_token_id: u32) -> serde_json::Value {
        let architecture = match self.num_labels {
            Some(_) => "LlamaForSequenceClassification",
            None => "LlamaForCausalLM",
        };
        let mut json = serde_json::json!({
            "architectures": [architecture],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.d_model,
            "intermediate_size": self.ffn_hidden,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim(),
            "max_position_embeddings": self.max_seq_len,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.norm_eps,
            "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": "silu",
            "attention_bias": false,
            "mlp_bias": false,
            "torch_dtype": "float32",
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
        });
        if let Some(labels) = self.num_labels {
            json["num_labels"] = labels.into();
        }
        json
    }

    /// Read a Hugging Face Llama `config.json`.
    pub fn from_hf_json(v: &serde_json::Value) -> Result<Self, EngineError> {
        let get = |k: &str| -> Result<usize, EngineError> {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| EngineError::Config {
                    field: k.to_string(),
                    why: "missing or not a non-negative integer in config.json".into(),
                })
        };
        let n_heads = get("num_attention_heads")?;
        let cfg = ModelConfig {
            vocab_size: get("vocab_size")?,
            d_model: get("hidden_size")?,
            n_layers: get("num_hidden_layers")?,
            n_heads,
            n_kv_heads: v
                .get("num_key_value_heads")
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .unwrap_or(n_heads),
            ffn_hidden: get("intermediate_size")?,
            max_seq_len: get("max_position_embeddings")?,
            rope_theta: v.get("rope_theta").and_then(|x| x.as_f64()).unwrap_or_else(default_rope_theta),
            norm_eps: v.get("rms_norm_eps").and_then(|x| x.as_f64()).unwrap_or_else(default_norm_eps),
            tie_embeddings: v.get("tie_word_embeddings").and_then(|x| x.as_bool()).unwrap_or(false),
            num_labels: sequence_classifier_labels(v)?,
        };
        // Validated before head_dim() divides by num_attention_heads (a file may say 0).
        cfg.validate()?;
        if let Some(hd) = v.get("head_dim").and_then(|x| x.as_u64()) {
            if hd as usize != cfg.head_dim() {
                return Err(EngineError::Config {
                    field: "head_dim".into(),
                    why: format!("{hd} differs from hidden_size/num_attention_heads = {}", cfg.head_dim()),
                });
            }
        }
        Ok(cfg)
    }
}

/// `Some(labels)` when `config.json` describes a sequence classifier.
/// Hugging Face writes `id2label` (and may omit `num_labels`); either names the count.
fn sequence_classifier_labels(v: &serde_json::Value) -> Result<Option<usize>, EngineError> {
    let classifier = v.get("architectures").and_then(|a| a.as_array()).is_some_and(|a| {
        a.iter()
            .any(|x| x.as_str().is_some_and(|s| s.ends_with("ForSequenceClassification")))
    });
    if !classifier {
        return Ok(None);
    }
    let count = v
        .get("num_labels")
        .and_then(|x| x.as_u64())
        .map(|x| x as usize)
        .or_else(|| v.get("id2label").and_then(|m| m.as_object()).map(|m| m.len()));
    match count {
        Some(n) => Ok(Some(n)),
        None => Err(EngineError::Config {
            field: "num_labels".into(),
            why: "a ForSequenceClassification config.json names neither num_labels nor id2label".into(),
        }),
    }
}

/// SwiGLU hidden width with the parameter count of a 4x GELU MLP (3·d·h = 8·d²),
/// rounded to the nearest multiple of 16 for SIMD-friendly rows.
pub fn swiglu_hidden(d_model: usize) -> usize {
    let exact = 8.0 * d_model as f64 / 3.0;
    (((exact / 16.0).round() as usize) * 16).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_heads_with_head_dim_is_an_error_not_a_division_by_zero() {
        // Found by fuzz/ (model_folder): head_dim was compared before validation.
        let v = serde_json::json!({"vocab_size": 8, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 0, "intermediate_size": 8, "max_position_embeddings": 16, "head_dim": 4});
        let err = ModelConfig::from_hf_json(&v).unwrap_err();
        assert!(err.to_string().contains("n_heads"), "{err}");
    }

    #[test]
    fn reference_shape_matches_the_benchmark_brief() {
        let c = ModelConfig::reference();
        c.validate().unwrap();
        assert_eq!(c.ffn_hidden, 688);
        let mlp_gelu = 2 * 256 * 1024;
        let mlp_swiglu = 3 * 256 * c.ffn_hidden;
        assert!((mlp_swiglu as f64 / mlp_gelu as f64 - 1.0).abs() < 0.01);
    }

    #[test]
    fn hf_json_round_trips() {
        let mut c = ModelConfig::reference();
        c.n_kv_heads = 2;
        c.tie_embeddings = true;
        let back = ModelConfig::from_hf_json(&c.to_hf_json(0, 1)).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn sequence_classifier_config_round_trips_and_reads_id2label() {
        let mut c = ModelConfig::reference();
        c.num_labels = Some(5);
        let json = c.to_hf_json(0, 1);
        assert_eq!(json["architectures"][0], "LlamaForSequenceClassification");
        assert_eq!(ModelConfig::from_hf_json(&json).unwrap(), c);
        assert_eq!(c.head_rows(), 5);

        let mut hf = json.clone();
        hf.as_object_mut().unwrap().remove("num_labels");
        hf["id2label"] = serde_json::json!({"0": "a", "1": "b"});
        assert_eq!(ModelConfig::from_hf_json(&hf).unwrap().num_labels, Some(2));
        hf.as_object_mut().unwrap().remove("id2label");
        let err = ModelConfig::from_hf_json(&hf).unwrap_err().to_string();
        assert!(err.contains("num_labels"), "{err}");

        c.tie_embeddings = true;
        assert!(c.validate().unwrap_err().to_string().contains("tied"));
    }

    #[test]
    fn invalid_shapes_name_the_field() {
        let mut c = ModelConfig::reference();
        c.n_kv_heads = 3;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("n_kv_heads"), "{e}");
        let mut c = ModelConfig::reference();
        c.d_model = 250;
        assert!(c.validate().unwrap_err().to_string().contains("d_model"));
    }
}
