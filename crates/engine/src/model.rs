//! The Llama-style decoder's training forward and backward passes.
//!
//! ```text
//! x₀ = embed(tokens)  or  the caller's embeddings
//! for each block:  a = x + Wo·attn(rope(Wqkv·rms(x)))      (mask is a parameter)
//!                  x = a + Wdown·(silu(Wgate·rms(a)) ∘ Wup·rms(a))
//! logits = Wlm·rms(x)
//! ```
//! Activations live in an [`Activations`] value sized once for a (batch,
//! sequence) shape and reused every step; the backward pass walks the same
//! buffers in reverse.

use crate::config::ModelConfig;
use crate::float::Float;
use crate::kernels::attention::{attention_backward, attention_forward, AttnShape};
use crate::kernels::embedding::{embed_backward, embed_forward};
use crate::kernels::norm::{rmsnorm_backward, rmsnorm_forward};
use crate::kernels::rope::RopeTable;
use crate::kernels::swiglu::{swiglu_backward, swiglu_forward};
use crate::kernels::xent::{self, IGNORE};
use crate::kernels::ROW_CHUNK;
use crate::mask::AttnMask;
use crate::matmul::{linear_backward_input, linear_backward_weight, linear_forward};
use crate::params::ParamLayout;
use crate::EngineError;
use rayon::prelude::*;

