//! ferrogpt-infer: a model folder turned into text. Loads `config.json` +
//! `model.safetensors` + `tokenizer.json`, renders chat prompts, samples with
//! the engine's KV cache, and scores continuations (log-likelihood evals).
//!
//! Owns: sampling policy ([`sample`]), the chat template ([`chat`]), stop
//! sequences, single-request generation and scoring ([`LocalModel`]).
//! Must not touch: kernels and weights layout (the engine's), HTTP, rate
//! limits and batching policy across requests (the server's, built on
//! [`ferrogpt_engine::KvCache`] and [`sample::Sampler`]).

pub mod chat;
pub mod sample;
pub mod stop;

pub use chat::{render_chat, ChatMessage, Role};
pub use sample::{Sampler, SamplingParams, TokenConstraint, TokenLogprob};
pub use stop::StopMatcher;

use ferrogpt_engine::kv::{LogitsFor, SeqChunk};
use ferrogpt_engine::{KvCache, Model, ModelConfig};
use ferrogpt_tokenizer::{Special, StreamDecoder, Tokenizer};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("{path}: {why}")]
    Load { path: PathBuf, why: String },
    #[error(transparent)]
    Engine(#[from] ferrogpt_engine::EngineError),
    #[error("the prompt has {prompt} tokens; the model's context length is {context}")]
    ContextLength { prompt: usize, context: usize },
    #[error("{0}")]
    Invalid(String),
}

/// Why generation ended, in OpenAI's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `<|end|>` or a stop sequence.
    Stop,
    /// `max_tokens` or the context length.
    Length,
}

