//! OpenAI's response bodies, one typed struct per object, shared by the buffered and the
//! streaming paths: completions and their stream chunks (one envelope, [`Completion`], whose
//! choices are [`ChatChoice`], [`ChatChunkChoice`] or [`TextChoice`]), logprobs in the chat and
//! the legacy completions shapes, usage, moderation results, models, the waitlist entry,
//! `/health` and the chat page's usage; and the echoed prompts and logprob entries these are built from.
//!
//! Where OpenAI's clients expect a key that is always null here (`system_fingerprint`,
//! `refusal`), it is a [`Null`] field, so that the key is there whatever the types allow.

use std::collections::BTreeMap;

use ferrogpt_chatdata::moderation::Moderation;
use ferrogpt_infer::{FinishReason, PromptTokens, TokenLogprob};
use serde::Serialize;

use crate::backend::Backend;

/// A key whose value is always `null`.
#[derive(Serialize, Clone, Copy)]
pub(crate) struct Null;

/// `usage` of a response: what the prompt and the completion cost, in tokens.
#[derive(Serialize)]
pub(crate) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub(crate) fn new(prompt: u64, completion: u64) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }
}

/// A `chat.completion`, `chat.completion.chunk` or `text_completion` body; `C` is its kind of choice.
#[derive(Serialize)]
pub(crate) struct Completion<'a, C> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    /// Chat bodies have the key (null: one build serves every request); completions bodies do not.
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<Null>,
    choices: Vec<C>,
    /// Absent (`None`) on stream chunks unless the client asked for usage; then `Some(None)`
    /// (null) on every chunk but the last, which has none of the choices and all of the usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

/// What every body of one request has: its id, when it was created, the snapshot that answered.
#[derive(Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
}

impl<'a, C> Completion<'a, C> {
    /// A `chat.completion`, or one `chat.completion.chunk` of its stream.
    pub(crate) fn chat(origin: Origin<'a>, chunk: bool, choices: Vec<C>, usage: Option<Option<Usage>>) -> Self {
        let object = if chunk { "chat.completion.chunk" } else { "chat.completion" };
        Self::new(origin, object, Some(Null), choices, usage)
    }

    /// A `text_completion`: the buffered body and the chunks of its stream have one name.
    pub(crate) fn text(origin: Origin<'a>, choices: Vec<C>, usage: Option<Option<Usage>>) -> Self {
        Self::new(origin, "text_completion", None, choices, usage)
    }

    fn new(
        origin: Origin<'a>,
        object: &'static str,
        system_fingerprint: Option<Null>,
        choices: Vec<C>,
        usage: Option<Option<Usage>>,
    ) -> Self {
        Self {
            id: origin.id,
            object,
            created: origin.created,
            model: origin.model,
            system_fingerprint,
            choices,
            usage,
        }
    }
}

/// A choice of a buffered chat completion.
#[derive(Serialize)]
pub(crate) struct ChatChoice {
    pub index: usize,
    pub message: ChatMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// The assistant's message of a [`ChatChoice`].
#[derive(Serialize)]
pub(crate) struct ChatMessage {
    pub role: &'static str,
    pub content: String,
    pub refusal: Null,
}

/// A choice of a chat completion chunk.
#[derive(Serialize)]
pub(crate) struct ChatChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// What a chunk adds to a choice's message: the role on the first, text after, nothing on the last.
#[derive(Serialize, Default)]
pub(crate) struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// A choice of a text completion, buffered or one chunk of its stream.
#[derive(Serialize)]
pub(crate) struct TextChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<LegacyLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// `finish_reason` as OpenAI spells it; null until the choice has finished.
pub(crate) fn finish_reason(reason: Option<FinishReason>) -> Option<&'static str> {
    reason.map(FinishReason::as_str)
}

/// Logprobs in the chat shape: one entry per sampled token.
#[derive(Serialize)]
pub(crate) struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
    pub refusal: Null,
}

#[derive(Serialize)]
pub(crate) struct ChatTokenLogprob {
    pub token: String,
    /// f64, as these were always written: the f32's exact value, not its shortest decimal.
    pub logprob: f64,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Serialize)]
pub(crate) struct TopLogprob {
    pub token: String,
    pub logprob: f64,
    pub bytes: Vec<u8>,
}

/// Logprobs in the legacy completions shape: parallel lists, one entry per token.
#[derive(Serialize)]
pub(crate) struct LegacyLogprobs {
    pub tokens: Vec<String>,
    /// Null for the first prompt token, which nothing predicts.
    pub token_logprobs: Vec<Option<f64>>,
    /// Each token's alternatives by their text (the first of tokens that read the same).
    pub top_logprobs: Vec<Option<BTreeMap<String, f64>>>,
    pub text_offset: Vec<usize>,
}

