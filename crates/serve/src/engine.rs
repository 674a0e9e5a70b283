//! The real [`Backend`]: a model folder loaded with ferrogpt-infer and a scheduler thread that
//! drives its [`BatchDecoder`] — new requests join the running batch between steps, and a
//! request whose client has gone (its event receiver dropped) is cancelled before the next step.
//!
//! A panic inside a step (a bug in the engine, the decoder or a sampler) must not leave the
//! model silently dead: the scheduler catches it, fails every sequence it held (their KV-cache
//! state is no longer trusted) with [`GenEvent::Failed`], starts over with a fresh decoder and
//! counts the restart in [`BackendStats`], which `/health` and `/metrics` report.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use ferrogpt_infer::engine::DecoderStats;
use ferrogpt_infer::{
    render_chat, text_prompt, BatchDecoder, ChatMessage, DecoderConfig, GenerationEvent, GenerationRequest, InferError, LocalModel,
    PromptTokens, SeqId,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::backend::{Backend, BackendError, BackendStats, GenEvent, SchedulerState};
use crate::error::ServeError;

/// Prompt tokens prefilled per step: large enough that a new request's first token is not
/// delayed by many steps, small enough that running streams keep a steady pace.
const PREFILL_CHUNK: usize = 256;

/// What the scheduler drives: ferrogpt-infer's [`BatchDecoder`]. The trait is the seam where
/// tests put a decoder that panics on demand, to exercise the recovery path.
pub(crate) trait Decode {
    fn add(&mut self, request: GenerationRequest) -> Result<SeqId, InferError>;
    fn cancel(&mut self, id: SeqId);
    fn is_idle(&self) -> bool;
    fn step(&mut self) -> Result<Vec<(SeqId, GenerationEvent)>, InferError>;
    fn stats(&self) -> DecoderStats;
}

impl Decode for BatchDecoder<'_> {
    fn add(&mut self, request: GenerationRequest) -> Result<SeqId, InferError> {
        BatchDecoder::add(self, request)
    }
    fn cancel(&mut self, id: SeqId) {
        BatchDecoder::cancel(self, id)
    }
    fn is_idle(&self) -> bool {
        BatchDecoder::is_idle(self)
    }
    fn step(&mut self) -> Result<Vec<(SeqId, GenerationEvent)>, InferError> {
        BatchDecoder::step(self)
    }
    fn stats(&self) -> DecoderStats {
        BatchDecoder::stats(self)
    }
}

/// Builds the scheduler's decoder (again after a panic) over the model it was given.
pub(crate) type NewDecoder = Box<dyn for<'m> Fn(&'m LocalModel, DecoderConfig) -> Box<dyn Decode + 'm> + Send>;

struct Submit {
    request: GenerationRequest,
    tag: usize,
    events: UnboundedSender<(usize, GenEvent)>,
}

pub struct EngineBackend {
    model: Arc<LocalModel>,
    tx: Mutex<Sender<Submit>>,
    stats: Arc<Mutex<BackendStats>>,
    /// The most text bytes one token of the model's tokenizer stands for.
    max_token_bytes: usize,
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
        Self::start_with_decoder(model, slots, Box::new(|m, config| Box::new(BatchDecoder::new(m, config))))
    }

    /// [`EngineBackend::start`] with the scheduler driving what `new_decoder` builds.
    pub(crate) fn start_with_decoder(model: Arc<LocalModel>, slots: usize, new_decoder: NewDecoder) -> Result<Self, ServeError> {
        let (tx, rx) = channel();
        let stats = Arc::new(Mutex::new(BackendStats::default()));
        let config = DecoderConfig {
            slots,
            max_sequence_len: model.context_length(),
            prefill_chunk: PREFILL_CHUNK,
        };
        let (m, st) = (model.clone(), stats.clone());
        std::thread::Builder::new()
            .name("ferrogpt-scheduler".into())
            .spawn(move || {
                // However the thread ends, `/health` then says the model is stopped.
                let _stopped = MarkStopped(&st);
                schedule(&m, config, &new_decoder, &rx, &st);
            })
            .map_err(|e| ServeError::Backend {
                model: model.dir().display().to_string(),
                message: format!("cannot start the scheduler thread: {e}"),
            })?;
        let tok = model.tokenizer();
        let max_token_bytes = (0..tok.vocab_size() as u32).map(|id| tok.token_byte_len(id)).max().unwrap_or(1);
        Ok(Self {
            model,
            tx: Mutex::new(tx),
            stats,
            max_token_bytes,
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

    fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
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

/// Sets the scheduler's state to stopped when dropped: when its thread ends, by shutdown or by
/// a panic outside the steps it recovers from.
struct MarkStopped<'a>(&'a Mutex<BackendStats>);

impl Drop for MarkStopped<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).state = SchedulerState::Stopped;
    }
}

