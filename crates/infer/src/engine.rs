//! The batch decoder: the one generation loop of ferrogpt. The server's scheduler drives it
//! step by step; [`LocalModel::complete`] (one streamed request) and [`LocalModel::generate`]
//! (a batch run to completion: capability measurement, `local:` evals, the speedrun's samples,
//! RL rollouts) run it to the end.
//!
//! A [`BatchDecoder`] owns one [`KvCache`] with a fixed number of slots. Requests wait until a
//! slot is free; every [`BatchDecoder::step`] makes exactly one `forward_cached` call that mixes
//! one decode token for each running sequence with chunks of newly admitted prompts (chunked
//! prefill, bounded per step so a long prompt does not stall everyone else's next token). A
//! sequence finishes on `<|end|>`, a stop sequence, its token budget or the end of its slot; a
//! finished or cancelled sequence frees its slot at once, so a waiting request joins on the
//! next step.
//!
//! Each sequence carries its own state: a [`Sampler`] with its own seed (penalties, bias,
//! temperature, top-k/p, the JSON-mode constraint), a [`StopMatcher`], a streaming
//! detokenizer, its token budget, and the logprobs it was asked for.
//!
//! Admission is fair between groups (the server passes the API key): free slots go
//! round-robin over the groups with requests waiting, in arrival order within a group, so one
//! group's flood of sequences does not hold back another group's single request.
//!
//! Numerics: the engine runs a forward pass of at most [`ferrogpt_engine::matmul::SMALL_ROWS`]
//! rows (and an output head of at most that many rows) with its matrix-vector kernel, which
//! computes each row on its own, so there a sequence's logits are bitwise those it gets alone.
//! Larger passes go through `gemm`, which sums in another order — and for some shapes in an
//! order that depends on the number of rows: the same sequence's logits then move by float
//! rounding (about 1e-5 relative), so a sampled token can flip where two candidates are within
//! rounding of each other (see the tests).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ferrogpt_engine::kv::{LogitsFor, SeqChunk};
use ferrogpt_engine::KvCache;
use ferrogpt_tokenizer::{Special, StreamDecoder};

use crate::json_mode::JsonConstraint;
use crate::sample::{logprob_of, ResponseFormat, Sampler, SamplingParams, TokenLogprob};
use crate::stop::StopMatcher;
use crate::{InferError, LocalModel};

/// Identifies a sequence for its whole life (never reused within one decoder).
pub type SeqId = u64;

/// Why generation ended, in OpenAI's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `<|end|>` or a stop sequence.
    Stop,
    /// The token budget (`max_tokens`) or the context length.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// One sequence to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationRequest {
    /// Token ids, under the BOS policy of [`crate::prompt`].
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// Report the logprob of every prompt token (scoring, `echo`).
    pub prompt_logprobs: bool,
    /// Who asked, for fair admission (the server passes the API key's id).
    pub group: u64,
}

impl GenerationRequest {
    /// A request of group 0 without prompt logprobs.
    pub fn new(prompt: Vec<u32>, params: SamplingParams) -> Self {
        GenerationRequest {
            prompt,
            params,
            prompt_logprobs: false,
            group: 0,
        }
    }
}

/// What happened to a sequence during a step.
#[derive(Clone, Debug, PartialEq)]
pub enum GenerationEvent {
    /// Logprobs of all prompt tokens once prefill is done (only when asked for); the first is
    /// `None` because nothing predicts it.
    Prompt(Vec<Option<TokenLogprob>>),
    /// A sampled token (`tokens`, empty for the text released when the sequence ends) and the
    /// text that became final: possibly empty while a multi-byte character or a possible stop
    /// sequence is held back. `logprobs` has the tokens' logprobs when they were asked for.
    Text {
        text: String,
        tokens: Vec<u32>,
        logprobs: Vec<TokenLogprob>,
    },
    /// The last event of a sequence.
    Finished {
        reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
}

/// Sizes of a [`BatchDecoder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Most sequences decoded together.
    pub slots: usize,
    /// KV-cache positions per slot (prompt plus completion); at most the model's context.
    pub max_sequence_len: usize,
    /// Most prompt tokens prefilled per step.
    pub prefill_chunk: usize,
}