/// A token's text (invalid UTF-8 replaced) and bytes, as logprobs show them.
pub(crate) fn token_text(backend: &dyn Backend, token: u32) -> (String, Vec<u8>) {
    let bytes = backend.token_bytes(token);
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

pub(crate) fn chat_logprobs(backend: &dyn Backend, tokens: &[TokenLogprob]) -> ChatLogprobs {
    let content = tokens
        .iter()
        .map(|t| {
            let (token, bytes) = token_text(backend, t.token);
            ChatTokenLogprob {
                token,
                logprob: t.logprob.into(),
                bytes,
                top_logprobs: t
                    .top
                    .iter()
                    .map(|&(id, logprob)| {
                        let (token, bytes) = token_text(backend, id);
                        TopLogprob {
                            token,
                            logprob: logprob.into(),
                            bytes,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    ChatLogprobs { content, refusal: Null }
}

/// The legacy completions logprobs object of `(token, its logprob)` entries (`None` for the
/// first prompt token, which nothing predicts); `offset` is the text offset of the first token.
pub(crate) fn legacy_logprobs<'a>(
    backend: &dyn Backend,
    entries: impl IntoIterator<Item = (u32, Option<&'a TokenLogprob>)>,
    offset: usize,
) -> LegacyLogprobs {
    let mut pos = offset;
    let mut out = LegacyLogprobs {
        tokens: Vec::new(),
        token_logprobs: Vec::new(),
        top_logprobs: Vec::new(),
        text_offset: Vec::new(),
    };
    for (token, lp) in entries {
        let (text, _) = token_text(backend, token);
        out.token_logprobs.push(lp.map(|l| l.logprob.into()));
        out.top_logprobs.push(lp.map(|l| {
            let mut top = BTreeMap::new();
            for &(id, logprob) in &l.top {
                top.entry(token_text(backend, id).0).or_insert(logprob.into());
            }
            top
        }));
        out.text_offset.push(pos);
        pos += text.len();
        out.tokens.push(text);
    }
    out
}

/// A `/v1/moderations` answer: one result per input, in order.
#[derive(Serialize)]
pub(crate) struct ModerationResponse {
    pub id: String,
    pub model: &'static str,
    pub results: Vec<ModerationResult>,
}

/// One input's result in OpenAI's shape: every one of the 13 category names in each map.
#[derive(Serialize)]
pub(crate) struct ModerationResult {
    pub flagged: bool,
    pub categories: BTreeMap<&'static str, bool>,
    pub category_scores: BTreeMap<&'static str, f64>,
    /// Every score applies to text, the only input the classifier reads.
    pub category_applied_input_types: BTreeMap<&'static str, [&'static str; 1]>,
}

impl ModerationResponse {
    pub(crate) fn new(id: String, model: &'static str, results: Vec<Moderation>) -> Self {
        let results = results
            .into_iter()
            .map(|m| ModerationResult {
                flagged: m.flagged,
                category_applied_input_types: m.categories.keys().map(|&name| (name, ["text"])).collect(),
                categories: m.categories,
                category_scores: m.category_scores,
            })
            .collect();
        Self { id, model, results }
    }
}

/// `/v1/models`: the models a key may use.
#[derive(Serialize)]
pub(crate) struct ModelList {
    pub object: &'static str,
    pub data: Vec<Model>,
}

impl ModelList {
    pub(crate) fn new(data: Vec<Model>) -> Self {
        Self { object: "list", data }
    }
}

/// A model object of `/v1/models`: a snapshot, or an alias of one.
#[derive(Serialize)]
pub(crate) struct Model {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    pub context_length: usize,
    /// On an alias only: the snapshot it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

impl Model {
    pub(crate) fn new(id: &str, created: u64, context_length: usize, snapshot: Option<&str>) -> Self {
        Self {
            id: id.to_string(),
            object: "model",
            created,
            owned_by: "ferrogpt",
            context_length,
            snapshot: snapshot.map(str::to_string),
        }
    }
}

/// The answer to `POST /v1/waitlist`: the request, recorded as pending.
#[derive(Serialize)]
pub(crate) struct WaitlistEntry {
    pub object: &'static str,
    pub id: i64,
    pub status: &'static str,
}

impl WaitlistEntry {
    pub(crate) fn pending(id: i64) -> Self {
        Self {
            object: "waitlist.entry",
            id,
            status: "pending",
        }
    }
}

/// `/health`: `ok` or `degraded`, and each model's scheduler.
#[derive(Serialize)]
pub(crate) struct Health {
    pub status: &'static str,
    pub models: BTreeMap<String, ModelHealth>,
}

/// A model's scheduler: its state, the panics it recovered from, and the sequences it holds.
#[derive(Serialize)]
pub(crate) struct ModelHealth {
    pub state: &'static str,
    pub restarts: u64,
    pub sequences: usize,
}

/// `/chat/api/usage`: how much of the chat page's message cap the key has used.
#[derive(Serialize)]
pub(crate) struct ChatPageUsage {
    pub used: u64,
    pub cap: u64,
    pub window_hours: f64,
    pub key_name: String,
}

/// The client's part of prompt `p` (without what the BOS policy added) with the logprob of each
/// of its tokens from `scored` (the prompt logprobs of the whole prompt).
pub(crate) fn echoed<'a>(
    p: &'a PromptTokens,
    scored: &'a [Option<TokenLogprob>],
) -> impl Iterator<Item = (u32, Option<&'a TokenLogprob>)> + 'a {
    p.ids
        .iter()
        .enumerate()
        .skip(p.added)
        .map(move |(k, &id)| (id, scored.get(k).and_then(Option::as_ref)))
}

/// Sampled tokens as logprob entries.
pub(crate) fn sampled(tokens: &[TokenLogprob]) -> impl Iterator<Item = (u32, Option<&TokenLogprob>)> {
    tokens.iter().map(|t| (t.token, Some(t)))
}

/// The text of the client's part of prompt `p`, token by token as logprobs show it.
pub(crate) fn echo_text(backend: &dyn Backend, p: &PromptTokens) -> String {
    p.ids[p.added.min(p.ids.len())..]
        .iter()
        .map(|&id| token_text(backend, id).0)
        .collect()
}
