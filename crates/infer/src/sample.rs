//! Turning logits into the next token, with OpenAI's knobs: logit bias,
//! presence/frequency penalties, temperature, top-k, top-p, a seed, an
//! optional constraint (JSON mode), and log-probabilities of what was chosen.

use ferrogpt_rng::Xoshiro256StarStar;
use serde::Serialize;
use std::collections::HashMap;

use crate::request::RequestError;

/// Most entries in `logit_bias` (OpenAI's limit).
pub const MAX_LOGIT_BIAS_ENTRIES: usize = 300;
/// Most stop sequences (OpenAI's limit).
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Most alternatives reported per position (OpenAI's `top_logprobs` limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// How one sequence is sampled and when it stops: the one parameter type of every caller
/// (the server, `local:` evals, `ferrogpt generate`, capability measurement), checked by one
/// set of rules ([`SamplingParams::validate`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling; 0 means "only the most likely token" (greedy), as in OpenAI's API.
    pub top_p: f32,
    pub top_k: Option<usize>,
    /// Most tokens to generate; `None`: until the context is full. 0 only scores the prompt.
    pub max_tokens: Option<usize>,
    /// `None`: a seed drawn from the operating system's entropy for each sequence.
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub logit_bias: HashMap<u32, f32>,
    /// Stop at `<|end|>` (true for chat and samples; raw completions may want to go on).
    pub stop_at_end: bool,
    /// `Some(k)`: report each generated token's logprob with its `k` most likely alternatives
    /// (also the alternatives reported with prompt logprobs).
    pub logprobs: Option<usize>,
    pub response_format: ResponseFormat,
}

/// OpenAI's `response_format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseFormat {
    #[default]
    Text,
    /// One syntactically valid JSON object (see [`crate::json_mode`]).
    JsonObject,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            max_tokens: Some(256),
            seed: Some(0),
            stop: Vec::new(),
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: HashMap::new(),
            stop_at_end: true,
            logprobs: None,
            response_format: ResponseFormat::Text,
        }
    }
}

fn out_of_range(param: &str, value: impl std::fmt::Display, lo: f32, hi: f32) -> RequestError {
    RequestError::new(
        param,
        format!("{value} is not valid for '{param}': it must be between {lo} and {hi}."),
    )
}

impl SamplingParams {
    /// The rules every caller's parameters follow; the error names the offending field as
    /// OpenAI's API spells it.
    pub fn validate(&self) -> Result<(), RequestError> {
        let within = |v: f32, lo: f32, hi: f32| v.is_finite() && (lo..=hi).contains(&v);
        if !within(self.temperature, 0.0, 2.0) {
            return Err(out_of_range("temperature", self.temperature, 0.0, 2.0));
        }
        if !within(self.top_p, 0.0, 1.0) {
            return Err(out_of_range("top_p", self.top_p, 0.0, 1.0));
        }
        if self.top_k == Some(0) {
            return Err(RequestError::new("top_k", "'top_k' must be at least 1."));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !within(v, -2.0, 2.0) {
                return Err(out_of_range(name, v, -2.0, 2.0));
            }
        }
        if self.stop.len() > MAX_STOP_SEQUENCES {
            return Err(RequestError::new(
                "stop",
                format!("'stop' may hold at most {MAX_STOP_SEQUENCES} sequences, not {}.", self.stop.len()),
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(RequestError::new("stop", "Stop sequences must not be empty."));
        }
        if self.logit_bias.len() > MAX_LOGIT_BIAS_ENTRIES {
            return Err(RequestError::new(
                "logit_bias",
                format!(
                    "'logit_bias' may hold at most {MAX_LOGIT_BIAS_ENTRIES} entries, not {}.",
                    self.logit_bias.len()
                ),
            ));
        }
        let mut biases: Vec<(&u32, &f32)> = self.logit_bias.iter().collect();
        biases.sort_unstable_by_key(|(t, _)| **t);
        if let Some((token, bias)) = biases.into_iter().find(|(_, &b)| !within(b, -100.0, 100.0)) {
            return Err(RequestError::new(
                "logit_bias",
                format!("Invalid bias {bias} for token {token} in 'logit_bias': it must be a number between -100 and 100."),
            ));
        }
        if let Some(k) = self.logprobs.filter(|&k| k > MAX_TOP_LOGPROBS) {
            return Err(RequestError::new(
                "top_logprobs",
                format!("{k} is not valid for 'top_logprobs': it must be between 0 and {MAX_TOP_LOGPROBS}."),
            ));
        }
        Ok(())
    }

    /// Token ids the parameters name (`logit_bias`) must exist in a vocabulary of `vocab`.
    pub fn check_vocabulary(&self, vocab: usize) -> Result<(), RequestError> {
        let mut outside: Vec<u32> = self.logit_bias.keys().copied().filter(|&t| t as usize >= vocab).collect();
        outside.sort_unstable();
        match outside.first() {
            Some(id) => Err(RequestError::new(
                "logit_bias",
                format!("Token id {id} in 'logit_bias' is outside the model's vocabulary of {vocab} tokens."),
            )),
            None => Ok(()),
        }
    }

    /// Whether sampling always takes the most likely token.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_p == 0.0
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
    top_logprobs: usize,
    rng: Xoshiro256StarStar,
    counts: HashMap<u32, u32>,
    constraint: Option<Box<dyn TokenConstraint>>,
    probs: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler for one sequence; a `None` seed is drawn from the operating system's entropy.
    pub fn new(params: SamplingParams, vocab: usize) -> Self {
        let rng = Xoshiro256StarStar::new(params.seed.unwrap_or_else(rand::random));
        Sampler {
            top_logprobs: params.logprobs.unwrap_or(0),
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
        let token = if self.params.is_greedy() {
            argmax(logits)
        } else {
            self.draw(logits)
        };
        let lp = logprob_of(logits, token, self.top_logprobs);
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
