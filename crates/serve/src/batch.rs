//! Continuous batching over the engine's multi-slot KV cache.
//!
//! A [`BatchEngine`] owns one [`KvCache`] with a fixed number of slots. Requests wait in a
//! queue until a slot is free; every [`BatchEngine::step`] makes exactly one
//! `forward_cached` call that mixes one decode token for each running sequence with chunks of
//! newly admitted prompts (chunked prefill, bounded by a per-step token budget so a long prompt
//! does not stall everyone else's next token). A sequence finishes on `<|end|>`, a stop
//! sequence, `max_tokens` or the context limit; a finished or cancelled sequence frees its slot
//! at once, so the next waiting request joins on the following step.
//!
//! Sampling (penalties, bias, temperature, top-k/p, seed, constraints) is ferrogpt-infer's
//! per-sequence [`Sampler`]; stop sequences use its [`StopMatcher`].

use std::collections::VecDeque;

use ferrogpt_engine::kv::{LogitsFor, SeqChunk};
use ferrogpt_engine::{EngineError, KvCache, Model};
use ferrogpt_infer::sample::logprob_of;
use ferrogpt_infer::{FinishReason, Sampler, SamplingParams, StopMatcher, TokenConstraint, TokenLogprob};
use ferrogpt_tokenizer::{Special, StreamDecoder, Tokenizer};

/// Identifies a sequence for its whole life (never reused within one engine).
pub type SeqId = u64;

/// One sequence to generate.
pub struct BatchRequest {
    pub prompt: Vec<u32>,
    /// Temperature, top-p/k, penalties, logit bias, seed, `max_tokens`, stop sequences and the
    /// number of alternatives reported with each logprob (`top_logprobs`).
    pub params: SamplingParams,
    /// Report each generated token's logprob.
    pub logprobs: bool,
    /// Report the logprob of every prompt token (scoring / `echo`).
    pub prompt_logprobs: bool,
    /// Restricts which tokens may be sampled (e.g. JSON mode).
    pub constraint: Option<Box<dyn TokenConstraint>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SeqEvent {
    /// Logprobs of all prompt tokens once prefill is done (only when asked for); the first is
    /// `None` because nothing predicts it.
    Prompt { id: SeqId, tokens: Vec<Option<TokenLogprob>> },
    /// New text; may be empty while a multi-byte character or a possible stop sequence is held
    /// back. `tokens` lists the sampled tokens with logprobs when they were asked for.
    Text {
        id: SeqId,
        text: String,
        tokens: Vec<TokenLogprob>,
    },
    Finished {
        id: SeqId,
        reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt ({prompt} tokens) plus max_tokens ({max_tokens}) exceeds the context length {context}")]
    TooLong { prompt: usize, max_tokens: usize, context: usize },
    #[error("prompt token id {token} is outside the vocabulary of {vocab}")]
    BadToken { token: u32, vocab: usize },
    #[error("invalid sampling parameters: {0}")]
    Params(String),
    #[error("forward pass failed: {0}")]
    Engine(#[from] EngineError),
}

struct Seq {
    id: SeqId,
    slot: usize,
    prompt: Vec<u32>,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    /// The sampled token to feed on the next step.
    next: Option<u32>,
    sampler: Sampler,
    max_tokens: usize,
    stop_at_end: bool,
    logprobs: bool,
    top_logprobs: usize,
    prompt_logprobs: Option<Vec<Option<TokenLogprob>>>,
    decoder: StreamDecoder,
    stops: StopMatcher,
    generated: usize,
}

/// Load figures for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub waiting: usize,
    pub running: usize,
    /// Sequences in the latest forward pass.
    pub last_batch: usize,
    /// Rows (tokens) in the latest forward pass.
    pub last_rows: usize,
    pub steps: u64,
}

pub struct BatchEngine<'m> {
    model: &'m Model<f32>,
    tokenizer: &'m Tokenizer,
    cache: KvCache<f32>,
    context: usize,
    prefill_budget: usize,
    waiting: VecDeque<(SeqId, BatchRequest)>,
    /// Running sequences in admission order (earlier prompts prefill first).
    running: Vec<Seq>,
    free_slots: Vec<usize>,
    next_id: SeqId,
    logits: Vec<f32>,
    work: Vec<f32>,
    stats: BatchStats,
}

impl<'m> BatchEngine<'m> {
    /// `slots` = most sequences decoded together (at least 1); `prefill_budget` = most prompt
    /// tokens prefilled per step (at least 1).
    pub fn new(model: &'m Model<f32>, tokenizer: &'m Tokenizer, slots: usize, prefill_budget: usize) -> Self {
        let slots = slots.max(1);
        let context = model.cfg.max_seq_len;
        Self {
            model,
            tokenizer,
            cache: KvCache::new(&model.cfg, slots, context),
            context,
            prefill_budget: prefill_budget.max(1),
            waiting: VecDeque::new(),
            running: Vec::with_capacity(slots),
            free_slots: (0..slots).rev().collect(),
            next_id: 0,
            logits: Vec::new(),
            work: Vec::new(),
            stats: BatchStats::default(),
        }
    }

