//! Turning logits into the next token, with OpenAI's knobs: logit bias,
//! presence/frequency penalties, temperature, top-k, top-p, a seed, an
//! optional constraint (JSON mode), and log-probabilities of what was chosen.

use ferrogpt_engine::rng::Rng;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: Option<usize>,
    pub max_tokens: usize,
    pub seed: u64,
    pub stop: Vec<String>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub logit_bias: HashMap<u32, f32>,
    /// Stop at `<|end|>` (true for chat and samples; raw completions may want to go on).
    pub stop_at_end: bool,
    /// Alternatives reported per position in [`TokenLogprob::top`].
    pub top_logprobs: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            max_tokens: 256,
            seed: 0,
            stop: Vec::new(),
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: HashMap::new(),
            stop_at_end: true,
            top_logprobs: 0,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=2.0).contains(&self.temperature) {
            return Err(format!("temperature {} must be between 0 and 2", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if self.top_k == Some(0) {
            return Err("top_k must be at least 1".into());
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(format!("{name} {v} must be between -2 and 2"));
            }
        }
        Ok(())
    }
}

/// Restricts which tokens may come next (e.g. to guarantee valid JSON).
pub trait TokenConstraint: Send {
    /// Set the logits of tokens that may not come next to −∞.
    fn mask_logits(&mut self, logits: &mut [f32]);
    /// The token that was chosen.
    fn accept(&mut self, token: u32);
    /// Whether the output so far is complete (generation may stop here).
    fn is_complete(&self) -> bool;
}

/// The chosen token's log-probability under the model (after bias and
/// penalties, before temperature), with the most likely alternatives.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub is_argmax: bool,
    pub top: Vec<(u32, f32)>,
}

/// Per-sequence sampling state.
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    counts: HashMap<u32, u32>,
    constraint: Option<Box<dyn TokenConstraint>>,
    probs: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams, vocab: usize) -> Self {
        let rng = Rng::new(params.seed);
        Sampler {
            params,
            rng,
            counts: HashMap::new(),
            constraint: None,
            probs: Vec::with_capacity(vocab),
        }
    }

    pub fn with_constraint(mut self, c: Box<dyn TokenConstraint>) -> Self {
        self.constraint = Some(c);
        self
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Whether the constraint (if any) accepts stopping now.
    pub fn may_stop(&self) -> bool {
        self.constraint.as_ref().is_none_or(|c| c.is_complete())
    }

    /// Picks the next token from `logits` (modified in place).
    pub fn sample(&mut self, logits: &mut [f32]) -> (u32, TokenLogprob) {
        for (&t, &b) in &self.params.logit_bias {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
        if self.params.presence_penalty != 0.0 || self.params.frequency_penalty != 0.0 {
            for (&t, &c) in &self.counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= self.params.presence_penalty + self.params.frequency_penalty * c as f32;
                }
            }
        }
        if let Some(c) = self.constraint.as_mut() {
            c.mask_logits(logits);
        }
        let token = if self.params.temperature == 0.0 {
            argmax(logits)
        } else {
            self.draw(logits)
        };
        let lp = logprob_of(logits, token, self.params.top_logprobs);
        *self.counts.entry(token).or_insert(0) += 1;
        if let Some(c) = self.constraint.as_mut() {
            c.accept(token);
        }
        (token, lp)
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let inv_t = 1.0 / self.params.temperature;
        let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        self.probs.clear();
        let mut z = 0.0f32;
        for (i, &l) in logits.iter().enumerate() {
            let p = ((l - m) * inv_t).exp();
            if p > 0.0 {
                self.probs.push((p, i as u32));
                z += p;
            }
        }
        let k = self.params.top_k.unwrap_or(usize::MAX);
        let mut total = z;
        if k < self.probs.len() || self.params.top_p < 1.0 {
            self.probs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            self.probs.truncate(k);
            total = 0.0;
            let cut = self.params.top_p * z;
            let mut keep = self.probs.len();
            for (i, &(p, _)) in self.probs.iter().enumerate() {
                total += p;
                if total >= cut {
                    keep = i + 1;
                    break;
                }
            }
            self.probs.truncate(keep);
            total = self.probs.iter().map(|p| p.0).sum();
        }
        let mut u = self.rng.uniform() as f32 * total;
        for &(p, i) in &self.probs {
            if u < p {
                return i;
            }
            u -= p;
        }
        self.probs.last().map_or(0, |p| p.1)
    }
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Log-softmax of `token` in `logits`, and the `top_n` most likely tokens.
pub fn logprob_of(logits: &[f32], token: u32, top_n: usize) -> TokenLogprob {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let lse = m + logits.iter().map(|&l| (l - m).exp()).sum::<f32>().ln();
    let best = argmax(logits);
    let mut top = Vec::new();
    if top_n > 0 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let n = top_n.min(idx.len());
        idx.select_nth_unstable_by(n - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        idx.truncate(n);
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        top = idx.into_iter().map(|i| (i, logits[i as usize] - lse)).collect();
    }
    TokenLogprob {
        token,
        logprob: logits[token as usize] - lse,
        is_argmax: logits[token as usize] >= logits[best as usize],
        top,
    }
}
