//! ferrogpt-infer: a model folder turned into text, and the one owner of generation. Loads
//! `config.json` + `model.safetensors` + `tokenizer.json`, turns OpenAI-shaped requests into
//! generation inputs, decodes many sequences together, and scores continuations
//! (log-likelihood evals).
//!
//! Owns, each defined once for every caller (the server, `local:` evals, `ferrogpt generate`,
//! the speedrun's samples, capability measurement, RL rollouts):
//! - the shared types: [`ChatMessage`] with text and image parts, [`Role`], [`FinishReason`],
//!   [`TokenLogprob`] ([`chat`], [`engine`], [`sample`]);
//! - the sampling parameters and their rules ([`SamplingParams`]), sampling itself
//!   ([`Sampler`]), stop sequences ([`stop`]) and JSON mode ([`json_mode`]);
//! - the translation of OpenAI-shaped requests ([`request`]);
//! - the BOS policy ([`prompt`]) and the chat template ([`chat`]);
//! - the batch decoder ([`engine::BatchDecoder`]): continuous batching, chunked prefill,
//!   per-sequence state and fair admission between groups;
//! - model folders: their one reader and writer with checksums and atomic publishing
//!   ([`model_folder`]; the trainer's checkpoints write their model part through it), and
//!   scoring ([`LocalModel`]).
//!
//! Must not touch: kernels and weights layout (the engine's), HTTP, API keys, rate limits and
//! the scheduler thread (the server's).

pub mod chat;
pub mod engine;
pub mod json_mode;
pub mod model_folder;
pub mod prompt;
pub mod request;
pub mod sample;
pub mod stop;

pub use chat::{render_chat, render_for_training, ChatMessage, ContentPart, ImagePart, Role, TrainingTokens};
pub use engine::{BatchDecoder, Completion, DecoderConfig, FinishReason, GenerationEvent, GenerationRequest, SeqId};
pub use prompt::{text_prompt, token_prompt, PromptTokens};
pub use request::RequestError;
pub use sample::{ResponseFormat, Sampler, SamplingParams, TokenConstraint, TokenLogprob};
pub use stop::StopMatcher;

use ferrogpt_engine::kv::{LogitsFor, SeqChunk};
use ferrogpt_engine::{KvCache, Model, ModelConfig};
use ferrogpt_tokenizer::{Special, Tokenizer};
use std::path::{Path, PathBuf};

