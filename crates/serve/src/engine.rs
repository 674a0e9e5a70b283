//! The real [`Backend`]: a model folder loaded with ferrogpt-infer and a scheduler thread that
//! runs a [`BatchEngine`] — new requests join the running batch between steps, and a request
//! whose client has gone (its event receiver dropped) is cancelled before the next step.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use ferrogpt_infer::{render_chat, LocalModel, SamplingParams, TokenConstraint};
use ferrogpt_tokenizer::Special;
use tokio::sync::mpsc::UnboundedSender;

use crate::backend::{
    Backend, BackendError, BackendStats, ChatMessage, FinishReason, GenEvent, GenRequest, Role, TokenLogprob, TopLogprob,
};
use crate::batch::{BatchEngine, BatchRequest, SeqEvent, SeqId};
use crate::error::ServeError;
use crate::json_mode::JsonConstraint;

/// Prompt tokens prefilled per step: large enough that a new request's first token is not
/// delayed by many steps, small enough that running streams keep a steady pace.
const PREFILL_BUDGET: usize = 256;

struct Submit {
    request: GenRequest,
    tag: usize,
    events: UnboundedSender<(usize, GenEvent)>,
}

pub struct EngineBackend {
    model: Arc<LocalModel>,
    tx: Mutex<Sender<Submit>>,
    stats: Arc<Mutex<BackendStats>>,
}

impl EngineBackend {
    /// Loads `folder` and starts its scheduler with `slots` KV-cache slots.
    pub fn load(folder: &Path, slots: usize) -> Result<Self, ServeError> {
        let model = LocalModel::load(folder).map_err(|e| ServeError::Backend {
            model: folder.display().to_string(),
            message: e.to_string(),
        })?;
        Self::start(Arc::new(model), slots)
    }

    pub fn start(model: Arc<LocalModel>, slots: usize) -> Result<Self, ServeError> {
        let tok = model.tokenizer();
        // Bytes of every token for the JSON grammar; empty for special tokens, which are markup.
        let token_bytes: Vec<Vec<u8>> = (0..model.config().vocab_size as u32)
            .map(|id| {
                if tok.is_special(id) {
                    Vec::new()
                } else {
                    tok.token_bytes(id).to_vec()
                }
            })
            .collect();
        let token_bytes = Arc::new(token_bytes);
        let (tx, rx) = channel();
        let stats = Arc::new(Mutex::new(BackendStats::default()));
        let (m, st) = (model.clone(), stats.clone());
        std::thread::Builder::new()
            .name("ferrogpt-scheduler".into())
            .spawn(move || schedule(&m, slots, &token_bytes, rx, &st))
            .map_err(|e| ServeError::Backend {
                model: model.dir().display().to_string(),
                message: format!("cannot start the scheduler thread: {e}"),
            })?;
        Ok(Self {
            model,
            tx: Mutex::new(tx),
            stats,
        })
    }
}

impl Backend for EngineBackend {
    fn context_length(&self) -> usize {
        self.model.context_length()
    }

    fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    fn chat_prompt(&self, messages: &[ChatMessage]) -> Vec<u32> {
        let msgs: Vec<ferrogpt_infer::ChatMessage> = messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => ferrogpt_infer::Role::System,
                    Role::User => ferrogpt_infer::Role::User,
                    Role::Assistant => ferrogpt_infer::Role::Assistant,
                };
                ferrogpt_infer::ChatMessage::new(role, m.content.clone())
            })
            .collect();
        render_chat(self.model.tokenizer(), &msgs)
    }

    fn encode(&self, text: &str) -> Vec<u32> {
        self.model.tokenizer().encode(text)
    }

    fn submit(&self, request: GenRequest, tag: usize, events: UnboundedSender<(usize, GenEvent)>) -> Result<(), BackendError> {
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Submit { request, tag, events })
            .map_err(|_| BackendError::Stopped)
    }

    fn stats(&self) -> BackendStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Route {
    tag: usize,
    first_prompt_token: u32,
    events: UnboundedSender<(usize, GenEvent)>,
}

fn to_batch_request(r: GenRequest, token_bytes: &Arc<Vec<Vec<u8>>>, end: u32) -> BatchRequest {
    let constraint: Option<Box<dyn TokenConstraint>> = r
        .json_object
        .then(|| Box::new(JsonConstraint::new(token_bytes.clone(), end, r.max_tokens)) as Box<dyn TokenConstraint>);
    BatchRequest {
        params: SamplingParams {
            // OpenAI accepts top_p = 0 and means "only the most likely token".
            temperature: if r.top_p <= 0.0 { 0.0 } else { r.temperature },
            top_p: r.top_p.max(f32::MIN_POSITIVE),
            top_k: None,
            max_tokens: r.max_tokens,
            seed: r.seed.unwrap_or_else(rand::random),
            stop: r.stop,
            presence_penalty: r.presence_penalty,
            frequency_penalty: r.frequency_penalty,
            logit_bias: r.logit_bias.into_iter().collect::<HashMap<_, _>>(),
            stop_at_end: true,
            top_logprobs: r.logprobs.unwrap_or(0),
        },
        logprobs: r.logprobs.is_some(),
        prompt_logprobs: r.prompt_logprobs,
        constraint,
        prompt: r.prompt,
    }
}

