//! AdamW with decoupled weight decay, global-norm gradient clipping, and the
//! two learning-rate schedules the project uses.
//!
//! Update, per element with gradient `g` at step `t` (1-based):
//!   `m = β1·m + (1−β1)·g`, `v = β2·v + (1−β2)·g²`
//!   `θ -= lr·( m/(1−β1ᵗ) / (sqrt(v/(1−β2ᵗ)) + ε) + λ·θ )`
//! with `λ = 0` for norms and embeddings unless configured otherwise.

use crate::float::Float;
use crate::params::{ParamKind, ParamLayout};
use crate::simd::{multiversion, Kernels};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    #[serde(default = "d_eps")]
    pub eps: f64,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    /// Apply weight decay to norm weights and embeddings too.
    #[serde(default)]
    pub decay_norms_and_embeddings: bool,
}

fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.95
}
fn d_eps() -> f64 {
    1e-8
}
fn d_wd() -> f64 {
    0.1
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: d_beta1(),
            beta2: d_beta2(),
            eps: d_eps(),
            weight_decay: d_wd(),
            decay_norms_and_embeddings: false,
        }
    }
}

/// Optimizer state: first and second moments in the parameter layout.
pub struct AdamW {
    pub cfg: AdamWConfig,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Updates applied so far.
    pub step: u64,
    /// Per-element weight decay factor (0 or 1), in runs over the layout.
    decay_runs: Vec<(std::ops::Range<usize>, bool)>,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig, layout: &ParamLayout) -> Self {
        let decay_runs = layout
            .tensors
            .iter()
            .map(|t| {
                let decays = cfg.decay_norms_and_embeddings || matches!(t.kind, ParamKind::Matrix | ParamKind::ResidualOut);
                (t.range(), decays)
            })
            .collect();
        AdamW {
            cfg,
            m: vec![0.0; layout.total],
            v: vec![0.0; layout.total],
            step: 0,
            decay_runs,
        }
    }

    /// One update of `params` from `grads` at learning rate `lr`.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32], lr: f64) {
        self.step += 1;
        let t = self.step as i32;
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let (b1, b2, eps) = (c.beta1 as f32, c.beta2 as f32, c.eps as f32);
        // Fold the bias corrections into the step size and epsilon:
        // m̂/(sqrt(v̂)+ε) = (m/bc1) / (sqrt(v)/sqrt(bc2) + ε).
        let step_size = (lr / bc1) as f32;
        let sqrt_bc2 = bc2.sqrt() as f32;
        const CHUNK: usize = 1 << 14;
        let kernels = Kernels::active();
        for (range, decays) in &self.decay_runs {
            let wd = if *decays { (lr * c.weight_decay) as f32 } else { 0.0 };
            let r = range.clone();
            let step = AdamStep {
                b1,
                b2,
                eps,
                step_size,
                sqrt_bc2,
                wd,
            };
            params[r.clone()]
                .par_chunks_mut(CHUNK)
                .zip(grads[r.clone()].par_chunks(CHUNK))
                .zip(self.m[r.clone()].par_chunks_mut(CHUNK))
                .zip(self.v[r].par_chunks_mut(CHUNK))
                .for_each(|(((p, g), m), v)| adamw_chunk(kernels, p, g, m, v, step));
        }
    }
}

/// The scalars of one AdamW update.
#[derive(Clone, Copy)]
struct AdamStep {
    b1: f32,
    b2: f32,
    eps: f32,
    step_size: f32,
    sqrt_bc2: f32,
    wd: f32,
}

multiversion! {
    fn adamw_chunk<T: Float>(isa: Isa, p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], s: AdamStep) {
        let f = |x: f32| T::from_f32(x);
        let (b1, b2, eps, step_size, sqrt_bc2, wd) = (f(s.b1), f(s.b2), f(s.eps), f(s.step_size), f(s.sqrt_bc2), f(s.wd));
        let n = p.len().min(g.len()).min(m.len()).min(v.len());
        for i in 0..n {
            let gi = g[i];
            m[i] = b1 * m[i] + (T::ONE - b1) * gi;
            v[i] = b2 * v[i] + (T::ONE - b2) * gi * gi;
            let denom = v[i].sqrt() / sqrt_bc2 + eps;
            p[i] -= step_size * m[i] / denom + wd * p[i];
        }
    }
}

/// L2 norm of all gradients, summed per chunk in a fixed order (deterministic).
pub fn grad_norm<T: Float>(grads: &[T]) -> f64 {
    let partial: Vec<f64> = grads
        .par_chunks(1 << 14)
        .map(|c| c.iter().map(|&g| g.to_f64() * g.to_f64()).sum::<f64>())
        .collect();
    partial.iter().sum::<f64>().sqrt()
}

/// Scales gradients so their global norm is at most `max_norm`; returns the
/// norm before clipping.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f64) -> f64 {
    let norm = grad_norm(grads);
    if max_norm > 0.0 && norm > max_norm {
        let s = (max_norm / (norm + 1e-6)) as f32;
        grads.par_chunks_mut(1 << 14).for_each(|c| c.iter_mut().for_each(|g| *g *= s));
    }
    norm
}

/// Learning rate as a function of the step (0-based, `total` steps in all).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// Linear warm-up, then cosine decay to `min_lr_ratio · peak`.
    Cosine { warmup_frac: f64, min_lr_ratio: f64 },
    /// Warm-up, constant, then a `1 − sqrt` cooldown over the last
    /// `cooldown_frac` of the run (Hägele et al. 2024), ending at 0.
    Wsd { warmup_frac: f64, cooldown_frac: f64 },
}