#[derive(Clone, Debug)]
pub struct Completion {
    pub text: String,
    pub tokens: Vec<u32>,
    pub logprobs: Vec<TokenLogprob>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContinuationScore {
    /// Sum of the continuation tokens' log-probabilities (nats).
    pub logprob: f64,
    /// Every continuation token was the argmax at its position.
    pub is_greedy: bool,
    pub token_logprobs: Vec<f32>,
}

/// A trained model ready for inference.
pub struct LocalModel {
    model: Model<f32>,
    tokenizer: Tokenizer,
    dir: PathBuf,
}

impl LocalModel {
    /// Loads a model folder: `config.json` (Hugging Face Llama), `model.safetensors`, `tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Self, InferError> {
        let load_err = |path: PathBuf, why: String| InferError::Load { path, why };
        if !dir.is_dir() {
            return Err(load_err(
                dir.to_path_buf(),
                "is not a model folder (expected config.json, model.safetensors, tokenizer.json)".into(),
            ));
        }
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| load_err(cfg_path.clone(), e.to_string()))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| load_err(cfg_path.clone(), format!("invalid JSON: {e}")))?;
        let cfg = ModelConfig::from_hf_json(&json).map_err(|e| load_err(cfg_path.clone(), e.to_string()))?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| load_err(tok_path.clone(), e.to_string()))?;
        if tokenizer.vocab_size() > cfg.vocab_size {
            return Err(load_err(
                tok_path,
                format!("has {} tokens, the model only {}", tokenizer.vocab_size(), cfg.vocab_size),
            ));
        }
        let layout = ferrogpt_engine::params::ParamLayout::new(&cfg);
        let params = ferrogpt_engine::io::load_model(&dir.join("model.safetensors"), &layout)?;
        Ok(Self::from_parts(Model::from_params(cfg, params)?, tokenizer, dir.to_path_buf()))
    }

    /// Writes a model folder that [`LocalModel::load`] and Hugging Face
    /// `transformers` read: `config.json`, `model.safetensors`, `tokenizer.json`.
    pub fn save_folder(dir: &Path, model: &Model<f32>, tokenizer: &Tokenizer) -> Result<(), InferError> {
        let io = |path: PathBuf, e: std::io::Error| InferError::Load { path, why: e.to_string() };
        std::fs::create_dir_all(dir).map_err(|e| io(dir.to_path_buf(), e))?;
        let cfg = model
            .cfg
            .to_hf_json(tokenizer.special_id(Special::Bos), tokenizer.special_id(Special::End));
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| InferError::Invalid(e.to_string()))?;
        std::fs::write(dir.join("config.json"), text).map_err(|e| io(dir.join("config.json"), e))?;
        ferrogpt_engine::io::save_model(&dir.join("model.safetensors"), &model.layout, &model.params, None)?;
        tokenizer.save(&dir.join("tokenizer.json")).map_err(|e| InferError::Load {
            path: dir.join("tokenizer.json"),
            why: e.to_string(),
        })
    }

    pub fn from_parts(model: Model<f32>, tokenizer: Tokenizer, dir: PathBuf) -> Self {
        LocalModel { model, tokenizer, dir }
    }

    pub fn model(&self) -> &Model<f32> {
        &self.model
    }
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    pub fn config(&self) -> &ModelConfig {
        &self.model.cfg
    }
    pub fn context_length(&self) -> usize {
        self.model.cfg.max_seq_len
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Generates from `prompt` (token ids) until `<|end|>`, a stop sequence,
    /// `max_tokens` or the context length; `on_text` receives the text as it
    /// becomes final (held back while it could still be part of a stop sequence).
    pub fn complete(&self, prompt: &[u32], params: &SamplingParams, on_text: &mut dyn FnMut(&str)) -> Result<Completion, InferError> {
        params.validate().map_err(InferError::Invalid)?;
        let ctx = self.context_length();
        if prompt.is_empty() {
            return Err(InferError::Invalid("the prompt is empty".into()));
        }
        if prompt.len() >= ctx {
            return Err(InferError::ContextLength {
                prompt: prompt.len(),
                context: ctx,
            });
        }
        let budget = params.max_tokens.min(ctx - prompt.len());
        let mut cache = KvCache::<f32>::new(&self.model.cfg, 1, prompt.len() + budget);
        let mut logits = Vec::new();
        let mut sampler = Sampler::new(params.clone(), self.model.cfg.vocab_size);
        let mut decoder = StreamDecoder::new();
        let mut stops = StopMatcher::new(params.stop.clone());
        let end = self.tokenizer.special_id(Special::End);
        let (mut tokens, mut lps) = (Vec::new(), Vec::new());
        let mut text = String::new();
        let mut finish = FinishReason::Length;
        let mut next_input: Vec<u32> = prompt.to_vec();
        while tokens.len() < budget {
            self.model.forward_cached(
                &mut cache,
                &[SeqChunk {
                    slot: 0,
                    tokens: &next_input,
                }],
                LogitsFor::Last,
                &mut logits,
            )?;
            let (tok, lp) = sampler.sample(&mut logits);
            if tok == end && params.stop_at_end {
                finish = FinishReason::Stop;
                break;
            }
            tokens.push(tok);
            lps.push(lp);
            let delta = decoder.push(&self.tokenizer, tok);
            let (emit, hit) = stops.push(&delta);
            text.push_str(&emit);
            on_text(&emit);
            if hit {
                finish = FinishReason::Stop;
                break;
            }
            next_input.clear();
            next_input.push(tok);
        }
        if finish == FinishReason::Length || !stops.matched() {
            let rest = decoder.finish();
            let (emit, _) = stops.push(&rest);
            let tail = format!("{emit}{}", stops.flush());
            text.push_str(&tail);
            on_text(&tail);
        }
        Ok(Completion {
            text,
            completion_tokens: tokens.len(),
            tokens,
            logprobs: lps,
            finish_reason: finish,
            prompt_tokens: prompt.len(),
        })
    }

    /// Log-likelihood of `continuation` after `context` (lm-evaluation-harness'
    /// `loglikelihood`). An empty context is read as `<|bos|>`.
    pub fn score(&self, context: &[u32], continuation: &[u32]) -> Result<ContinuationScore, InferError> {
        let bos = [self.tokenizer.special_id(Special::Bos)];
        let context = if context.is_empty() { &bos[..] } else { context };
        let all: Vec<u32> = context.iter().chain(continuation).copied().collect();
        let per_token = self.token_logprobs(&all, 0)?;
        let mut logprob = 0.0;
        let mut is_greedy = true;
        let mut token_logprobs = Vec::with_capacity(continuation.len());
        for lp in per_token.iter().skip(context.len()).flatten() {
            logprob += lp.logprob as f64;
            is_greedy &= lp.is_argmax;
            token_logprobs.push(lp.logprob);
        }
        Ok(ContinuationScore {
            logprob,
            is_greedy,
            token_logprobs,
        })
    }

    /// The log-probability of every token given the ones before it (`None` for
    /// the first), with the `top_n` most likely alternatives at each position.
    pub fn token_logprobs(&self, tokens: &[u32], top_n: usize) -> Result<Vec<Option<TokenLogprob>>, InferError> {
        let ctx = self.context_length();
        if tokens.len() > ctx {
            return Err(InferError::ContextLength {
                prompt: tokens.len(),
                context: ctx,
            });
        }
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let v = self.model.cfg.vocab_size;
        let mut cache = KvCache::<f32>::new(&self.model.cfg, 1, tokens.len());
        let mut logits = Vec::new();
        self.model
            .forward_cached(&mut cache, &[SeqChunk { slot: 0, tokens }], LogitsFor::All, &mut logits)?;
        let mut out = vec![None];
        for (i, &t) in tokens.iter().enumerate().skip(1) {
            out.push(Some(sample::logprob_of(&logits[(i - 1) * v..i * v], t, top_n)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