/// Load figures for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderStats {
    pub waiting: usize,
    pub running: usize,
    /// Sequences in the latest forward pass.
    pub last_batch: usize,
    /// Rows (tokens) in the latest forward pass.
    pub last_rows: usize,
    pub steps: u64,
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
    budget: usize,
    stop_at_end: bool,
    logprobs: bool,
    top_logprobs: usize,
    prompt_logprobs: Option<Vec<Option<TokenLogprob>>>,
    detokenizer: StreamDecoder,
    stops: StopMatcher,
    generated: usize,
}

/// The requests of one group waiting for a slot.
struct GroupQueue {
    group: u64,
    /// Admission count when this group last got a slot (0: not since it started waiting).
    last_admitted: u64,
    queue: VecDeque<(SeqId, GenerationRequest)>,
}

pub struct BatchDecoder<'m> {
    model: &'m LocalModel,
    cache: KvCache<f32>,
    max_len: usize,
    prefill_chunk: usize,
    /// Groups with waiting requests, in the order they started waiting.
    waiting: Vec<GroupQueue>,
    admissions: u64,
    /// Running sequences in admission order (earlier prompts prefill first).
    running: Vec<Seq>,
    free_slots: Vec<usize>,
    next_id: SeqId,
    logits: Vec<f32>,
    work: Vec<f32>,
    /// Bytes of every token for the JSON grammar, built on the first JSON-mode request.
    json_vocab: Option<Arc<Vec<Vec<u8>>>>,
    stats: DecoderStats,
}

impl<'m> BatchDecoder<'m> {
    pub fn new(model: &'m LocalModel, config: DecoderConfig) -> Self {
        let slots = config.slots.max(1);
        let max_len = config.max_sequence_len.clamp(1, model.context_length().max(1));
        BatchDecoder {
            model,
            cache: KvCache::new(model.config(), slots, max_len),
            max_len,
            prefill_chunk: config.prefill_chunk.max(1),
            waiting: Vec::new(),
            admissions: 0,
            running: Vec::with_capacity(slots),
            free_slots: (0..slots).rev().collect(),
            next_id: 0,
            logits: Vec::new(),
            work: Vec::new(),
            json_vocab: None,
            stats: DecoderStats::default(),
        }
    }

