//! The generating endpoints — `/v1/chat/completions`, `/v1/completions` and the chat page's
//! `/chat/api/*` — from a request body to an [`Admitted`] request: each parses its body, resolves
//! the model once, refuses text too long for the context before tokenizing it, tokenizes off the
//! runtime, and hands one [`Admission`] to [`admit`]; [`run_admitted`] does the rest. The chat
//! page's input is first checked by the moderation model, when one is loaded.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use serde_json::{Map, Value};

use ferrogpt_infer::request::CompletionPrompt;
use ferrogpt_infer::{token_prompt, ContentPart, InferError, PromptTokens};

use crate::admission::{admit, charge_refused, read_body, Admission, Admitted, Endpoint};
use crate::api;
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::moderation::check_chat_page_input;
use crate::respond::ChatPageUsage;
use crate::run::run_admitted;
use crate::server::{unix_now, AppState};
use crate::store::KeyRecord;

pub(crate) async fn chat_completions(State(st): State<Arc<AppState>>, ApiKey(key): ApiKey, body: Body) -> Result<Response, ApiError> {
    let adm = chat_inner(&st, key, body, false).await?;
    Ok(run_admitted(adm).await)
}

async fn chat_inner(st: &Arc<AppState>, key: KeyRecord, body: Body, from_page: bool) -> Result<Admitted, ApiError> {
    let obj = read_body(st, body).await.map_err(|e| charge_refused(st, &key, None, e))?;
    admit_chat(st, &key, &obj, from_page)
        .await
        .map_err(|e| charge_refused(st, &key, Some(&obj), e))
}

async fn admit_chat(st: &Arc<AppState>, key: &KeyRecord, obj: &Map<String, Value>, from_page: bool) -> Result<Admitted, ApiError> {
    let req = api::parse_chat(obj)?;
    let (snapshot, entry) = st.model_for(key, &req.model)?;
    let text_bytes = req
        .request
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .map(|part| match part {
            ContentPart::Text(t) => t.len(),
            ContentPart::Image(_) => 0,
        })
        .sum();
    entry.check_prompt_bytes("messages", text_bytes)?;
    if from_page {
        check_chat_page_input(st, key, &req.request.messages).await?;
    }
    let backend = entry.backend.clone();
    let messages = req.request.messages;
    let prompt = off_runtime(move || backend.chat_prompt(&messages)).await?.map_err(|e| match e {
        InferError::TextOnly { .. } => ApiError::invalid(
            "messages",
            format!("The model `{snapshot}` is text-only and cannot read image parts; send text content only."),
        ),
        other => ApiError::invalid("messages", other.to_string()),
    })?;
    admit(
        st,
        key,
        Admission {
            endpoint: Endpoint::Chat,
            snapshot,
            prompts: vec![PromptTokens { ids: prompt, added: 0 }],
            params: req.request.params,
            n: req.request.n,
            prompt_logprobs: false,
            stream: req.stream,
            include_usage: req.include_usage,
            echo: false,
            chat_page: from_page,
        },
    )
}

pub(crate) async fn completions(State(st): State<Arc<AppState>>, ApiKey(key): ApiKey, body: Body) -> Result<Response, ApiError> {
    let obj = read_body(&st, body).await.map_err(|e| charge_refused(&st, &key, None, e))?;
    let adm = admit_completion(&st, &key, &obj)
        .await
        .map_err(|e| charge_refused(&st, &key, Some(&obj), e))?;
    Ok(run_admitted(adm).await)
}

async fn admit_completion(st: &Arc<AppState>, key: &KeyRecord, obj: &Map<String, Value>) -> Result<Admitted, ApiError> {
    let req = api::parse_completion(obj)?;
    let (snapshot, entry) = st.model_for(key, &req.model)?;
    let vocab = entry.backend.vocab_size();
    for p in &req.request.prompts {
        match p {
            CompletionPrompt::Text(t) => entry.check_prompt_bytes("prompt", t.len())?,
            CompletionPrompt::Tokens(ids) => {
                if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(ApiError::invalid(
                        "prompt",
                        format!("Token id {id} in 'prompt' is outside the model's vocabulary of {vocab} tokens."),
                    ));
                }
            }
        }
    }
    let backend = entry.backend.clone();
    let given = req.request.prompts;
    let prompts: Vec<PromptTokens> = off_runtime(move || {
        given
            .into_iter()
            .map(|p| match p {
                CompletionPrompt::Text(t) => backend.text_prompt(&t),
                CompletionPrompt::Tokens(ids) => token_prompt(ids),
            })
            .collect()
    })
    .await?;
    // Empty means nothing of the client's: a text prompt's `<|bos|>` does not count.
    if prompts.iter().any(|p| p.ids.len() <= p.added) {
        return Err(ApiError::invalid("prompt", "'prompt' must not be empty."));
    }
    // Echo shows the prompt, and with logprobs scores it: both need the prompt's logprobs.
    let echo = req.request.echo;
    admit(
        st,
        key,
        Admission {
            endpoint: Endpoint::Completions,
            snapshot,
            prompts,
            params: req.request.params,
            n: req.request.n,
            prompt_logprobs: echo,
            stream: req.stream,
            include_usage: req.include_usage,
            echo,
            chat_page: false,
        },
    )
}

/// Runs CPU-bound work (tokenizing a prompt) on tokio's blocking pool, so that a long prompt
/// does not hold up the runtime's workers and every connection they serve.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!("tokenizing task failed: {e}");
        ApiError::server("The prompt could not be tokenized.")
    })
}

pub(crate) async fn chat_page_completions(State(st): State<Arc<AppState>>, ApiKey(key): ApiKey, body: Body) -> Result<Response, ApiError> {
    let adm = chat_inner(&st, key, body, true).await?;
    Ok(run_admitted(adm).await)
}

pub(crate) async fn chat_page_usage(State(st): State<Arc<AppState>>, ApiKey(key): ApiKey) -> Result<axum::Json<ChatPageUsage>, ApiError> {
    let window = st.chat.window_hours * 3600.0;
    let used = st.store.count_chat_messages(key.id, unix_now() as f64, window).map_err(|e| {
        tracing::error!("chat usage read failed: {e}");
        ApiError::server("The usage store is unavailable.")
    })?;
    Ok(axum::Json(ChatPageUsage {
        used,
        cap: st.chat.messages_per_window,
        window_hours: st.chat.window_hours,
        key_name: key.name,
    }))
}