    pub fn context_length(&self) -> usize {
        self.context
    }

    /// Queues a request; it joins the batch on a later step once a slot is free.
    pub fn add(&mut self, request: BatchRequest) -> Result<SeqId, BatchError> {
        if request.prompt.is_empty() {
            return Err(BatchError::EmptyPrompt);
        }
        request.params.validate().map_err(BatchError::Params)?;
        let vocab = self.model.cfg.vocab_size;
        if let Some(&token) = request.prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(BatchError::BadToken { token, vocab });
        }
        if request.prompt.len() + request.params.max_tokens > self.context {
            return Err(BatchError::TooLong {
                prompt: request.prompt.len(),
                max_tokens: request.params.max_tokens,
                context: self.context,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.push_back((id, request));
        Ok(id)
    }

    /// Drops a sequence, waiting or running; its slot is free for the next step.
    pub fn cancel(&mut self, id: SeqId) {
        self.waiting.retain(|(w, _)| *w != id);
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            let seq = self.running.remove(i);
            self.release(seq.slot);
        }
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    pub fn stats(&self) -> BatchStats {
        BatchStats {
            waiting: self.waiting.len(),
            running: self.running.len(),
            ..self.stats
        }
    }

    fn release(&mut self, slot: usize) {
        self.cache.reset(slot);
        self.free_slots.push(slot);
    }

    fn admit(&mut self) {
        while !self.waiting.is_empty() {
            let Some(slot) = self.free_slots.pop() else { break };
            let Some((id, req)) = self.waiting.pop_front() else { break };
            self.cache.reset(slot);
            let p = req.params;
            let mut sampler = Sampler::new(p.clone(), self.model.cfg.vocab_size);
            if let Some(c) = req.constraint {
                sampler = sampler.with_constraint(c);
            }
            self.running.push(Seq {
                id,
                slot,
                sampler,
                max_tokens: p.max_tokens,
                stop_at_end: p.stop_at_end,
                logprobs: req.logprobs,
                top_logprobs: p.top_logprobs,
                stops: StopMatcher::new(p.stop),
                prompt: req.prompt,
                prefilled: 0,
                next: None,
                prompt_logprobs: req.prompt_logprobs.then(Vec::new),
                decoder: StreamDecoder::new(),
                generated: 0,
            });
        }
    }

    /// One forward pass over every running sequence; returns what happened.
    pub fn step(&mut self) -> Result<Vec<SeqEvent>, BatchError> {
        self.admit();
        let mut events = Vec::new();
        if self.running.is_empty() {
            return Ok(events);
        }
        // (index into running, start, len) per chunk: decode tokens first, then prompt chunks in
        // admission order within the budget.
        let mut plan: Vec<(usize, usize, usize)> = Vec::with_capacity(self.running.len());
        for (i, s) in self.running.iter().enumerate() {
            if s.next.is_some() {
                plan.push((i, 0, 1));
            }
        }
        let mut budget = self.prefill_budget;
        for (i, s) in self.running.iter().enumerate() {
            if s.next.is_none() && budget > 0 {
                let take = (s.prompt.len() - s.prefilled).min(budget);
                budget -= take;
                plan.push((i, s.prefilled, take));
            }
        }
        // Scoring a prompt needs the logits of every position, not only the last.
        let all = plan
            .iter()
            .any(|&(i, _, _)| self.running[i].next.is_none() && self.running[i].prompt_logprobs.is_some());
        let which = if all { LogitsFor::All } else { LogitsFor::Last };
        let decode: Vec<u32> = plan.iter().map(|&(i, _, _)| self.running[i].next.unwrap_or(0)).collect();
        {
            let chunks: Vec<SeqChunk> = plan
                .iter()
                .zip(&decode)
                .map(|(&(i, start, len), tok)| {
                    let s = &self.running[i];
                    let tokens = if s.next.is_some() {
                        std::slice::from_ref(tok)
                    } else {
                        &s.prompt[start..start + len]
                    };
                    SeqChunk { slot: s.slot, tokens }
                })
                .collect();
            self.model.forward_cached(&mut self.cache, &chunks, which, &mut self.logits)?;
        }
        self.stats.steps += 1;
        self.stats.last_batch = plan.len();
        self.stats.last_rows = plan.iter().map(|p| p.2).sum();

        let vocab = self.model.cfg.vocab_size;
        let end = self.tokenizer.special_id(Special::End);
        let mut row = 0;
        let mut finished = Vec::new();
        for &(i, start, len) in &plan {
            let rows = if which == LogitsFor::All { len } else { 1 };
            let first_row = row;
            row += rows;
            let s = &mut self.running[i];
            if s.next.is_none() {
                if let Some(lp) = s.prompt_logprobs.as_mut() {
                    if start == 0 {
                        lp.push(None);
                    }
                    // Row r (position start + r) predicts the prompt token after it.
                    for r in 0..rows {
                        if let Some(&target) = s.prompt.get(start + r + 1) {
                            let l = &self.logits[(first_row + r) * vocab..(first_row + r + 1) * vocab];
                            lp.push(Some(logprob_of(l, target, s.top_logprobs)));
                        }
                    }
                }
                s.prefilled = start + len;
                if s.prefilled < s.prompt.len() {
                    continue;
                }
                if let Some(tokens) = s.prompt_logprobs.take() {
                    events.push(SeqEvent::Prompt { id: s.id, tokens });
                }
                if s.max_tokens == 0 {
                    finished.push((i, FinishReason::Length));
                    continue;
                }
            }
            let last = &self.logits[(first_row + rows - 1) * vocab..(first_row + rows) * vocab];
            self.work.clear();
            self.work.extend_from_slice(last);
            if let Some(reason) = advance(s, &mut self.work, self.tokenizer, end, self.context, &mut events) {
                finished.push((i, reason));
            }
        }
        // Remove from the back so earlier indices stay valid.
        finished.sort_by_key(|&(i, _)| std::cmp::Reverse(i));
        for (i, reason) in finished {
            let mut s = self.running.remove(i);
            if !s.stops.matched() {
                let rest = s.decoder.finish();
                let (emit, _) = s.stops.push(&rest);
                let tail = format!("{emit}{}", s.stops.flush());
                if !tail.is_empty() {
                    events.push(SeqEvent::Text {
                        id: s.id,
                        text: tail,
                        tokens: Vec::new(),
                    });
                }
            }
            events.push(SeqEvent::Finished {
                id: s.id,
                reason,
                prompt_tokens: s.prompt.len(),
                completion_tokens: s.generated,
            });
            self.release(s.slot);
        }
        Ok(events)
    }
}

/// Samples the next token of `s` from its last-position logits and turns it into text.
/// Returns a finish reason when the sequence is done.
fn advance(
    s: &mut Seq,
    logits: &mut [f32],
    tokenizer: &Tokenizer,
    end: u32,
    context: usize,
    events: &mut Vec<SeqEvent>,
) -> Option<FinishReason> {
    let (token, lp) = s.sampler.sample(logits);
    if token == end && s.stop_at_end && s.sampler.may_stop() {
        s.next = None;
        return Some(FinishReason::Stop);
    }
    s.generated += 1;
    s.next = Some(token);
    let tokens = if s.logprobs { vec![lp] } else { Vec::new() };
    let piece = s.decoder.push(tokenizer, token);
    let (text, hit) = s.stops.push(&piece);
    if !text.is_empty() || !tokens.is_empty() {
        events.push(SeqEvent::Text { id: s.id, text, tokens });
    }
    if hit {
        return Some(FinishReason::Stop);
    }
    if s.generated >= s.max_tokens || s.prompt.len() + s.generated >= context {
        return Some(FinishReason::Length);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogpt_engine::ModelConfig;

    pub(crate) fn tiny() -> (Model<f32>, Tokenizer) {
        let texts: Vec<String> = (0..60)
            .map(|i| format!("The quick brown fox {i} jumps over the lazy dog. Ünïcödé {i}!"))
            .collect();
        let tok = Tokenizer::train(texts.into_iter(), 300).unwrap();
        let cfg = ModelConfig {
            vocab_size: tok.vocab_size(),
            d_model: 32,
            n_layers: 2,
            n_heads: 2,
            n_kv_heads: 1,
            ffn_hidden: 64,
            max_seq_len: 64,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
            tie_embeddings: false,
        };
        (Model::new(cfg, 0.5, 7).unwrap(), tok)
    }

    fn req(prompt: &[u32], max_tokens: usize, seed: u64) -> BatchRequest {
        BatchRequest {
            prompt: prompt.to_vec(),
            params: SamplingParams {
                max_tokens,
                seed,
                stop_at_end: false,
                ..SamplingParams::default()
            },
            logprobs: false,
            prompt_logprobs: false,
            constraint: None,
        }
    }

    /// Runs until idle; returns per-sequence (text, tokens generated, finish reason).
    fn drain(engine: &mut BatchEngine, n: usize) -> Vec<(String, usize, FinishReason)> {
        let mut out = vec![(String::new(), 0, FinishReason::Stop); n];
        let mut guard = 0;
        while !engine.is_idle() {
            for ev in engine.step().unwrap() {
                match ev {
                    SeqEvent::Text { id, text, .. } => out[id as usize].0.push_str(&text),
                    SeqEvent::Finished {
                        id,
                        reason,
                        completion_tokens,
                        ..
                    } => {
                        out[id as usize].1 = completion_tokens;
                        out[id as usize].2 = reason;
                    }
                    SeqEvent::Prompt { .. } => {}
                }
            }
            guard += 1;
            assert!(guard < 10_000);
        }
        out
    }

    #[test]
    fn batched_generation_matches_one_at_a_time() {
        let (model, tok) = tiny();
        let prompts: Vec<Vec<u32>> = ["The quick", "brown fox 3 jumps over", "lazy", "Ünïcödé 7 and more text here"]
            .iter()
            .map(|p| tok.encode(p))
            .collect();
        let mut alone = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            let mut e = BatchEngine::new(&model, &tok, 1, 1000);
            e.add(req(p, 12, i as u64)).unwrap();
            alone.push(drain(&mut e, 1).remove(0));
        }
        // Two slots and a prefill budget of 3 tokens: sequences wait for a slot, prefill in
        // chunks alongside others' decoding, and join as others finish.
        let mut e = BatchEngine::new(&model, &tok, 2, 3);
        for (i, p) in prompts.iter().enumerate() {
            e.add(req(p, 12, i as u64)).unwrap();
        }
        let together = drain(&mut e, prompts.len());
        assert_eq!(alone, together);
        assert!(together.iter().all(|t| t.1 == 12 && t.2 == FinishReason::Length));
        assert_eq!(e.free_slots.len(), 2);
        assert!(e.stats().steps > 12);
    }

    #[test]
    fn stop_sequences_cut_the_text() {
        let (model, tok) = tiny();
        let p = tok.encode("The quick brown");
        let mut e = BatchEngine::new(&model, &tok, 4, 64);
        e.add(req(&p, 10, 1)).unwrap();
        let full = drain(&mut e, 1).remove(0);
        assert_eq!((full.1, full.2), (10, FinishReason::Length));
        let chars: Vec<char> = full.0.chars().collect();
        assert!(chars.len() >= 4, "{full:?}");
        let stop: String = chars[2..4].iter().collect();
        let mut r = req(&p, 10, 1);
        r.params.stop = vec![stop.clone()];
        let mut e = BatchEngine::new(&model, &tok, 4, 64);
        e.add(r).unwrap();
        let cut = drain(&mut e, 1).remove(0);
        assert_eq!(cut.2, FinishReason::Stop);
        assert_eq!(cut.0, full.0[..full.0.find(&stop).unwrap()]);
    }

    #[test]
    fn cancel_frees_the_slot_for_the_next_request() {
        let (model, tok) = tiny();
        let p = tok.encode("The quick brown");
        let mut e = BatchEngine::new(&model, &tok, 1, 64);
        let a = e.add(req(&p, 40, 1)).unwrap();
        let b = e.add(req(&p, 3, 2)).unwrap();
        e.step().unwrap();
        assert_eq!((e.stats().running, e.stats().waiting), (1, 1));
        e.cancel(a);
        e.step().unwrap();
        assert_eq!((e.stats().running, e.stats().waiting), (1, 0));
        assert_eq!(e.running[0].id, b);
        assert!(matches!(e.add(req(&p, 64, 1)), Err(BatchError::TooLong { .. })));
        assert!(matches!(e.add(req(&[], 1, 1)), Err(BatchError::EmptyPrompt)));
        assert!(matches!(e.add(req(&[100_000], 1, 1)), Err(BatchError::BadToken { .. })));
    }

    #[test]
    fn prompt_logprobs_match_a_full_forward() {
        let (model, tok) = tiny();
        let p = tok.encode("The quick brown fox jumps");
        let mut r = req(&p, 0, 1);
        r.prompt_logprobs = true;
        r.params.top_logprobs = 2;
        // A prefill budget of 2 splits the prompt across steps; the result must not change.
        let mut e = BatchEngine::new(&model, &tok, 2, 2);
        e.add(r).unwrap();
        e.add(req(&p, 5, 3)).unwrap();
        let mut got = None;
        while !e.is_idle() {
            for ev in e.step().unwrap() {
                if let SeqEvent::Prompt { tokens, .. } = ev {
                    got = Some(tokens);
                }
            }
        }
        let got = got.unwrap();
        assert_eq!(got.len(), p.len());
        assert_eq!(got[0], None);
        let mut cache = KvCache::new(&model.cfg, 1, 64);
        let mut logits = Vec::new();
        model
            .forward_cached(&mut cache, &[SeqChunk { slot: 0, tokens: &p }], LogitsFor::All, &mut logits)
            .unwrap();
        let v = model.cfg.vocab_size;
        for i in 1..p.len() {
            let want = logprob_of(&logits[(i - 1) * v..i * v], p[i], 2);
            let have = got[i].as_ref().unwrap();
            assert!((have.logprob - want.logprob).abs() < 1e-4, "{i}: {have:?} vs {want:?}");
            assert_eq!(have.top.len(), 2);
        }
    }
}
