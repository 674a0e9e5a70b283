//! Running an admitted request: its sequences are submitted to the model's [`Backend`](crate::backend::Backend), and their
//! events become one buffered OpenAI response or an SSE stream of chunks. Either way the request's
//! [`Accounting`](crate::accounting::Accounting) follows what was generated and delivered, and the drain deadline cuts it short.

use std::convert::Infallible;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::mpsc;

use ferrogpt_infer::{FinishReason, GenerationEvent, TokenLogprob};

use crate::admission::{Admitted, Endpoint};
use crate::backend::GenEvent;
use crate::error::ApiError;
use crate::respond::{
    chat_logprobs, echo_text, echoed, finish_reason, legacy_logprobs, sampled, ChatChoice, ChatChunkChoice, ChatLogprobs, ChatMessage,
    Completion, Delta, LegacyLogprobs, Null, Origin, TextChoice, Usage,
};
use crate::server::unix_now;
use crate::store::OUTCOME_INTERRUPTED;

/// Accumulated output of one choice.
#[derive(Default)]
struct ChoiceState {
    text: String,
    tokens: Vec<TokenLogprob>,
    prompt: Vec<Option<TokenLogprob>>,
    finish: Option<FinishReason>,
}

/// Starts every choice's sequence; events arrive tagged with the choice index.
fn submit_all(adm: &Admitted) -> Result<mpsc::UnboundedReceiver<(usize, GenEvent)>, ApiError> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (p, prompt) in adm.prompts.iter().enumerate() {
        for j in 0..adm.n {
            let index = p * adm.n + j;
            let mut req = adm.template.clone();
            req.prompt = prompt.ids.clone();
            // Distinct but reproducible streams for n > 1 under one seed.
            req.params.seed = req.params.seed.map(|s| s.wrapping_add(index as u64));
            adm.backend
                .submit(req, index, tx.clone())
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
        }
    }
    Ok(rx)
}

fn with_headers(mut resp: Response, headers: &HeaderMap) -> Response {
    for (k, v) in headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

pub(crate) async fn run_admitted(mut adm: Admitted) -> Response {
    let prompt_total: u64 = adm.prompts.iter().map(|p| p.ids.len() as u64).sum();
    if let Err(e) = adm.acct.row_written().await {
        return e.with_headers(&adm.headers).into_response();
    }
    let mut rx = match submit_all(&adm) {
        Ok(rx) => rx,
        Err(e) => {
            adm.acct.status = e.status.as_u16();
            adm.acct.outcome = "error";
            adm.acct.prompt_tokens = 0;
            return e.with_headers(&adm.headers).into_response();
        }
    };
    if adm.stream {
        return stream_response(adm, rx, prompt_total);
    }
    let total = adm.prompts.len() * adm.n;
    let mut choices: Vec<ChoiceState> = (0..total).map(|_| ChoiceState::default()).collect();
    let mut done = 0;
    let mut first = true;
    let state = adm.acct.state.clone();
    while done < total {
        let next = tokio::select! {
            ev = rx.recv() => ev,
            () = state.interrupted() => {
                adm.acct.outcome = OUTCOME_INTERRUPTED;
                adm.acct.status = 503;
                return ApiError::unavailable("The server is shutting down; the request was cut short.")
                    .with_headers(&adm.headers)
                    .into_response();
            }
        };
        let Some((i, ev)) = next else {
            adm.acct.status = 500;
            adm.acct.outcome = "error";
            return ApiError::server("The model's scheduler stopped while generating.")
                .with_headers(&adm.headers)
                .into_response();
        };
        let c = &mut choices[i];
        match ev {
            GenEvent::Sequence(GenerationEvent::Prompt(tokens)) => c.prompt = tokens,
            GenEvent::Sequence(GenerationEvent::Text { text, tokens, logprobs }) => {
                adm.acct.text_arrived(i, tokens.len(), &text, &mut first);
                c.text.push_str(&text);
                c.tokens.extend(logprobs);
            }
            GenEvent::Sequence(GenerationEvent::Finished {
                reason, completion_tokens, ..
            }) => {
                c.finish = Some(reason);
                adm.acct.done(i, completion_tokens);
                done += 1;
            }
            GenEvent::Failed(msg) => {
                adm.acct.status = 500;
                adm.acct.outcome = "error";
                return ApiError::server(format!("Generation failed: {msg}"))
                    .with_headers(&adm.headers)
                    .into_response();
            }
        }
    }
    adm.acct.outcome = "ok";
    let usage = Some(Some(Usage::new(prompt_total, adm.acct.completion_tokens())));
    let with_lp = adm.template.params.logprobs.is_some();
    let backend = &*adm.backend;
    let origin = Origin {
        id: &adm.id,
        created: unix_now(),
        model: &adm.snapshot,
    };
    let response = match adm.endpoint {
        Endpoint::Chat => axum::Json(Completion::chat(
            origin,
            false,
            choices
                .iter()
                .enumerate()
                .map(|(i, c)| ChatChoice {
                    index: i,
                    message: ChatMessage {
                        role: "assistant",
                        content: c.text.clone(),
                        refusal: Null,
                    },
                    logprobs: with_lp.then(|| chat_logprobs(backend, &c.tokens)),
                    finish_reason: finish_reason(c.finish),
                })
                .collect(),
            usage,
        ))
        .into_response(),
        Endpoint::Completions => axum::Json(Completion::text(
            origin,
            choices
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let (text, logprobs) = if adm.echo {
                        let prompt = &adm.prompts[i / adm.n];
                        let entries = echoed(prompt, &c.prompt).chain(sampled(&c.tokens));
                        let logprobs = with_lp.then(|| legacy_logprobs(backend, entries, 0));
                        (format!("{}{}", echo_text(backend, prompt), c.text), logprobs)
                    } else {
                        (c.text.clone(), with_lp.then(|| legacy_logprobs(backend, sampled(&c.tokens), 0)))
                    };
                    TextChoice {
                        index: i,
                        text,
                        logprobs,
                        finish_reason: finish_reason(c.finish),
                    }
                })
                .collect(),
            usage,
        ))
        .into_response(),
    };
    with_headers(response, &adm.headers)
}