impl Schedule {
    pub fn lr(&self, peak: f64, step: u64, total: u64) -> f64 {
        let total = total.max(1) as f64;
        let s = step as f64;
        let warm = |frac: f64| (frac * total).round().max(0.0);
        match *self {
            Schedule::Cosine { warmup_frac, min_lr_ratio } => {
                let w = warm(warmup_frac);
                if s < w {
                    return peak * (s + 1.0) / w;
                }
                let progress = ((s - w) / (total - w).max(1.0)).min(1.0);
                let min = peak * min_lr_ratio;
                min + (peak - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Schedule::Wsd {
                warmup_frac,
                cooldown_frac,
            } => {
                let w = warm(warmup_frac);
                if s < w {
                    return peak * (s + 1.0) / w;
                }
                let cool = (cooldown_frac * total).round().max(1.0);
                let cool_start = total - cool;
                if s < cool_start {
                    peak
                } else {
                    let progress = ((s - cool_start + 1.0) / cool).min(1.0);
                    peak * (1.0 - progress.sqrt())
                }
            }
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let in01 = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("`{name}` = {v} must be in [0, 1]"))
            }
        };
        match *self {
            Schedule::Cosine { warmup_frac, min_lr_ratio } => {
                in01("warmup_frac", warmup_frac)?;
                in01("min_lr_ratio", min_lr_ratio)
            }
            Schedule::Wsd {
                warmup_frac,
                cooldown_frac,
            } => {
                in01("warmup_frac", warmup_frac)?;
                in01("cooldown_frac", cooldown_frac)?;
                if warmup_frac + cooldown_frac > 1.0 {
                    return Err("`warmup_frac` + `cooldown_frac` exceed 1".into());
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    #[test]
    fn adamw_matches_a_scalar_reference() {
        let mut cfg = ModelConfig::reference();
        cfg.vocab_size = 8;
        cfg.d_model = 4;
        cfg.n_heads = 1;
        cfg.n_kv_heads = 1;
        cfg.n_layers = 1;
        cfg.ffn_hidden = 4;
        let layout = ParamLayout::new(&cfg);
        let mut opt = AdamW::new(AdamWConfig::default(), &layout);
        let mut p = vec![0.5f32; layout.total];
        let g: Vec<f32> = (0..layout.total).map(|i| (i as f32 * 0.1).sin()).collect();
        let q_idx = layout.layers[0].qkv; // a decayed matrix
        let n_idx = layout.layers[0].input_norm; // not decayed
        let (mut m, mut v, mut theta_q, mut theta_n) = (0.0f64, 0.0f64, 0.5f64, 0.5f64);
        let mut vn = 0.0f64;
        let mut mn = 0.0f64;
        for step in 1..=3 {
            opt.update(&mut p, &g, 1e-2);
            let (gq, gn) = (g[q_idx] as f64, g[n_idx] as f64);
            m = 0.9 * m + 0.1 * gq;
            v = 0.95 * v + 0.05 * gq * gq;
            mn = 0.9 * mn + 0.1 * gn;
            vn = 0.95 * vn + 0.05 * gn * gn;
            let (bc1, bc2) = (1.0 - 0.9f64.powi(step), 1.0 - 0.95f64.powi(step));
            theta_q -= 1e-2 * ((m / bc1) / ((v / bc2).sqrt() + 1e-8) + 0.1 * theta_q);
            theta_n -= 1e-2 * ((mn / bc1) / ((vn / bc2).sqrt() + 1e-8));
        }
        assert!((p[q_idx] as f64 - theta_q).abs() < 1e-6, "{} vs {theta_q}", p[q_idx]);
        assert!((p[n_idx] as f64 - theta_n).abs() < 1e-6, "{} vs {theta_n}", p[n_idx]);
    }

    #[test]
    fn every_kernel_path_gives_the_same_bits() {
        let n = 1003;
        let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let step = AdamStep {
            b1: 0.9,
            b2: 0.95,
            eps: 1e-8,
            step_size: 1e-3,
            sqrt_bc2: 0.3,
            wd: 1e-4,
        };
        let run = |k| {
            let (mut p, mut m, mut v) = (vec![0.5f32; n], vec![0.01f32; n], vec![0.02f32; n]);
            adamw_chunk(k, &mut p, &g, &mut m, &mut v, step);
            (p, m, v)
        };
        let kernels = crate::simd::tests::all_kernels();
        let want = run(kernels[0]);
        for &k in &kernels[1..] {
            assert_eq!(run(k), want, "{:?}", k.path());
        }
    }

    #[test]
    fn clipping_caps_the_global_norm() {
        let mut g = vec![3.0f32, 4.0];
        let before = clip_grad_norm(&mut g, 1.0);
        assert!((before - 5.0).abs() < 1e-9);
        assert!((grad_norm(&g) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn schedules_have_the_documented_shape() {
        let c = Schedule::Cosine {
            warmup_frac: 0.1,
            min_lr_ratio: 0.1,
        };
        assert!((c.lr(1.0, 9, 100) - 1.0).abs() < 1e-12);
        assert!(c.lr(1.0, 0, 100) < 0.2);
        assert!((c.lr(1.0, 99, 100) - 0.1).abs() < 1e-3);
        let w = Schedule::Wsd {
            warmup_frac: 0.1,
            cooldown_frac: 0.2,
        };
        assert_eq!(w.lr(1.0, 50, 100), 1.0);
        assert!(w.lr(1.0, 90, 100) < 1.0);
        assert!(w.lr(1.0, 99, 100).abs() < 1e-12);
        assert!(Schedule::Wsd {
            warmup_frac: 0.6,
            cooldown_frac: 0.6
        }
        .validate()
        .is_err());
    }
}