struct Route {
    tag: usize,
    events: UnboundedSender<(usize, GenEvent)>,
}

/// How a run of the scheduler over one decoder ended.
enum RunEnd {
    /// The backend was dropped: the server is shutting down.
    Shutdown,
    /// A turn panicked, with this message.
    Panicked(String),
}

/// Runs decoders from `new_decoder` until shutdown, starting a fresh one after a panic.
fn schedule(model: &LocalModel, config: DecoderConfig, new_decoder: &NewDecoder, rx: &Receiver<Submit>, stats: &Mutex<BackendStats>) {
    loop {
        let mut decoder = new_decoder(model, config);
        let mut routes: HashMap<SeqId, Route> = HashMap::new();
        // A fresh decoder counts its steps from 0; the reported count goes on from here.
        let steps_before = stats.lock().unwrap_or_else(|p| p.into_inner()).steps;
        match run(&mut *decoder, &mut routes, rx, stats, steps_before) {
            RunEnd::Shutdown => return,
            RunEnd::Panicked(message) => {
                tracing::error!(
                    "the scheduler panicked ({message}); failing its {} sequences and restarting it",
                    routes.len()
                );
                for (_, r) in routes.drain() {
                    let _ = r.events.send((
                        r.tag,
                        GenEvent::Failed("the model's scheduler failed while running this request and has been restarted".into()),
                    ));
                }
                let mut st = stats.lock().unwrap_or_else(|p| p.into_inner());
                st.restarts += 1;
                (st.waiting, st.running) = (0, 0);
            }
        }
    }
}

/// Drives `decoder` turn by turn; a turn's panic ends the run (the decoder is not trusted
/// after it) with the sequences still in `routes`.
fn run(
    decoder: &mut dyn Decode,
    routes: &mut HashMap<SeqId, Route>,
    rx: &Receiver<Submit>,
    stats: &Mutex<BackendStats>,
    steps_before: u64,
) -> RunEnd {
    loop {
        let mut incoming = Vec::new();
        if decoder.is_idle() {
            match rx.recv() {
                Ok(s) => incoming.push(s),
                Err(_) => return RunEnd::Shutdown,
            }
        }
        incoming.extend(rx.try_iter());
        // A sequence submitted in a turn that panics before it is routed loses its sender with
        // the turn: its client sees the events end, which the server reports as a failure too.
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| turn(decoder, routes, incoming, stats, steps_before))) {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            return RunEnd::Panicked(message);
        }
    }
}

/// Takes new requests, drops those whose clients left, and runs one batched step.
fn turn(
    decoder: &mut dyn Decode,
    routes: &mut HashMap<SeqId, Route>,
    incoming: Vec<Submit>,
    stats: &Mutex<BackendStats>,
    steps_before: u64,
) {
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
        return;
    }
    let events = match decoder.step() {
        Ok(ev) => ev,
        Err(e) => {
            tracing::error!("batch step failed: {e}");
            for (id, r) in routes.drain() {
                decoder.cancel(id);
                let _ = r.events.send((r.tag, GenEvent::Failed(e.to_string())));
            }
            return;
        }
    };
    {
        let s = decoder.stats();
        let mut st = stats.lock().unwrap_or_else(|p| p.into_inner());
        st.waiting = s.waiting;
        st.running = s.running;
        st.last_batch_size = s.last_batch;
        st.steps = steps_before + s.steps;
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