/// What enters the first block: token ids, or embeddings the caller built
/// (e.g. text embeddings with image-patch embeddings spliced in).
#[derive(Clone, Copy, Debug)]
pub enum Input<'a, T> {
    Tokens(&'a [u32]),
    /// `batch·seq·d_model` values.
    Embeddings(&'a [T]),
}

pub struct Model<T: Float> {
    pub cfg: ModelConfig,
    pub layout: ParamLayout,
    pub params: Vec<T>,
    /// Same layout as `params`; empty until [`Model::enable_grads`].
    pub grads: Vec<T>,
    pub(crate) rope: RopeTable<T>,
    /// The weights packed for inference (then `params` is empty); see [`Model::quantize`].
    pub(crate) packed: Option<Box<crate::packed::PackedWeights<T>>>,
}

impl<T: Float> Model<T> {
    /// A freshly initialised model (see [`ParamLayout::init`]).
    pub fn new(cfg: ModelConfig, init_std: f64, seed: u64) -> Result<Self, EngineError> {
        cfg.validate()?;
        let layout = ParamLayout::new(&cfg);
        let params = layout.init(&cfg, init_std, seed);
        Self::from_params(cfg, params)
    }

    pub fn from_params(cfg: ModelConfig, params: Vec<T>) -> Result<Self, EngineError> {
        cfg.validate()?;
        let total = ParamLayout::new(&cfg).total;
        if params.len() != total {
            return Err(EngineError::Shape(format!(
                "{} parameters given, the config needs {total}",
                params.len(),
            )));
        }
        Self::from_parts(cfg, params)
    }

    /// A model over `params` (the full layout, or nothing for a packed model),
    /// with no packed weights yet.
    pub(crate) fn from_parts(cfg: ModelConfig, params: Vec<T>) -> Result<Self, EngineError> {
        cfg.validate()?;
        let layout = ParamLayout::new(&cfg);
        let rope = RopeTable::new(cfg.head_dim(), cfg.max_seq_len, cfg.rope_theta);
        Ok(Model {
            cfg,
            layout,
            params: crate::huge::copy_to_huge_pages(params),
            grads: Vec::new(),
            rope,
            packed: None,
        })
    }

    /// A sequence classifier (`num_labels` outputs: a reward model with 1, a
    /// safety classifier with one per class) that starts from a language
    /// model: its embeddings, blocks and final norm are copied by name, the
    /// LM head is dropped and `score.weight` is drawn from N(0, `init_std`).
    pub fn classifier_from(lm: &Model<T>, num_labels: usize, init_std: f64, seed: u64) -> Result<Self, EngineError> {
        lm.check_unpacked()?;
        let mut cfg = lm.cfg.clone();
        cfg.num_labels = Some(num_labels);
        cfg.tie_embeddings = false;
        let layout = ParamLayout::new(&cfg);
        let mut params: Vec<T> = layout.init(&cfg, init_std, seed);
        for spec in &layout.tensors {
            if spec.offset == layout.lm_head {
                continue;
            }
            let source = lm.layout.find(&spec.name).ok_or_else(|| {
                EngineError::Shape(format!(
                    "the language model has no tensor {} to start the classifier from",
                    spec.name
                ))
            })?;
            params[spec.range()].copy_from_slice(&lm.params[source.range()]);
        }
        Self::from_parts(cfg, params)
    }

    pub fn num_params(&self) -> usize {
        self.layout.total
    }

    pub fn enable_grads(&mut self) {
        if self.grads.len() != self.params.len() {
            self.grads = vec![T::ZERO; self.params.len()];
        }
    }

    pub fn zero_grad(&mut self) {
        self.grads.par_chunks_mut(1 << 16).for_each(|c| c.fill(T::ZERO));
    }

    fn attn_shape(&self, batch: usize, seq: usize) -> AttnShape {
        AttnShape {
            batch,
            seq,
            n_heads: self.cfg.n_heads,
            n_kv_heads: self.cfg.n_kv_heads,
            head_dim: self.cfg.head_dim(),
        }
    }

    /// Training and the full-sequence forward read the f32 parameter buffer,
    /// which packing drops.
    fn check_unpacked(&self) -> Result<(), EngineError> {
        match &self.packed {
            Some(_) => Err(EngineError::Unsupported(format!(
                "the full-sequence forward and training on weights packed as {} (they need f32 weights; \
                 inference goes through forward_cached)",
                self.weight_dtype()
            ))),
            None => Ok(()),
        }
    }

    fn check(&self, acts: &Activations<T>, input: &Input<T>, mask: &AttnMask) -> Result<(), EngineError> {
        self.check_unpacked()?;
        let n = acts.batch * acts.seq;
        if acts.cfg != self.cfg {
            return Err(EngineError::Shape("activations were sized for another model config".into()));
        }
        match input {
            Input::Tokens(t) if t.len() != n => {
                return Err(EngineError::Shape(format!(
                    "{} tokens for a batch of {}x{}",
                    t.len(),
                    acts.batch,
                    acts.seq
                )))
            }
            Input::Embeddings(e) if e.len() != n * self.cfg.d_model => {
                return Err(EngineError::Shape(format!(
                    "{} embedding values for {n} positions x d_model {}",
                    e.len(),
                    self.cfg.d_model
                )))
            }
            _ => {}
        }
        mask.check_batch(acts.batch, acts.seq)
    }

    /// Forward to logits (kept in `acts.logits`).
    pub fn forward_logits(&self, acts: &mut Activations<T>, input: Input<T>, mask: &AttnMask) -> Result<(), EngineError> {
        self.check(acts, &input, mask)?;
        let cfg = &self.cfg;
        let (bsz, t, d) = (acts.batch, acts.seq, cfg.d_model);
        let n = bsz * t;
        let (qd, f, hd_all) = (cfg.qkv_dim(), cfg.ffn_hidden, cfg.n_heads * cfg.head_dim());
        let eps = T::from_f64(cfg.norm_eps);
        let p = &self.params;
        let a = acts;
        match input {
            Input::Tokens(tokens) => {
                embed_forward(
                    &mut a.resid[..n * d],
                    &p[self.layout.embed..self.layout.embed + cfg.vocab_size * d],
                    tokens,
                    d,
                )?;
                a.tokens.clear();
                a.tokens.extend_from_slice(tokens);
            }
            Input::Embeddings(e) => {
                a.resid[..n * d].copy_from_slice(e);
                a.tokens.clear();
            }
        }
        let shape = self.attn_shape(bsz, t);
        for (l, lo) in self.layout.layers.iter().enumerate() {
            let (prev, next) = a.resid.split_at_mut((l + 1) * n * d);
            let x = &prev[l * n * d..];
            let x_next = &mut next[..n * d];
            let xn1 = &mut a.xn1[l * n * d..(l + 1) * n * d];
            let qkv = &mut a.qkv[l * n * qd..(l + 1) * n * qd];
            let o = &mut a.o[l * n * hd_all..(l + 1) * n * hd_all];
            let x_mid = &mut a.x_mid[l * n * d..(l + 1) * n * d];
            let xn2 = &mut a.xn2[l * n * d..(l + 1) * n * d];
            let gu = &mut a.gu[l * n * 2 * f..(l + 1) * n * 2 * f];
            let h = &mut a.h[l * n * f..(l + 1) * n * f];
            rmsnorm_forward(xn1, &mut a.r1[l * n..(l + 1) * n], x, &p[lo.input_norm..lo.input_norm + d], d, eps);
            linear_forward(qkv, xn1, &p[lo.qkv..lo.qkv + qd * d], n, d, qd, false);
            self.rope_rows(qkv, t, false);
            attention_forward(o, &mut a.lse[l * bsz * cfg.n_heads * t..], &mut a.attn_scratch, qkv, shape, mask);
            x_mid.copy_from_slice(x);
            linear_forward(x_mid, o, &p[lo.o..lo.o + d * hd_all], n, hd_all, d, true);
            rmsnorm_forward(
                xn2,
                &mut a.r2[l * n..(l + 1) * n],
                x_mid,
                &p[lo.post_norm..lo.post_norm + d],
                d,
                eps,
            );
            linear_forward(gu, xn2, &p[lo.gate_up..lo.gate_up + 2 * f * d], n, d, 2 * f, false);
            swiglu_forward(h, gu, f);
            x_next.copy_from_slice(x_mid);
            linear_forward(x_next, h, &p[lo.down..lo.down + d * f], n, f, d, true);
        }
        let last = &a.resid[cfg.n_layers * n * d..(cfg.n_layers + 1) * n * d];
        let fnorm = self.layout.final_norm;
        rmsnorm_forward(&mut a.xf, &mut a.rf, last, &p[fnorm..fnorm + d], d, eps);
        let head = self.layout.lm_head;
        linear_forward(
            &mut a.logits,
            &a.xf,
            &p[head..head + cfg.head_rows() * d],
            n,
            d,
            cfg.head_rows(),
            false,
        );
        Ok(())
    }

    /// Rotates the q and k heads of every row of the fused qkv activations;
    /// row `r` is at position `r mod seq`.
    fn rope_rows(&self, qkv: &mut [T], seq: usize, inverse: bool) {
        let qk = (self.cfg.n_heads + self.cfg.n_kv_heads) * self.cfg.head_dim();
        self.rope.rotate_rows(qkv, self.cfg.qkv_dim(), qk, seq, inverse);
    }

    /// Mean cross-entropy (nats) over positions whose target is not [`IGNORE`];
    /// per-position losses stay in `acts.row_loss` (for bits per byte).
    pub fn forward_loss(&self, acts: &mut Activations<T>, input: Input<T>, targets: &[u32], mask: &AttnMask) -> Result<f64, EngineError> {
        self.check_targets(acts, targets)?;
        self.forward_logits(acts, input, mask)?;
        xent::xent_forward(&mut acts.row_loss, &acts.logits, targets, self.cfg.head_rows());
        Ok(mean_loss(&acts.row_loss, targets))
    }

    fn check_targets(&self, acts: &Activations<T>, targets: &[u32]) -> Result<(), EngineError> {
        if targets.len() != acts.batch * acts.seq {
            return Err(EngineError::Shape(format!(
                "{} targets for a batch of {}x{}",
                targets.len(),
                acts.batch,
                acts.seq
            )));
        }
        if let Some(&bad) = targets.iter().find(|&&t| t != IGNORE && t as usize >= self.cfg.head_rows()) {
            return Err(EngineError::Shape(format!(
                "target id {bad} is outside the head's {} outputs",
                self.cfg.head_rows()
            )));
        }
        Ok(())
    }

    /// Forward, loss, and backward: adds `grad_scale · ∂(mean loss)/∂θ` into
    /// `grads` (accumulating across calls; see [`Model::zero_grad`]). Returns
    /// the mean loss. With embedding input, `acts.d_input` receives its gradient.
    pub fn forward_backward(
        &mut self,
        acts: &mut Activations<T>,
        input: Input<T>,
        targets: &[u32],
        mask: &AttnMask,
        grad_scale: f64,
    ) -> Result<f64, EngineError> {
        self.check_unpacked()?;
        self.enable_grads();
        self.check_targets(acts, targets)?;
        self.forward_logits(acts, input, mask)?;
        let valid = targets.iter().filter(|&&t| t != IGNORE).count().max(1);
        let scale = T::from_f64(grad_scale / valid as f64);
        xent::xent_backward_inplace(&mut acts.row_loss, &mut acts.logits, targets, self.cfg.head_rows(), scale);
        let loss = mean_loss(&acts.row_loss, targets);
        self.backward(acts, mask);
        Ok(loss)
    }

    /// Backward for a loss computed above the engine (a reward model's
    /// pairwise loss, a classifier's, an RL policy loss): the caller ran
    /// [`Model::forward_logits`] and overwrote `acts.logits` with
    /// dLoss/dlogits; the parameter gradients are added into the model's
    /// gradient buffer (see [`Model::zero_grad`]).
    pub fn backward_from_logits(&mut self, acts: &mut Activations<T>, mask: &AttnMask) -> Result<(), EngineError> {
        self.check_unpacked()?;
        mask.check_batch(acts.batch, acts.seq)?;
        if acts.cfg != self.cfg {
            return Err(EngineError::Shape("activations were sized for another model config".into()));
        }
        self.enable_grads();
        self.backward(acts, mask);
        Ok(())
    }

    /// Backward from `acts.logits`, which must already hold dLoss/dlogits.
    fn backward(&mut self, a: &mut Activations<T>, mask: &AttnMask) {
        let cfg = self.cfg.clone();
        let (bsz, t, d) = (a.batch, a.seq, cfg.d_model);
        let n = bsz * t;
        let (qd, f, hd_all, v) = (cfg.qkv_dim(), cfg.ffn_hidden, cfg.n_heads * cfg.head_dim(), cfg.vocab_size);
        let head_rows = cfg.head_rows();
        let qk = (cfg.n_heads + cfg.n_kv_heads) * cfg.head_dim();
        let shape = self.attn_shape(bsz, t);
        let layout = &self.layout;
        let p = &self.params;
        let g = &mut self.grads;

        let head = layout.lm_head;
        linear_backward_input(&mut a.dxn, &a.logits, &p[head..head + head_rows * d], n, d, head_rows, false);
        linear_backward_weight(&mut g[head..head + head_rows * d], &a.logits, &a.xf, n, d, head_rows);
        a.dresid.par_chunks_mut(1 << 14).for_each(|c| c.fill(T::ZERO));
        let fnorm = layout.final_norm;
        let last = &a.resid[cfg.n_layers * n * d..(cfg.n_layers + 1) * n * d];
        rmsnorm_backward(
            &mut a.dresid,
            &mut g[fnorm..fnorm + d],
            &mut a.norm_partial,
            &a.dxn,
            last,
            &a.rf,
            &p[fnorm..fnorm + d],
            d,
        );

        for (l, lo) in layout.layers.iter().enumerate().rev() {
            let x = &a.resid[l * n * d..(l + 1) * n * d];
            let xn1 = &a.xn1[l * n * d..(l + 1) * n * d];
            let qkv = &a.qkv[l * n * qd..(l + 1) * n * qd];
            let o = &a.o[l * n * hd_all..(l + 1) * n * hd_all];
            let x_mid = &a.x_mid[l * n * d..(l + 1) * n * d];
            let xn2 = &a.xn2[l * n * d..(l + 1) * n * d];
            let gu = &a.gu[l * n * 2 * f..(l + 1) * n * 2 * f];
            let h = &a.h[l * n * f..(l + 1) * n * f];

            // MLP: dresid holds ∂L/∂x_{l+1}.
            linear_backward_input(&mut a.dh, &a.dresid, &p[lo.down..lo.down + d * f], n, f, d, false);
            linear_backward_weight(&mut g[lo.down..lo.down + d * f], &a.dresid, h, n, f, d);
            swiglu_backward(&mut a.dgu, &a.dh, gu, f);
            linear_backward_input(&mut a.dxn, &a.dgu, &p[lo.gate_up..lo.gate_up + 2 * f * d], n, d, 2 * f, false);
            linear_backward_weight(&mut g[lo.gate_up..lo.gate_up + 2 * f * d], &a.dgu, xn2, n, d, 2 * f);
            let pn = lo.post_norm;
            rmsnorm_backward(
                &mut a.dresid,
                &mut g[pn..pn + d],
                &mut a.norm_partial,
                &a.dxn,
                x_mid,
                &a.r2[l * n..(l + 1) * n],
                &p[pn..pn + d],
                d,
            );

            // Attention: dresid now holds ∂L/∂x_mid.
            linear_backward_input(&mut a.d_o, &a.dresid, &p[lo.o..lo.o + d * hd_all], n, hd_all, d, false);
            linear_backward_weight(&mut g[lo.o..lo.o + d * hd_all], &a.dresid, o, n, hd_all, d);
            let lse = &a.lse[l * bsz * cfg.n_heads * t..(l + 1) * bsz * cfg.n_heads * t];
            attention_backward(&mut a.dqkv, &mut a.attn_scratch, &a.d_o, qkv, o, lse, shape, mask);
            self.rope.rotate_rows(&mut a.dqkv, qd, qk, t, true);
            linear_backward_input(&mut a.dxn, &a.dqkv, &p[lo.qkv..lo.qkv + qd * d], n, d, qd, false);
            linear_backward_weight(&mut g[lo.qkv..lo.qkv + qd * d], &a.dqkv, xn1, n, d, qd);
            let inn = lo.input_norm;
            rmsnorm_backward(
                &mut a.dresid,
                &mut g[inn..inn + d],
                &mut a.norm_partial,
                &a.dxn,
                x,
                &a.r1[l * n..(l + 1) * n],
                &p[inn..inn + d],
                d,
            );
        }

        if a.tokens.is_empty() {
            a.d_input.copy_from_slice(&a.dresid);
        } else {
            let e = layout.embed;
            embed_backward(&mut g[e..e + v * d], &a.dresid, &a.tokens, d);
        }
    }
}

fn mean_loss<T: Float>(row_loss: &[T], targets: &[u32]) -> f64 {
    let valid = targets.iter().filter(|&&t| t != IGNORE).count();
    if valid == 0 {
        0.0
    } else {
        xent::total(row_loss) / valid as f64
    }
}

/// Every intermediate the backward pass needs, for one (batch, seq) shape.
pub struct Activations<T> {
    cfg: ModelConfig,
    pub batch: usize,
    pub seq: usize,
    resid: Vec<T>,
    xn1: Vec<T>,
    r1: Vec<T>,
    qkv: Vec<T>,
    o: Vec<T>,
    lse: Vec<T>,
    x_mid: Vec<T>,
    xn2: Vec<T>,
    r2: Vec<T>,
    gu: Vec<T>,
    h: Vec<T>,
    xf: Vec<T>,
    rf: Vec<T>,
    /// Logits after a forward pass; their gradient after `forward_backward`.
    pub logits: Vec<T>,
    /// Per-position loss in nats (0 where the target is ignored).
    pub row_loss: Vec<T>,
    /// Gradient w.r.t. embedding input (when the input was embeddings).
    pub d_input: Vec<T>,
    tokens: Vec<u32>,
    dresid: Vec<T>,
    dxn: Vec<T>,
    dqkv: Vec<T>,
    d_o: Vec<T>,
    dgu: Vec<T>,
    dh: Vec<T>,
    attn_scratch: Vec<T>,
    norm_partial: Vec<T>,
}

impl<T: Float> Activations<T> {
    pub fn new(cfg: &ModelConfig, batch: usize, seq: usize) -> Result<Self, EngineError> {
        if batch == 0 || seq == 0 || seq > cfg.max_seq_len {
            return Err(EngineError::Shape(format!(
                "batch {batch} x seq {seq} (max_seq_len {})",
                cfg.max_seq_len
            )));
        }
        let n = batch * seq;
        let (d, l, f, qd, hd_all) = (
            cfg.d_model,
            cfg.n_layers,
            cfg.ffn_hidden,
            cfg.qkv_dim(),
            cfg.n_heads * cfg.head_dim(),
        );
        let z = |len: usize| vec![T::ZERO; len];
        let shape = AttnShape {
            batch,
            seq,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim(),
        };
        Ok(Activations {
            cfg: cfg.clone(),
            batch,
            seq,
            resid: z((l + 1) * n * d),
            xn1: z(l * n * d),
            r1: z(l * n),
            qkv: z(l * n * qd),
            o: z(l * n * hd_all),
            lse: z(l * batch * cfg.n_heads * seq),
            x_mid: z(l * n * d),
            xn2: z(l * n * d),
            r2: z(l * n),
            gu: z(l * n * 2 * f),
            h: z(l * n * f),
            xf: z(n * d),
            rf: z(n),
            logits: z(n * cfg.head_rows()),
            row_loss: z(n),
            d_input: z(n * d),
            tokens: Vec::with_capacity(n),
            dresid: z(n * d),
            dxn: z(n * d),
            dqkv: z(n * qd),
            d_o: z(n * hd_all),
            dgu: z(n * 2 * f),
            dh: z(n * f),
            attn_scratch: z(shape.scratch_len()),
            norm_partial: z(n.div_ceil(ROW_CHUNK) * d),
        })
    }

    /// Bytes held, for reporting.
    pub fn bytes(&self) -> usize {
        let v = [
            &self.resid,
            &self.xn1,
            &self.r1,
            &self.qkv,
            &self.o,
            &self.lse,
            &self.x_mid,
            &self.xn2,
            &self.r2,
            &self.gu,
            &self.h,
            &self.xf,
            &self.rf,
            &self.logits,
            &self.row_loss,
            &self.d_input,
            &self.dresid,
            &self.dxn,
            &self.dqkv,
            &self.d_o,
            &self.dgu,
            &self.dh,
            &self.attn_scratch,
            &self.norm_partial,
        ];
        v.iter().map(|b| b.len()).sum::<usize>() * std::mem::size_of::<T>()
    }
}
