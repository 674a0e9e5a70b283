//! The real [`Backend`]: a model folder loaded with ferrogpt-infer and a scheduler thread that
//! drives its [`BatchDecoder`] — new requests join the running batch between steps, and a
//! request whose client has gone (its event receiver dropped) is cancelled before the next step.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use ferrogpt_infer::{
    render_chat, text_prompt, BatchDecoder, ChatMessage, DecoderConfig, GenerationEvent, GenerationRequest, InferError, LocalModel,
    PromptTokens, SeqId,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::backend::{Backend, BackendError, BackendStats, GenEvent};
use crate::error::ServeError;

/// Prompt tokens prefilled per step: large enough that a new request's first token is not
/// delayed by many steps, small enough that running streams keep a steady pace.
const PREFILL_CHUNK: usize = 256;

struct Submit {
    request: GenerationRequest,
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
        let (tx, rx) = channel();
        let stats = Arc::new(Mutex::new(BackendStats::default()));
        let (m, st) = (model.clone(), stats.clone());
        std::thread::Builder::new()
            .name("ferrogpt-scheduler".into())
            .spawn(move || schedule(&m, slots, rx, &st))
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

    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, InferError> {
        render_chat(self.model.tokenizer(), messages)
    }

    fn text_prompt(&self, text: &str) -> PromptTokens {
        text_prompt(self.model.tokenizer(), text)
    }

    fn token_bytes(&self, token: u32) -> Vec<u8> {
        self.model.tokenizer().token_bytes(token).to_vec()
    }

    fn submit(&self, request: GenerationRequest, tag: usize, events: UnboundedSender<(usize, GenEvent)>) -> Result<(), BackendError> {
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
    events: UnboundedSender<(usize, GenEvent)>,
}

/// The scheduler loop: blocks while idle, otherwise takes new requests, drops those whose
/// clients left, and runs one batched step.
fn schedule(model: &LocalModel, slots: usize, rx: Receiver<Submit>, stats: &Mutex<BackendStats>) {
    let mut decoder = BatchDecoder::new(
        model,
        DecoderConfig {
            slots,
            max_sequence_len: model.context_length(),
            prefill_chunk: PREFILL_CHUNK,
        },
    );
    let mut routes: HashMap<SeqId, Route> = HashMap::new();
    loop {
        let mut incoming = Vec::new();
        if decoder.is_idle() {
            match rx.recv() {
                Ok(s) => incoming.push(s),
                Err(_) => return, // the backend was dropped: the server is shutting down
            }
        }
        incoming.extend(rx.try_iter());
        for s in incoming {
            match decoder.add(s.request) {
                Ok(id) => {
                    routes.insert(
                        id,
                        Route {
                            tag: s.tag,
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
            decoder.cancel(id);
            routes.remove(&id);
        }
        if decoder.is_idle() {
            continue;
        }
        let events = match decoder.step() {
            Ok(ev) => ev,
            Err(e) => {
                tracing::error!("batch step failed: {e}");
                for (id, r) in routes.drain() {
                    decoder.cancel(id);
                    let _ = r.events.send((r.tag, GenEvent::Failed(e.to_string())));
                }
                continue;
            }
        };
        {
            let s = decoder.stats();
            let mut st = stats.lock().unwrap_or_else(|p| p.into_inner());
            *st = BackendStats {
                waiting: s.waiting,
                running: s.running,
                last_batch_size: s.last_batch,
                steps: s.steps,
            };
        }
        for (id, event) in events {
            let done = matches!(event, GenerationEvent::Finished { .. });
            if let Some(r) = routes.get(&id) {
                if r.events.send((r.tag, GenEvent::Sequence(event))).is_err() {
                    decoder.cancel(id);
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