/// Most sequences [`LocalModel::generate`] decodes together: enough rows to keep the matmuls
/// efficient on small models, few enough that the cache stays small on large ones.
const GENERATE_SLOTS: usize = 64;
/// Prompt tokens [`LocalModel::generate`] prefills per step.
const GENERATE_PREFILL_CHUNK: usize = 2048;
/// Sequences [`LocalModel::classify`] runs through one forward pass.
const CLASSIFY_BATCH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    ModelFolder(#[from] model_folder::ModelFolderError),
    #[error(transparent)]
    Engine(#[from] ferrogpt_engine::EngineError),
    #[error("the prompt has {prompt} tokens; the model's context length is {context}")]
    ContextLength { prompt: usize, context: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt token id {token} is outside the vocabulary of {vocab}")]
    BadToken { token: u32, vocab: usize },
    #[error("invalid '{}': {}", .0.param, .0.message)]
    Request(#[from] RequestError),
    #[error("message {message} has an image part, and this model reads text only")]
    TextOnly { message: usize },
    #[error("{0}")]
    Invalid(String),
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
    /// Loads a model folder: `config.json` (Hugging Face Llama), `model.safetensors`, `tokenizer.json`
    /// (see [`model_folder`]).
    pub fn load(dir: &Path) -> Result<Self, InferError> {
        let files = model_folder::read(dir)?;
        Ok(Self::from_parts(
            Model::from_params(files.config, files.params)?,
            files.tokenizer,
            dir.to_path_buf(),
        ))
    }

    /// Writes a model folder that [`LocalModel::load`] and Hugging Face
    /// `transformers` read: `config.json`, `model.safetensors`, `tokenizer.json` (see [`model_folder`]).
    pub fn save_folder(dir: &Path, model: &Model<f32>, tokenizer: &Tokenizer) -> Result<(), InferError> {
        model_folder::write(dir, &model.cfg, &model.params, tokenizer.to_json().as_bytes())?;
        Ok(())
    }

    pub fn from_parts(model: Model<f32>, tokenizer: Tokenizer, dir: PathBuf) -> Self {
        LocalModel { model, tokenizer, dir }
    }

    pub fn model(&self) -> &Model<f32> {
        &self.model
    }

    /// Replaces the weights with `params` (same layout): RLHF generates its rollouts with the
    /// policy as it is being trained.
    pub fn set_params(&mut self, params: &[f32]) -> Result<(), InferError> {
        if params.len() != self.model.params.len() {
            return Err(InferError::Invalid(format!(
                "{} parameters given, the model has {}",
                params.len(),
                self.model.params.len()
            )));
        }
        self.model.params.copy_from_slice(params);
        Ok(())
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

    /// Generates from `prompt` (token ids, under the BOS policy of [`prompt`]) until `<|end|>`,
    /// a stop sequence, `max_tokens` or the context length; `on_text` receives the text as it
    /// becomes final (held back while it could still be part of a stop sequence). One
    /// sequence through the [`BatchDecoder`], its whole prompt prefilled in one step.
    pub fn complete(&self, prompt: &[u32], params: &SamplingParams, on_text: &mut dyn FnMut(&str)) -> Result<Completion, InferError> {
        let request = GenerationRequest::new(prompt.to_vec(), params.clone());
        let mut decoder = BatchDecoder::new(
            self,
            DecoderConfig {
                slots: 1,
                max_sequence_len: self.sequence_len(&request),
                prefill_chunk: prompt.len(),
            },
        );
        let id = decoder.add(request)?;
        let mut out = engine::run_to_end(&mut decoder, &[id], &mut |_, text| on_text(text))?;
        out.pop()
            .ok_or_else(|| InferError::Invalid("the decoder returned no completion for the request".into()))
    }

    /// Runs every request to its end, decoding up to 64 together with continuous batching,
    /// and returns their completions in order. Each request samples with its own seed, so a
    /// result does not depend on the other requests beyond float rounding (see [`engine`]).
    /// Fails without generating anything if any request is invalid.
    pub fn generate(&self, requests: &[GenerationRequest]) -> Result<Vec<Completion>, InferError> {
        let Some(max_sequence_len) = requests.iter().map(|r| self.sequence_len(r)).max() else {
            return Ok(Vec::new());
        };
        let mut decoder = BatchDecoder::new(
            self,
            DecoderConfig {
                slots: requests.len().min(GENERATE_SLOTS),
                max_sequence_len,
                prefill_chunk: GENERATE_PREFILL_CHUNK,
            },
        );
        let ids = requests.iter().map(|r| decoder.add(r.clone())).collect::<Result<Vec<_>, _>>()?;
        engine::run_to_end(&mut decoder, &ids, &mut |_, _| {})
    }

    /// Cache positions `request` can use: its prompt and budget, within the context.
    fn sequence_len(&self, request: &GenerationRequest) -> usize {
        let context = self.context_length();
        let room = context.saturating_sub(request.prompt.len());
        let budget = request.params.max_tokens.map_or(room, |m| m.min(room));
        (request.prompt.len() + budget).min(context)
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

    /// The model's outputs at every position of `tokens` (`[len, head rows]`, row-major): what
    /// other implementations of the same weights are compared against.
    pub fn logits(&self, tokens: &[u32]) -> Result<Vec<f32>, InferError> {
        if tokens.len() > self.context_length() {
            return Err(InferError::ContextLength {
                prompt: tokens.len(),
                context: self.context_length(),
            });
        }
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= self.model.cfg.vocab_size) {
            return Err(InferError::BadToken {
                token,
                vocab: self.model.cfg.vocab_size,
            });
        }
        let mut cache = KvCache::<f32>::new(&self.model.cfg, 1, tokens.len().max(1));
        let mut logits = Vec::new();
        self.model
            .forward_cached(&mut cache, &[SeqChunk { slot: 0, tokens }], LogitsFor::All, &mut logits)?;
        Ok(logits)
    }

    /// A sequence classifier's outputs (its `num_labels` scores at the last
    /// token: a reward model's one score, a safety classifier's logits) for
    /// each of `sequences`, several at a time through the KV-cache forward.
    pub fn classify(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, InferError> {
        let Some(labels) = self.model.cfg.num_labels else {
            return Err(InferError::Invalid(format!(
                "{} is a language model, not a sequence classifier (its config.json has no num_labels)",
                self.dir.display()
            )));
        };
        let ctx = self.context_length();
        for seq in sequences {
            if seq.is_empty() {
                return Err(InferError::Invalid("an empty sequence has nothing to classify".into()));
            }
            if seq.len() > ctx {
                return Err(InferError::ContextLength {
                    prompt: seq.len(),
                    context: ctx,
                });
            }
            if let Some(&token) = seq.iter().find(|&&t| t as usize >= self.model.cfg.vocab_size) {
                return Err(InferError::BadToken {
                    token,
                    vocab: self.model.cfg.vocab_size,
                });
            }
        }
        let mut out = Vec::with_capacity(sequences.len());
        let mut logits = Vec::new();
        for group in sequences.chunks(CLASSIFY_BATCH) {
            let longest = group.iter().map(Vec::len).max().unwrap_or(1);
            let mut cache = KvCache::<f32>::new(&self.model.cfg, group.len(), longest);
            let chunks: Vec<SeqChunk> = group.iter().enumerate().map(|(slot, tokens)| SeqChunk { slot, tokens }).collect();
            self.model.forward_cached(&mut cache, &chunks, LogitsFor::Last, &mut logits)?;
            out.extend(logits.chunks_exact(labels).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// [`score`](Self::score) for texts longer than the model's context, as
    /// lm-evaluation-harness scores them. A continuation that fits keeps the newest context
    /// tokens that fit before it (few-shot examples go before the question). A continuation
    /// that does not fit is scored in chunks of half the context length, each after the
    /// tokens before it, newest first, up to the context length: every token is conditioned
    /// on at least half a context of tokens (or all before it, when fewer).
    pub fn score_windowed(&self, context: &[u32], continuation: &[u32]) -> Result<ContinuationScore, InferError> {
        let window = self.context_length();
        let bos = [self.tokenizer.special_id(Special::Bos)];
        let context = if context.is_empty() { &bos[..] } else { context };
        if continuation.len() < window {
            let keep = window - continuation.len();
            return self.score(&context[context.len().saturating_sub(keep)..], continuation);
        }
        let all: Vec<u32> = context.iter().chain(continuation).copied().collect();
        let chunk = (window / 2).max(1);
        let mut total = ContinuationScore {
            logprob: 0.0,
            is_greedy: true,
            token_logprobs: Vec::with_capacity(continuation.len()),
        };
        for start in (context.len()..all.len()).step_by(chunk) {
            let end = (start + chunk).min(all.len());
            let part = self.score(&all[end.saturating_sub(window)..start], &all[start..end])?;
            total.logprob += part.logprob;
            total.is_greedy &= part.is_greedy;
            total.token_logprobs.extend(part.token_logprobs);
        }
        Ok(total)
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
