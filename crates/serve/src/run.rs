//! Running an admitted request: its sequences are submitted to the model's [`Backend`](crate::backend::Backend), and their
//! events become one buffered OpenAI response or an SSE stream of chunks. Either way the request's
//! [`Accounting`](crate::accounting::Accounting) follows what was generated and delivered, and the drain deadline cuts it short.

use std::convert::Infallible;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use ferrogpt_infer::{FinishReason, GenerationEvent, TokenLogprob};

use crate::admission::{Admitted, Endpoint};
use crate::backend::GenEvent;
use crate::error::ApiError;
use crate::respond::{chat_logprobs, echo_text, echoed, legacy_logprobs, sampled, usage_json};
use crate::server::unix_now;
use crate::store::OUTCOME_INTERRUPTED;

/// Accumulated output of one choice.
#[derive(Default)]
struct ChoiceState {
    text: String,
    tokens: Vec<TokenLogprob>,
    prompt: Vec<Option<TokenLogprob>>,
    finish: Option<FinishReason>,
    completion_tokens: usize,
    prompt_tokens: usize,
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
                adm.acct.sampled(i, tokens.len());
                if first && !text.is_empty() {
                    first = false;
                    adm.acct
                        .state
                        .metrics
                        .first_token(&adm.snapshot, adm.acct.started.elapsed().as_secs_f64());
                }
                c.text.push_str(&text);
                c.tokens.extend(logprobs);
            }
            GenEvent::Sequence(GenerationEvent::Finished {
                reason,
                prompt_tokens,
                completion_tokens,
            }) => {
                c.finish = Some(reason);
                c.prompt_tokens = prompt_tokens;
                c.completion_tokens = completion_tokens;
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
    let created = unix_now();
    let usage = usage_json(prompt_total, adm.acct.completion_tokens());
    let with_lp = adm.template.params.logprobs.is_some();
    let backend = &*adm.backend;
    let body = match adm.endpoint {
        Endpoint::Chat => json!({
            "id": adm.id, "object": "chat.completion", "created": created, "model": adm.snapshot,
            "system_fingerprint": null,
            "choices": choices.iter().enumerate().map(|(i, c)| json!({
                "index": i,
                "message": {"role": "assistant", "content": c.text, "refusal": null},
                "logprobs": if with_lp { chat_logprobs(backend, &c.tokens) } else { Value::Null },
                "finish_reason": c.finish.map(FinishReason::as_str),
            })).collect::<Vec<_>>(),
            "usage": usage,
        }),
        Endpoint::Completions => {
            json!({
                "id": adm.id, "object": "text_completion", "created": created, "model": adm.snapshot,
                "choices": choices.iter().enumerate().map(|(i, c)| {
                    let (text, logprobs) = if adm.echo {
                        let prompt = &adm.prompts[i / adm.n];
                        let entries = echoed(prompt, &c.prompt).chain(sampled(&c.tokens));
                        (format!("{}{}", echo_text(backend, prompt), c.text), legacy_logprobs(backend, entries, 0))
                    } else {
                        (c.text.clone(), legacy_logprobs(backend, sampled(&c.tokens), 0))
                    };
                    json!({
                        "index": i, "text": text,
                        "logprobs": if with_lp { logprobs } else { Value::Null },
                        "finish_reason": c.finish.map(FinishReason::as_str),
                    })
                }).collect::<Vec<_>>(),
                "usage": usage,
            })
        }
    };
    with_headers(axum::Json(body).into_response(), &adm.headers)
}

fn sse_json(v: &Value) -> Event {
    Event::default().data(v.to_string())
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
    let created = unix_now();
    let total = adm.prompts.len() * adm.n;
    let chat = adm.endpoint == Endpoint::Chat;
    let usage_null = adm.include_usage;
    let chunk = |choices: Value| -> Value {
        let mut v = if chat {
            json!({"id": adm.id, "object": "chat.completion.chunk", "created": created,
                   "model": adm.snapshot, "system_fingerprint": null, "choices": choices})
        } else {
            json!({"id": adm.id, "object": "text_completion", "created": created,
                   "model": adm.snapshot, "choices": choices})
        };
        if usage_null {
            v["usage"] = Value::Null;
        }
        v
    };
    let with_lp = adm.template.params.logprobs.is_some();
    let mut offsets = vec![0usize; total];
    let mut sends: Vec<Value> = Vec::new();
    if chat {
        for i in 0..total {
            sends.push(chunk(
                json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
            ));
        }
    }
    let mut done = 0;
    let mut first = true;
    let state = adm.acct.state.clone();
    loop {
        for v in sends.drain(..) {
            let sent = tokio::select! {
                sent = tx.send(sse_json(&v)) => sent.is_ok(),
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
                    let lp = if with_lp {
                        legacy_logprobs(backend, echoed(prompt, &tokens), 0)
                    } else {
                        Value::Null
                    };
                    offsets[i] = text.len();
                    sends.push(chunk(json!([{"index": i, "text": text, "logprobs": lp, "finish_reason": null}])));
                }
            }
            GenEvent::Sequence(GenerationEvent::Text { text, tokens, logprobs }) => {
                adm.acct.sampled(i, tokens.len());
                if text.is_empty() && logprobs.is_empty() {
                    continue;
                }
                if first && !text.is_empty() {
                    first = false;
                    adm.acct
                        .state
                        .metrics
                        .first_token(&adm.snapshot, adm.acct.started.elapsed().as_secs_f64());
                }
                let choice = if chat {
                    json!({"index": i, "delta": {"content": text},
                           "logprobs": if with_lp { chat_logprobs(backend, &logprobs) } else { Value::Null },
                           "finish_reason": null})
                } else {
                    let lp = if with_lp {
                        legacy_logprobs(backend, sampled(&logprobs), offsets[i])
                    } else {
                        Value::Null
                    };
                    json!({"index": i, "text": text, "logprobs": lp, "finish_reason": null})
                };
                offsets[i] += text.len();
                sends.push(chunk(json!([choice])));
            }
            GenEvent::Sequence(GenerationEvent::Finished {
                reason, completion_tokens, ..
            }) => {
                adm.acct.done(i, completion_tokens);
                done += 1;
                let choice = if chat {
                    json!({"index": i, "delta": {}, "logprobs": null, "finish_reason": reason.as_str()})
                } else {
                    json!({"index": i, "text": "", "logprobs": null, "finish_reason": reason.as_str()})
                };
                sends.push(chunk(json!([choice])));
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
        let mut v = chunk(json!([]));
        v["usage"] = usage_json(prompt_total, adm.acct.completion_tokens());
        if tx.send(sse_json(&v)).await.is_err() {
            return;
        }
    }
    if tx.send(Event::default().data("[DONE]")).await.is_ok() {
        adm.acct.outcome = "ok";
    }
}
