//! The boundary between the HTTP layer and a model: what a request asks the scheduler for and
//! the events it streams back, in ferrogpt-infer's types. The real implementation is
//! [`crate::engine::EngineBackend`]; tests use a deterministic fake.

use ferrogpt_infer::{ChatMessage, GenerationEvent, GenerationRequest, InferError, PromptTokens};
use tokio::sync::mpsc::UnboundedSender;

/// What a backend reports about one sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    Sequence(GenerationEvent),
    /// The scheduler could not run the sequence (its last event).
    Failed(String),
}

/// Whether a model's scheduler takes requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SchedulerState {
    #[default]
    Running,
    /// Its thread has ended: requests for the model get a 503.
    Stopped,
}

impl SchedulerState {
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerState::Running => "running",
            SchedulerState::Stopped => "stopped",
        }
    }
}

/// Scheduler state and load, for `/health` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BackendStats {
    pub state: SchedulerState,
    /// Times the scheduler recovered from a panic by failing its sequences and starting over.
    pub restarts: u64,
    pub waiting: usize,
    pub running: usize,
    pub last_batch_size: usize,
    pub steps: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("the model's scheduler has stopped")]
    Stopped,
}

/// A loaded model behind a scheduler. Events for a sequence are sent tagged with `tag`;
/// dropping the receiver cancels the sequence and frees its slot.
pub trait Backend: Send + Sync {
    fn context_length(&self) -> usize;
    fn vocab_size(&self) -> usize;
    /// The most bytes of text one token stands for (special tokens aside): a text of more
    /// than `context_length x max_token_bytes` bytes cannot fit the context.
    fn max_token_bytes(&self) -> usize;
    /// Token ids of a chat rendered with the model's template, ending in the assistant cue;
    /// [`InferError::TextOnly`] if a message has an image part the model cannot read.
    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, InferError>;
    /// Token ids of a raw-text prompt under ferrogpt-infer's BOS policy.
    fn text_prompt(&self, text: &str) -> PromptTokens;
    /// The bytes a token stands for, as shown in logprobs.
    fn token_bytes(&self, token: u32) -> Vec<u8>;
    fn submit(&self, request: GenerationRequest, tag: usize, events: UnboundedSender<(usize, GenEvent)>) -> Result<(), BackendError>;
    fn stats(&self) -> BackendStats;
}