    /// Checks and queues a request; it joins the batch on a later step once a slot is free.
    /// Its completion is cut at the end of its slot (finish reason `Length`).
    pub fn add(&mut self, request: GenerationRequest) -> Result<SeqId, InferError> {
        if request.prompt.is_empty() {
            return Err(InferError::EmptyPrompt);
        }
        request.params.validate()?;
        let vocab = self.model.config().vocab_size;
        request.params.check_vocabulary(vocab)?;
        if let Some(&token) = request.prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(InferError::BadToken { token, vocab });
        }
        let wants_tokens = request.params.max_tokens != Some(0);
        if request.prompt.len() + usize::from(wants_tokens) > self.max_len {
            return Err(InferError::ContextLength {
                prompt: request.prompt.len(),
                context: self.max_len,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        match self.waiting.iter_mut().find(|g| g.group == request.group) {
            Some(g) => g.queue.push_back((id, request)),
            None => self.waiting.push(GroupQueue {
                group: request.group,
                last_admitted: 0,
                queue: VecDeque::from([(id, request)]),
            }),
        }
        Ok(id)
    }

    /// Drops a sequence, waiting or running; its slot is free for the next step.
    pub fn cancel(&mut self, id: SeqId) {
        for g in &mut self.waiting {
            g.queue.retain(|(w, _)| *w != id);
        }
        self.waiting.retain(|g| !g.queue.is_empty());
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            let seq = self.running.remove(i);
            self.release(seq.slot);
        }
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Sequences waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.iter().map(|g| g.queue.len()).sum()
    }

    /// Sequences of `group` waiting for a slot.
    pub fn waiting_in_group(&self, group: u64) -> usize {
        self.waiting.iter().find(|g| g.group == group).map_or(0, |g| g.queue.len())
    }

    pub fn stats(&self) -> DecoderStats {
        DecoderStats {
            waiting: self.waiting(),
            running: self.running.len(),
            ..self.stats
        }
    }

    fn release(&mut self, slot: usize) {
        self.cache.reset(slot);
        self.free_slots.push(slot);
    }

    /// The next request to admit: from the group that has waited longest since its last
    /// admission (a group new to the queue first), the oldest of that group.
    fn next_waiting(&mut self) -> Option<(SeqId, GenerationRequest)> {
        let pick = self
            .waiting
            .iter()
            .enumerate()
            .min_by_key(|(i, g)| (g.last_admitted, *i))
            .map(|(i, _)| i)?;
        self.admissions += 1;
        let group = &mut self.waiting[pick];
        group.last_admitted = self.admissions;
        let next = group.queue.pop_front();
        if group.queue.is_empty() {
            self.waiting.remove(pick);
        }
        next
    }

    fn json_vocab(&mut self) -> Arc<Vec<Vec<u8>>> {
        let tok = self.model.tokenizer();
        let vocab = self.model.config().vocab_size as u32;
        self.json_vocab
            .get_or_insert_with(|| {
                // Special tokens are markup, never JSON text: empty bytes exclude them.
                Arc::new(
                    (0..vocab)
                        .map(|id| {
                            if tok.is_special(id) {
                                Vec::new()
                            } else {
                                tok.token_bytes(id).to_vec()
                            }
                        })
                        .collect(),
                )
            })
            .clone()
    }

    fn admit(&mut self) {
        while !self.free_slots.is_empty() {
            let Some((id, req)) = self.next_waiting() else { break };
            let Some(slot) = self.free_slots.pop() else { break };
            self.cache.reset(slot);
            let p = req.params;
            let room = self.max_len - req.prompt.len();
            let budget = p.max_tokens.map_or(room, |m| m.min(room));
            let end = self.model.tokenizer().special_id(Special::End);
            let mut sampler = Sampler::new(p.clone(), self.model.config().vocab_size);
            if p.response_format == ResponseFormat::JsonObject {
                sampler = sampler.with_constraint(Box::new(JsonConstraint::new(self.json_vocab(), end, budget)));
            }
            self.running.push(Seq {
                id,
                slot,
                sampler,
                budget,
                stop_at_end: p.stop_at_end,
                logprobs: p.logprobs.is_some(),
                top_logprobs: p.logprobs.unwrap_or(0),
                stops: StopMatcher::new(p.stop),
                prompt: req.prompt,
                prefilled: 0,
                next: None,
                prompt_logprobs: req.prompt_logprobs.then(Vec::new),
                detokenizer: StreamDecoder::new(),
                generated: 0,
            });
        }
    }

    /// One forward pass over every running sequence; returns what happened to each.
    pub fn step(&mut self) -> Result<Vec<(SeqId, GenerationEvent)>, InferError> {
        self.admit();
        let mut events = Vec::new();
        if self.running.is_empty() {
            return Ok(events);
        }
        // (index into running, start, len) per chunk: decode tokens first, then prompt chunks in
        // admission order within the prefill budget.
        let mut plan: Vec<(usize, usize, usize)> = Vec::with_capacity(self.running.len());
        for (i, s) in self.running.iter().enumerate() {
            if s.next.is_some() {
                plan.push((i, 0, 1));
            }
        }
        let mut budget = self.prefill_chunk;
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
            self.model
                .model()
                .forward_cached(&mut self.cache, &chunks, which, &mut self.logits)?;
        }
        self.stats.steps += 1;
        self.stats.last_batch = plan.len();
        self.stats.last_rows = plan.iter().map(|p| p.2).sum();

        let model: &'m LocalModel = self.model;
        let vocab = model.config().vocab_size;
        let tokenizer = model.tokenizer();
        let end = tokenizer.special_id(Special::End);
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
                    events.push((s.id, GenerationEvent::Prompt(tokens)));
                }
                if s.budget == 0 {
                    finished.push((i, FinishReason::Length));
                    continue;
                }
            }
            let last = &self.logits[(first_row + rows - 1) * vocab..(first_row + rows) * vocab];
            self.work.clear();
            self.work.extend_from_slice(last);
            if let Some(reason) = advance(s, &mut self.work, tokenizer, end, &mut events) {
                finished.push((i, reason));
            }
        }
        // Remove from the back so earlier indices stay valid.
        finished.sort_by_key(|&(i, _)| std::cmp::Reverse(i));
        for (i, reason) in finished {
            let mut s = self.running.remove(i);
            if !s.stops.matched() {
                let rest = s.detokenizer.finish();
                let (emit, _) = s.stops.push(&rest);
                let tail = format!("{emit}{}", s.stops.flush());
                if !tail.is_empty() {
                    events.push((
                        s.id,
                        GenerationEvent::Text {
                            text: tail,
                            tokens: Vec::new(),
                            logprobs: Vec::new(),
                        },
                    ));
                }
            }
            events.push((
                s.id,
                GenerationEvent::Finished {
                    reason,
                    prompt_tokens: s.prompt.len(),
                    completion_tokens: s.generated,
                },
            ));
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
    tokenizer: &ferrogpt_tokenizer::Tokenizer,
    end: u32,
    events: &mut Vec<(SeqId, GenerationEvent)>,
) -> Option<FinishReason> {
    let (token, lp) = s.sampler.sample(logits);
    if token == end && s.stop_at_end && s.sampler.may_stop() {
        s.next = None;
        return Some(FinishReason::Stop);
    }
    s.generated += 1;
    s.next = Some(token);
    let piece = s.detokenizer.push(tokenizer, token);
    let (text, hit) = s.stops.push(&piece);
    events.push((
        s.id,
        GenerationEvent::Text {
            text,
            tokens: vec![token],
            logprobs: if s.logprobs { vec![lp] } else { Vec::new() },
        },
    ));
    if hit {
        return Some(FinishReason::Stop);
    }
    (s.generated >= s.budget).then_some(FinishReason::Length)
}

