//! All parameters live in one flat buffer, in Hugging Face Llama order and
//! names. One buffer makes AdamW, gradient clipping and checkpointing single
//! loops, and keeps `q|k|v` and `gate|up` adjacent so each pair is one matmul.

use crate::config::ModelConfig;
use crate::float::Float;
use ferrogpt_rng::Xoshiro256StarStar;

/// How a tensor is initialised and whether weight decay applies to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Embedding,
    Norm,
    /// Attention q/k/v, MLP gate/up, LM head.
    Matrix,
    /// Projections back into the residual stream (o_proj, down_proj): GPT-2's
    /// 1/sqrt(2·layers) init keeps the residual variance flat with depth.
    ResidualOut,
}

#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub kind: ParamKind,
}

impl TensorSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Offsets of one block's tensors in the flat buffer.
#[derive(Clone, Copy, Debug)]
pub struct LayerOffsets {
    pub input_norm: usize,
    /// q_proj, k_proj, v_proj stacked: `[qkv_dim, d]`.
    pub qkv: usize,
    pub o: usize,
    pub post_norm: usize,
    /// gate_proj, up_proj stacked: `[2·ffn, d]`.
    pub gate_up: usize,
    pub down: usize,
}

#[derive(Clone, Debug)]
pub struct ParamLayout {
    pub tensors: Vec<TensorSpec>,
    pub layers: Vec<LayerOffsets>,
    pub embed: usize,
    pub final_norm: usize,
    /// The output head: `lm_head.weight`, equal to `embed` when tied, or a
    /// classifier's `score.weight` (`[num_labels, d]`).
    pub lm_head: usize,
    pub total: usize,
}

impl ParamLayout {
    pub fn new(cfg: &ModelConfig) -> Self {
        let d = cfg.d_model;
        let hd = cfg.head_dim();
        let mut tensors = Vec::new();
        let mut offset = 0;
        let mut push = |name: String, shape: Vec<usize>, kind: ParamKind| {
            let at = offset;
            offset += shape.iter().product::<usize>();
            tensors.push(TensorSpec {
                name,
                shape,
                offset: at,
                kind,
            });
            at
        };
        let embed = push("model.embed_tokens.weight".into(), vec![cfg.vocab_size, d], ParamKind::Embedding);
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("model.layers.{i}.");
            let input_norm = push(format!("{p}input_layernorm.weight"), vec![d], ParamKind::Norm);
            let qkv = push(format!("{p}self_attn.q_proj.weight"), vec![cfg.n_heads * hd, d], ParamKind::Matrix);
            push(
                format!("{p}self_attn.k_proj.weight"),
                vec![cfg.n_kv_heads * hd, d],
                ParamKind::Matrix,
            );
            push(
                format!("{p}self_attn.v_proj.weight"),
                vec![cfg.n_kv_heads * hd, d],
                ParamKind::Matrix,
            );
            let o = push(
                format!("{p}self_attn.o_proj.weight"),
                vec![d, cfg.n_heads * hd],
                ParamKind::ResidualOut,
            );
            let post_norm = push(format!("{p}post_attention_layernorm.weight"), vec![d], ParamKind::Norm);
            let gate_up = push(format!("{p}mlp.gate_proj.weight"), vec![cfg.ffn_hidden, d], ParamKind::Matrix);
            push(format!("{p}mlp.up_proj.weight"), vec![cfg.ffn_hidden, d], ParamKind::Matrix);
            let down = push(format!("{p}mlp.down_proj.weight"), vec![d, cfg.ffn_hidden], ParamKind::ResidualOut);
            layers.push(LayerOffsets {
                input_norm,
                qkv,
                o,
                post_norm,
                gate_up,
                down,
            });
        }
        let final_norm = push("model.norm.weight".into(), vec![d], ParamKind::Norm);
        let lm_head = match cfg.num_labels {
            Some(labels) => push("score.weight".into(), vec![labels, d], ParamKind::Matrix),
            None if cfg.tie_embeddings => embed,
            None => push("lm_head.weight".into(), vec![cfg.vocab_size, d], ParamKind::Matrix),
        };
        ParamLayout {
            tensors,
            layers,
            embed,
            final_norm,
            lm_head,
            total: offset,
        }
    }

    pub fn find(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Deterministic init: N(0, std) for matrices and embeddings, std/sqrt(2L)
    /// for residual-out projections, ones for norms.
    pub fn init<T: Float>(&self, cfg: &ModelConfig, std: f64, seed: u64) -> Vec<T> {
        let mut rng = Xoshiro256StarStar::new(seed);
        let mut out = vec![T::ZERO; self.total];
        let resid_std = std / (2.0 * cfg.n_layers as f64).sqrt();
        for t in &self.tensors {
            let dst = &mut out[t.range()];
            match t.kind {
                ParamKind::Norm => dst.fill(T::ONE),
                ParamKind::Embedding | ParamKind::Matrix => dst.iter_mut().for_each(|v| *v = T::from_f64(rng.normal() * std)),
                ParamKind::ResidualOut => dst.iter_mut().for_each(|v| *v = T::from_f64(rng.normal() * resid_std)),
            }
        }
        out
    }
}