/// A body as one SSE event. Serializing these bodies cannot fail (their maps have string keys);
/// were it to, the client would see an error event rather than a chunk silently missing.
fn sse_json(body: &impl Serialize) -> Event {
    Event::default().json_data(body).unwrap_or_else(|e| {
        tracing::error!("a stream chunk could not be serialized: {e}");
        let err = ApiError::server("A chunk of the response could not be written.");
        Event::default().data(err.body().to_string())
    })
}

/// What every chunk of one stream shares.
struct Chunks<'a> {
    origin: Origin<'a>,
    chat: bool,
    /// The client asked for usage: every chunk has the key, null but on the last.
    include_usage: bool,
}

impl Chunks<'_> {
    fn event<C: Serialize>(&self, choices: Vec<C>, usage: Option<Usage>) -> Event {
        let usage = self.include_usage.then_some(usage);
        if self.chat {
            sse_json(&Completion::chat(self.origin, true, choices, usage))
        } else {
            sse_json(&Completion::text(self.origin, choices, usage))
        }
    }
}

fn stream_response(adm: Admitted, rx: mpsc::UnboundedReceiver<(usize, GenEvent)>, prompt_total: u64) -> Response {
    let headers = adm.headers.clone();
    let (tx, out) = mpsc::channel::<Event>(64);
    tokio::spawn(drive_stream(adm, rx, tx, prompt_total));
    let stream = futures_util::stream::unfold(
        out,
        |mut out| async move { out.recv().await.map(|e| (Ok::<_, Infallible>(e), out)) },
    );
    with_headers(Sse::new(stream).keep_alive(KeepAlive::default()).into_response(), &headers)
}