fn convert(lp: &ferrogpt_infer::TokenLogprob, tok: &ferrogpt_tokenizer::Tokenizer) -> TokenLogprob {
    let bytes_of = |id: u32| tok.token_bytes(id).to_vec();
    let text_of = |id: u32| String::from_utf8_lossy(tok.token_bytes(id)).into_owned();
    TokenLogprob {
        token: lp.token,
        text: text_of(lp.token),
        bytes: bytes_of(lp.token),
        logprob: Some(lp.logprob),
        top: lp
            .top
            .iter()
            .map(|&(id, l)| TopLogprob {
                text: text_of(id),
                bytes: bytes_of(id),
                logprob: l,
            })
            .collect(),
    }
}

/// The scheduler loop: blocks while idle, otherwise takes new requests, drops those whose
/// clients left, and runs one batched step.
fn schedule(model: &LocalModel, slots: usize, token_bytes: &Arc<Vec<Vec<u8>>>, rx: Receiver<Submit>, stats: &Mutex<BackendStats>) {
    let tok = model.tokenizer();
    let end = tok.special_id(Special::End);
    let mut engine = BatchEngine::new(model.model(), tok, slots, PREFILL_BUDGET);
    let mut routes: HashMap<SeqId, Route> = HashMap::new();
    loop {
        let mut incoming = Vec::new();
        if engine.is_idle() {
            match rx.recv() {
                Ok(s) => incoming.push(s),
                Err(_) => return, // the backend was dropped: the server is shutting down
            }
        }
        incoming.extend(rx.try_iter());
        for s in incoming {
            let first = s.request.prompt.first().copied().unwrap_or(0);
            match engine.add(to_batch_request(s.request, token_bytes, end)) {
                Ok(id) => {
                    routes.insert(
                        id,
                        Route {
                            tag: s.tag,
                            first_prompt_token: first,
                            events: s.events,
                        },
                    );
                }
                Err(e) => {
                    let _ = s.events.send((s.tag, GenEvent::Failed(e.to_string())));
                }
            }
        }
        let gone: Vec<SeqId> = routes.iter().filter(|(_, r)| r.events.is_closed()).map(|(&id, _)| id).collect();
        for id in gone {
            engine.cancel(id);
            routes.remove(&id);
        }
        if engine.is_idle() {
            continue;
        }
        let events = match engine.step() {
            Ok(ev) => ev,
            Err(e) => {
                tracing::error!("batch step failed: {e}");
                for (id, r) in routes.drain() {
                    engine.cancel(id);
                    let _ = r.events.send((r.tag, GenEvent::Failed(e.to_string())));
                }
                continue;
            }
        };
        {
            let s = engine.stats();
            let mut st = stats.lock().unwrap_or_else(|p| p.into_inner());
            *st = BackendStats {
                waiting: s.waiting,
                running: s.running,
                last_batch_size: s.last_batch,
                steps: s.steps,
            };
        }
        for ev in events {
            let (id, out) = match ev {
                SeqEvent::Prompt { id, tokens } => {
                    let first = routes.get(&id).map_or(0, |r| r.first_prompt_token);
                    let list = tokens
                        .iter()
                        .map(|t| match t {
                            Some(lp) => convert(lp, tok),
                            None => TokenLogprob {
                                token: first,
                                text: String::from_utf8_lossy(tok.token_bytes(first)).into_owned(),
                                bytes: tok.token_bytes(first).to_vec(),
                                logprob: None,
                                top: Vec::new(),
                            },
                        })
                        .collect();
                    (id, GenEvent::Prompt(list))
                }
                SeqEvent::Text { id, text, tokens } => (
                    id,
                    GenEvent::Text {
                        text,
                        tokens: tokens.iter().map(|t| convert(t, tok)).collect(),
                    },
                ),
                SeqEvent::Finished {
                    id,
                    reason,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    let finish = match reason {
                        ferrogpt_infer::FinishReason::Stop => FinishReason::Stop,
                        ferrogpt_infer::FinishReason::Length => FinishReason::Length,
                    };
                    (
                        id,
                        GenEvent::Done {
                            finish,
                            prompt_tokens,
                            completion_tokens,
                        },
                    )
                }
            };
            let done = matches!(out, GenEvent::Done { .. });
            if let Some(r) = routes.get(&id) {
                if r.events.send((r.tag, out)).is_err() {
                    engine.cancel(id);
                    routes.remove(&id);
                    continue;
                }
            }
            if done {
                routes.remove(&id);
            }
        }
    }
}