/// The whole result of one sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub text: String,
    /// Sampled tokens (without a final `<|end|>`).
    pub tokens: Vec<u32>,
    /// Per sampled token, when `logprobs` was asked for.
    pub logprobs: Vec<TokenLogprob>,
    /// Per prompt token, when `prompt_logprobs` was asked for.
    pub prompt_logprobs: Vec<Option<TokenLogprob>>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// Runs `decoder` until idle, gathering each sequence's events into its [`Completion`];
/// `on_text(index, text)` sees the text as it becomes final. `ids[i]` is the sequence of
/// result `i`.
pub(crate) fn run_to_end(
    decoder: &mut BatchDecoder,
    ids: &[SeqId],
    on_text: &mut dyn FnMut(usize, &str),
) -> Result<Vec<Completion>, InferError> {
    let index: HashMap<SeqId, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut out: Vec<Completion> = ids
        .iter()
        .map(|_| Completion {
            text: String::new(),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            prompt_logprobs: Vec::new(),
            finish_reason: FinishReason::Length,
            prompt_tokens: 0,
            completion_tokens: 0,
        })
        .collect();
    while !decoder.is_idle() {
        for (id, event) in decoder.step()? {
            let Some(&i) = index.get(&id) else { continue };
            let c = &mut out[i];
            match event {
                GenerationEvent::Prompt(lps) => c.prompt_logprobs = lps,
                GenerationEvent::Text { text, tokens, logprobs } => {
                    if !text.is_empty() {
                        on_text(i, &text);
                    }
                    c.text.push_str(&text);
                    c.tokens.extend(tokens);
                    c.logprobs.extend(logprobs);
                }
                GenerationEvent::Finished {
                    reason,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    c.finish_reason = reason;
                    c.prompt_tokens = prompt_tokens;
                    c.completion_tokens = completion_tokens;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogpt_engine::{Model, ModelConfig};
    use ferrogpt_tokenizer::Tokenizer;

    fn tiny() -> LocalModel {
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
            num_labels: None,
        };
        LocalModel::from_parts(Model::new(cfg, 0.5, 7).unwrap(), tok, "tiny".into())
    }

    fn config(slots: usize, prefill_chunk: usize) -> DecoderConfig {
        DecoderConfig {
            slots,
            max_sequence_len: 64,
            prefill_chunk,
        }
    }

    fn req(prompt: &[u32], max_tokens: usize, seed: u64) -> GenerationRequest {
        GenerationRequest::new(
            prompt.to_vec(),
            SamplingParams {
                max_tokens: Some(max_tokens),
                seed: Some(seed),
                stop_at_end: false,
                ..SamplingParams::default()
            },
        )
    }

    /// Runs until idle; returns per-sequence (text, tokens, finish reason), by id.
    fn drain(decoder: &mut BatchDecoder, n: usize) -> Vec<(String, Vec<u32>, FinishReason)> {
        let ids: Vec<SeqId> = (0..n as u64).collect();
        run_to_end(decoder, &ids, &mut |_, _| {})
            .unwrap()
            .into_iter()
            .map(|c| (c.text, c.tokens, c.finish_reason))
            .collect()
    }

    fn prompts(model: &LocalModel, texts: &[&str]) -> Vec<Vec<u32>> {
        texts.iter().map(|p| crate::text_prompt(model.tokenizer(), p).ids).collect()
    }

    /// Steps of at most `SMALL_ROWS` rows run the engine's matrix-vector kernel, which computes
    /// every row alone: a sequence's tokens are then bitwise those it gets alone, greedy or
    /// seeded, while it waits for a slot, prefills in chunks beside others' decoding and joins
    /// as others finish.
    #[test]
    fn batched_generation_matches_one_at_a_time() {
        let model = tiny();
        let prompts = prompts(&model, &["The", "brown fox 3 jumps over", "lazy", "Ünïcödé 7 and more text here"]);
        for temperature in [0.0, 1.0] {
            let request = |i: usize| {
                let mut r = req(&prompts[i], 12, i as u64);
                r.params.temperature = temperature;
                r
            };
            let mut alone = Vec::new();
            for i in 0..prompts.len() {
                let mut d = BatchDecoder::new(&model, config(1, 1000));
                d.add(request(i)).unwrap();
                alone.push(drain(&mut d, 1).remove(0));
            }
            // Two slots and a prefill budget of 2: at most 4 rows per step.
            let mut d = BatchDecoder::new(&model, config(2, 2));
            for i in 0..prompts.len() {
                d.add(request(i)).unwrap();
            }
            let together = drain(&mut d, prompts.len());
            assert_eq!(alone, together, "temperature {temperature}");
            assert!(together.iter().all(|t| t.1.len() == 12 && t.2 == FinishReason::Length));
            assert_eq!(d.free_slots.len(), 2);
            assert!(d.stats().steps > 12);
            assert!(d.stats().last_rows <= ferrogpt_engine::matmul::SMALL_ROWS);
        }
    }

    /// Larger steps go through `gemm`, whose summation order differs from the matrix-vector
    /// kernel's (here: one output row alone, eight in the batch) and, for some shapes, from its
    /// own at other row counts: the same sequence's logits then differ by float rounding, so
    /// equality holds only up to a tolerance, and a sampled token can flip where two candidates
    /// are within rounding of each other.
    #[test]
    fn larger_batches_round_differently_but_agree_closely() {
        let model = tiny();
        let m = model.model();
        let prompt = crate::text_prompt(model.tokenizer(), "The quick brown fox jumps").ids;
        let others = prompts(
            &model,
            &["lazy dog", "Ünïcödé 3", "over the", "fox 12", "brown", "quick 9", "The lazy"],
        );
        let logits_of = |with: &[Vec<u32>]| {
            let mut cache = KvCache::<f32>::new(&m.cfg, 1 + with.len(), 64);
            let mut chunks = vec![SeqChunk { slot: 0, tokens: &prompt }];
            chunks.extend(with.iter().enumerate().map(|(i, p)| SeqChunk { slot: i + 1, tokens: p }));
            let mut logits = Vec::new();
            m.forward_cached(&mut cache, &chunks, LogitsFor::Last, &mut logits).unwrap();
            logits.truncate(m.cfg.vocab_size);
            logits
        };
        let alone = logits_of(&[]);
        let batched = logits_of(&others);
        let max_diff = alone.iter().zip(&batched).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let scale = alone.iter().fold(0.0f32, |a, b| a.max(b.abs()));
        assert!(max_diff <= 1e-5 * scale.max(1.0), "{max_diff} of {scale}");
        assert_eq!(crate::sample::argmax(&alone), crate::sample::argmax(&batched));
    }

    #[test]
    fn stop_sequences_cut_the_text() {
        let model = tiny();
        let p = crate::text_prompt(model.tokenizer(), "The quick brown").ids;
        let mut d = BatchDecoder::new(&model, config(4, 64));
        d.add(req(&p, 10, 1)).unwrap();
        let full = drain(&mut d, 1).remove(0);
        assert_eq!((full.1.len(), full.2), (10, FinishReason::Length));
        let chars: Vec<char> = full.0.chars().collect();
        assert!(chars.len() >= 4, "{full:?}");
        let stop: String = chars[2..4].iter().collect();
        let mut r = req(&p, 10, 1);
        r.params.stop = vec![stop.clone()];
        let mut d = BatchDecoder::new(&model, config(4, 64));
        d.add(r).unwrap();
        let cut = drain(&mut d, 1).remove(0);
        assert_eq!(cut.2, FinishReason::Stop);
        assert_eq!(cut.0, full.0[..full.0.find(&stop).unwrap()]);
    }

    #[test]
    fn cancel_frees_the_slot_and_bad_requests_are_refused() {
        let model = tiny();
        let p = crate::text_prompt(model.tokenizer(), "The quick brown").ids;
        let mut d = BatchDecoder::new(&model, config(1, 64));
        let a = d.add(req(&p, 40, 1)).unwrap();
        let b = d.add(req(&p, 3, 2)).unwrap();
        d.step().unwrap();
        assert_eq!((d.stats().running, d.stats().waiting), (1, 1));
        d.cancel(a);
        d.step().unwrap();
        assert_eq!((d.stats().running, d.stats().waiting), (1, 0));
        assert_eq!(d.running[0].id, b);
        // Past the end of the slot a completion is cut short; a prompt that fills it is refused.
        let long = vec![p[1]; 64];
        assert!(matches!(
            d.add(req(&long, 1, 1)),
            Err(InferError::ContextLength { prompt: 64, context: 64 })
        ));
        assert!(d.add(req(&long, 0, 1)).is_ok(), "scoring a full context is fine");
        assert!(matches!(d.add(req(&[], 1, 1)), Err(InferError::EmptyPrompt)));
        assert!(matches!(d.add(req(&[100_000], 1, 1)), Err(InferError::BadToken { .. })));
        let mut r = req(&p, 1, 1);
        r.params.logit_bias.insert(100_000, 1.0);
        assert!(matches!(d.add(r), Err(InferError::Request(e)) if e.param == "logit_bias"));
    }

    #[test]
    fn completions_are_cut_at_the_end_of_the_slot() {
        let model = tiny();
        let mut d = BatchDecoder::new(&model, config(1, 64));
        d.add(req(&[5; 60], 100, 1)).unwrap();
        let (_, tokens, reason) = drain(&mut d, 1).remove(0);
        assert_eq!((tokens.len(), reason), (4, FinishReason::Length));
    }

    #[test]
    fn prompt_logprobs_match_a_full_forward() {
        let model = tiny();
        let p = crate::text_prompt(model.tokenizer(), "The quick brown fox jumps").ids;
        let mut r = req(&p, 0, 1);
        r.prompt_logprobs = true;
        r.params.logprobs = Some(2);
        // A prefill budget of 2 splits the prompt across steps; the result must not change.
        let mut d = BatchDecoder::new(&model, config(2, 2));
        d.add(r).unwrap();
        d.add(req(&p, 5, 3)).unwrap();
        let got = run_to_end(&mut d, &[0], &mut |_, _| {}).unwrap().remove(0).prompt_logprobs;
        assert_eq!(got.len(), p.len());
        assert_eq!(got[0], None);
        let m = model.model();
        let mut cache = KvCache::new(&m.cfg, 1, 64);
        let mut logits = Vec::new();
        m.forward_cached(&mut cache, &[SeqChunk { slot: 0, tokens: &p }], LogitsFor::All, &mut logits)
            .unwrap();
        let v = m.cfg.vocab_size;
        for i in 1..p.len() {
            let want = logprob_of(&logits[(i - 1) * v..i * v], p[i], 2);
            let have = got[i].as_ref().unwrap();
            assert!((have.logprob - want.logprob).abs() < 1e-4, "{i}: {have:?} vs {want:?}");
            assert_eq!(have.top.len(), 2);
        }
    }

    /// Group 1 floods the queue with 100 sequences before group 2 sends one: group 2's
    /// sequence still gets the second slot, and when slots free up later the groups alternate.
    #[test]
    fn admission_is_round_robin_over_groups() {
        let model = tiny();
        let p = crate::text_prompt(model.tokenizer(), "The").ids;
        let mut d = BatchDecoder::new(&model, config(4, 64));
        let grouped = |group: u64, max_tokens: usize| GenerationRequest {
            group,
            ..req(&p, max_tokens, group)
        };
        let flood: Vec<SeqId> = (0..100).map(|_| d.add(grouped(1, 2)).unwrap()).collect();
        let single = d.add(grouped(2, 2)).unwrap();
        assert_eq!((d.waiting(), d.waiting_in_group(1), d.waiting_in_group(2)), (101, 100, 1));
        d.step().unwrap();
        let running: Vec<SeqId> = d.running.iter().map(|s| s.id).collect();
        assert_eq!(running, [flood[0], single, flood[1], flood[2]]);
        assert_eq!(d.waiting(), 97);

        // Later arrivals: group 3 sends two while group 1 still has 97 waiting; as slots free
        // up, group 3's join one after another with group 1's in between.
        let late: Vec<SeqId> = (0..2).map(|_| d.add(grouped(3, 2)).unwrap()).collect();
        let mut order = Vec::new();
        while d.waiting_in_group(3) > 0 {
            let before: Vec<SeqId> = d.running.iter().map(|s| s.id).collect();
            d.step().unwrap();
            order.extend(d.running.iter().map(|s| s.id).filter(|id| !before.contains(id)));
        }
        let pos = |id: SeqId| order.iter().position(|&x| x == id).unwrap();
        assert_eq!(pos(late[0]), 0, "{order:?}");
        assert_eq!(pos(late[1]), 2, "{order:?}");
        assert_eq!(order[1], flood[3]);
    }

    #[test]
    fn json_mode_yields_one_json_object() {
        let model = tiny();
        let p = crate::text_prompt(model.tokenizer(), "The quick").ids;
        for (seed, max_tokens) in [(1, 6), (2, 15), (3, 40)] {
            let mut r = req(&p, max_tokens, seed);
            r.params.temperature = 1.5;
            r.params.stop_at_end = true;
            r.params.response_format = ResponseFormat::JsonObject;
            let mut d = BatchDecoder::new(&model, config(1, 64));
            d.add(r).unwrap();
            let (text, _, _) = drain(&mut d, 1).remove(0);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(v.is_object(), "{text}");
        }
    }
}