/// Turns backend events into SSE chunks until every choice is done or the client leaves.
async fn drive_stream(mut adm: Admitted, mut rx: mpsc::UnboundedReceiver<(usize, GenEvent)>, tx: mpsc::Sender<Event>, prompt_total: u64) {
    let total = adm.prompts.len() * adm.n;
    let chat = adm.endpoint == Endpoint::Chat;
    let chunks = Chunks {
        origin: Origin {
            id: &adm.id,
            created: unix_now(),
            model: &adm.snapshot,
        },
        chat,
        include_usage: adm.include_usage,
    };
    let with_lp = adm.template.params.logprobs.is_some();
    let mut offsets = vec![0usize; total];
    let mut sends: Vec<Event> = Vec::new();
    if chat {
        for i in 0..total {
            let delta = Delta {
                role: Some("assistant"),
                content: Some(String::new()),
            };
            sends.push(chunks.event(vec![chat_delta(i, delta, None, None)], None));
        }
    }
    let mut done = 0;
    let mut first = true;
    let state = adm.acct.state.clone();
    loop {
        for event in sends.drain(..) {
            let sent = tokio::select! {
                sent = tx.send(event) => sent.is_ok(),
                () = state.interrupted() => false,
            };
            if !sent {
                // Client gone (or the server stopping): dropping `adm` cancels generation and
                // settles the ledger with what was generated.
                adm.acct.count_undelivered(&mut rx);
                return;
            }
        }
        if done == total {
            break;
        }
        let next = tokio::select! {
            ev = rx.recv() => ev,
            _ = tx.closed() => {
                adm.acct.count_undelivered(&mut rx);
                return;
            }
            () = state.interrupted() => {
                let err = ApiError::unavailable("The server is shutting down; the response was cut short.");
                let _ = tx.try_send(sse_json(&err.body()));
                adm.acct.count_undelivered(&mut rx);
                return;
            }
        };
        let Some((i, ev)) = next else {
            adm.acct.status = 500;
            adm.acct.outcome = "error";
            let err = ApiError::server("The model's scheduler stopped while generating.");
            let _ = tx.send(sse_json(&err.body())).await;
            return;
        };
        let backend = &*adm.backend;
        match ev {
            GenEvent::Sequence(GenerationEvent::Prompt(tokens)) => {
                if !chat && adm.echo {
                    let prompt = &adm.prompts[i / adm.n];
                    let text = echo_text(backend, prompt);
                    let logprobs = with_lp.then(|| legacy_logprobs(backend, echoed(prompt, &tokens), 0));
                    offsets[i] = text.len();
                    sends.push(chunks.event(vec![text_piece(i, text, logprobs, None)], None));
                }
            }
            GenEvent::Sequence(GenerationEvent::Text { text, tokens, logprobs }) => {
                adm.acct.text_arrived(i, tokens.len(), &text, &mut first);
                if text.is_empty() && logprobs.is_empty() {
                    continue;
                }
                let length = text.len();
                let event = if chat {
                    let delta = Delta {
                        role: None,
                        content: Some(text),
                    };
                    let logprobs = with_lp.then(|| chat_logprobs(backend, &logprobs));
                    chunks.event(vec![chat_delta(i, delta, logprobs, None)], None)
                } else {
                    let logprobs = with_lp.then(|| legacy_logprobs(backend, sampled(&logprobs), offsets[i]));
                    chunks.event(vec![text_piece(i, text, logprobs, None)], None)
                };
                offsets[i] += length;
                sends.push(event);
            }
            GenEvent::Sequence(GenerationEvent::Finished {
                reason, completion_tokens, ..
            }) => {
                adm.acct.done(i, completion_tokens);
                done += 1;
                let event = if chat {
                    chunks.event(vec![chat_delta(i, Delta::default(), None, Some(reason))], None)
                } else {
                    chunks.event(vec![text_piece(i, String::new(), None, Some(reason))], None)
                };
                sends.push(event);
            }
            GenEvent::Failed(msg) => {
                adm.acct.status = 500;
                adm.acct.outcome = "error";
                let err = ApiError::server(format!("Generation failed: {msg}"));
                let _ = tx.send(sse_json(&err.body())).await;
                return;
            }
        }
    }
    if adm.include_usage {
        // The last chunk has no choices, so which kind they would be does not show.
        let usage = Usage::new(prompt_total, adm.acct.completion_tokens());
        if tx.send(chunks.event(Vec::<TextChoice>::new(), Some(usage))).await.is_err() {
            return;
        }
    }
    if tx.send(Event::default().data("[DONE]")).await.is_ok() {
        adm.acct.outcome = "ok";
    }
}

fn chat_delta(index: usize, delta: Delta, logprobs: Option<ChatLogprobs>, finish: Option<FinishReason>) -> ChatChunkChoice {
    ChatChunkChoice {
        index,
        delta,
        logprobs,
        finish_reason: finish_reason(finish),
    }
}

fn text_piece(index: usize, text: String, logprobs: Option<LegacyLogprobs>, finish: Option<FinishReason>) -> TextChoice {
    TextChoice {
        index,
        text,
        logprobs,
        finish_reason: finish_reason(finish),
    }
}
