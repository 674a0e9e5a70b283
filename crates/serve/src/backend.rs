//! The boundary between the HTTP layer and a model: what a request asks the scheduler for and
//! the events it streams back. The real implementation is [`crate::engine::EngineBackend`];
//! tests use a deterministic fake.

use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One chat turn after validation; image parts are counted, not passed on, until a vision
/// model exists.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// One sequence to generate.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    /// Completion tokens at most; 0 only scores the prompt.
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub logit_bias: Vec<(u32, f32)>,
    /// `Some(k)`: report each generated token's logprob and its `k` most likely alternatives.
    pub logprobs: Option<usize>,
    /// Constrain the output to one syntactically valid JSON object.
    pub json_object: bool,
    /// Report the logprob of every prompt token (the legacy `echo` + `logprobs` scoring path).
    pub prompt_logprobs: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    pub text: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub text: String,
    pub bytes: Vec<u8>,
    /// `None` for the first prompt token, which nothing predicts.
    pub logprob: Option<f32>,
    pub top: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
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

#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// Logprobs of the prompt tokens (only when asked for), sent before any text.
    Prompt(Vec<TokenLogprob>),
    /// New text (possibly empty while a multi-byte character or a possible stop sequence is
    /// held back) and the tokens it came from.
    Text {
        text: String,
        tokens: Vec<TokenLogprob>,
    },
    Done {
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(String),
}

/// Scheduler load, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BackendStats {
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
    /// Token ids of a chat rendered with the model's template, ending in the assistant cue.
    fn chat_prompt(&self, messages: &[ChatMessage]) -> Vec<u32>;
    fn encode(&self, text: &str) -> Vec<u32>;
    fn submit(&self, request: GenRequest, tag: usize, events: UnboundedSender<(usize, GenEvent)>) -> Result<(), BackendError>;
    fn stats(&self) -> BackendStats;
    /// Whether image parts can be used (no model can yet: the vision issue adds that).
    fn accepts_images(&self) -> bool {
        false
    }
}
