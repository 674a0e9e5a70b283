//! Admission: from a parsed request to one that may run. [`admit`] takes an [`Admission`] (the
//! request of either endpoint, its model resolved once and its prompts tokenized), checks the
//! context, the key's share of the model, the rate limits and the chat page's cap, and returns
//! an [`Admitted`] request holding its reservation, its seats and its ledger row. It also owns
//! the refusals' errors and headers (rate limits, a full queue, requests refused after
//! authentication that still count against RPM) and reading a request body.

use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use rand::Rng;
use serde_json::{Map, Value};

use ferrogpt_infer::{GenerationRequest, PromptTokens, SamplingParams};

use crate::accounting::Accounting;
use crate::api;
use crate::backend::Backend;
use crate::error::ApiError;
use crate::ratelimit::{Denied, LimitState};
use crate::seats::{Seats, SeatsRefused};
use crate::server::{unix_now, AppState};
use crate::store::KeyRecord;

pub(crate) async fn read_body(st: &AppState, body: Body) -> Result<Map<String, Value>, ApiError> {
    // A body declared larger than the limit is refused before any of it is read.
    if body.size_hint().lower() > st.max_body as u64 {
        return Err(ApiError::payload_too_large(st.max_body));
    }
    let read = tokio::time::timeout(st.body_timeout, axum::body::to_bytes(body, st.max_body)).await;
    let read = read.map_err(|_| ApiError::request_timeout(st.body_timeout.as_secs_f64()))?;
    let bytes = read.map_err(|e| {
        // to_bytes reports an over-limit body as a length-limit error in its source chain.
        let text = format!("{e:?}");
        if text.contains("LengthLimit") {
            ApiError::payload_too_large(st.max_body)
        } else {
            ApiError::bad_request(format!("Could not read the request body: {e}"))
        }
    })?;
    api::parse_body(&bytes)
}

/// One rate-limit window (RPM or TPM) of a key, for its "limit reached" error.
struct Window {
    kind: &'static str,
    name: &'static str,
    limit: u64,
}

impl Window {
    /// OpenAI's wording: `Rate limit reached for MODEL on WINDOW: Limit L, Used U, Requested R. ...`.
    fn exceeded(&self, snapshot: &str, used: u64, requested: u64, retry_after_s: f64) -> ApiError {
        let message = format!(
            "Rate limit reached for {snapshot} on {}: Limit {}, Used {used}, Requested {requested}. Please try again in {}.",
            self.name,
            self.limit,
            crate::ratelimit::go_duration(retry_after_s)
        );
        ApiError::rate_limited(self.kind, message)
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
}

impl Endpoint {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat.completions",
            Endpoint::Completions => "completions",
        }
    }
}

pub(crate) fn request_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let body: String = (0..24)
        .map(|_| {
            let v = rng.random_range(0..36u32);
            char::from_digit(v, 36).unwrap_or('0')
        })
        .collect();
    format!("{prefix}-{body}")
}

/// A request that passed every check and holds its reservation.
pub(crate) struct Admitted {
    pub(crate) endpoint: Endpoint,
    pub(crate) id: String,
    pub(crate) snapshot: String,
    pub(crate) backend: Arc<dyn Backend>,
    /// One token list per prompt; each yields `n` choices.
    pub(crate) prompts: Vec<PromptTokens>,
    /// Every sequence's request but its prompt (and seed, which varies by choice).
    pub(crate) template: GenerationRequest,
    pub(crate) n: usize,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) echo: bool,
    pub(crate) headers: HeaderMap,
    /// The places of the request's sequences in the model's bound, given back when the
    /// request ends (this is dropped).
    _seats: Seats,
    pub(crate) acct: Accounting,
}

/// A parsed request of either endpoint, its model resolved and its prompts tokenized.
pub(crate) struct Admission<'a> {
    pub(crate) endpoint: Endpoint,
    /// The snapshot id the request's model name resolved to.
    pub(crate) snapshot: &'a str,
    /// One token list per prompt; each yields `n` choices.
    pub(crate) prompts: Vec<PromptTokens>,
    pub(crate) params: SamplingParams,
    pub(crate) n: usize,
    pub(crate) prompt_logprobs: bool,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) echo: bool,
    /// From the chat page, whose per-key message cap applies.
    pub(crate) chat_page: bool,
}

/// Everything both endpoints share after parsing: check context and reserve.
pub(crate) fn admit(st: &Arc<AppState>, key: &KeyRecord, req: Admission<'_>) -> Result<Admitted, ApiError> {
    let Admission {
        endpoint,
        snapshot,
        prompts,
        params,
        n,
        prompt_logprobs,
        stream,
        include_usage,
        echo,
        chat_page,
    } = req;
    let entry = &st.models[snapshot];
    params.check_vocabulary(entry.backend.vocab_size())?;
    let ctx = entry.context_length;
    let mut max_out = usize::MAX;
    for p in prompts.iter().map(|p| p.ids.len()) {
        let room = ctx.saturating_sub(p);
        match params.max_tokens {
            Some(m) if p + m > ctx => return Err(ApiError::context_length(ctx, p, Some(m))),
            Some(m) => max_out = max_out.min(m),
            None if room == 0 => return Err(ApiError::context_length(ctx, p, None)),
            None => max_out = max_out.min(room),
        }
    }
    let choices = (prompts.len() * n) as u64;
    if choices as usize > entry.seats.per_key() {
        return Err(ApiError::invalid(
            "n",
            format!(
                "This request asks for {choices} completions; the server runs at most {} at once for one key. Please reduce 'n' or the number of prompts.",
                entry.seats.per_key()
            ),
        ));
    }
    let prompt_total: u64 = prompts.iter().map(|p| p.ids.len() as u64).sum();
    let reserve = prompt_total + choices * max_out as u64;
    let reservation = st
        .limiter
        .admit(key.id, snapshot, reserve)
        .map_err(|denied| limit_refusal(st, snapshot, denied))?;
    // Refused for a full queue, the request still counts against RPM (as other refusals do),
    // but its tokens are given back.
    let seats = match entry.seats.take(key.id, choices as usize) {
        Ok(seats) => seats,
        Err(refused) => {
            st.limiter.settle(reservation, 0);
            st.metrics.rate_limited("queue");
            return Err(queue_full(snapshot, refused));
        }
    };
    // The chat page's cap counts only messages that passed every other check, the rate limiter
    // included, so a retry after a refusal does not use up the user's allowance.
    if chat_page {
        if let Err(e) = take_page_message(st, key) {
            st.limiter.settle(reservation, 0);
            return Err(e);
        }
    }
    let id = request_id(match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completions => "cmpl",
    });
    let mut headers = reservation.state.headers();
    insert(&mut headers, "x-request-id", id.clone());
    let price = (entry.config.prompt_price_per_1k, entry.config.completion_price_per_1k);
    Ok(Admitted {
        endpoint,
        id,
        snapshot: snapshot.to_string(),
        backend: entry.backend.clone(),
        prompts,
        template: GenerationRequest {
            prompt: Vec::new(),
            params: SamplingParams {
                max_tokens: Some(max_out),
                ..params
            },
            prompt_logprobs,
            // Fair admission between keys: one key's many sequences do not hold back another's.
            group: key.id as u64,
        },
        n,
        stream,
        include_usage,
        echo,
        headers,
        _seats: seats,
        acct: Accounting::open(
            st.clone(),
            reservation,
            key.id,
            snapshot,
            endpoint.name(),
            price,
            prompt_total,
            choices as usize,
        ),
    })
}

/// The 429 of a request the rate limiter refused on `snapshot`'s buckets, with its headers.
pub(crate) fn limit_refusal(st: &AppState, snapshot: &str, denied: Denied) -> ApiError {
    let (kind, err, retry, should_retry, state) = match denied {
        Denied::Requests { retry_after_s, state } => {
            let used = state.limit_requests - state.remaining_requests;
            let window = Window { kind: "requests", name: "requests per min (RPM)", limit: state.limit_requests };
            let err = window.exceeded(snapshot, used, 1, retry_after_s);
            ("requests", err, Some(retry_after_s), true, state)
        }
        Denied::Tokens { retry_after_s, requested, state } => {
            let used = state.limit_tokens - state.remaining_tokens;
            let window = Window { kind: "tokens", name: "tokens per min (TPM)", limit: state.limit_tokens };
            let err = window.exceeded(snapshot, used, requested, retry_after_s);
            ("tokens", err, Some(retry_after_s), true, state)
        }
        Denied::TooLarge { requested, state } => (
            "tokens",
            ApiError::rate_limited(
                "tokens",
                format!(
                    "Request too large for {snapshot} on tokens per min (TPM): Limit {}, Requested {requested}. The input or output tokens must be reduced (set max_tokens) in order to run successfully.",
                    state.limit_tokens
                ),
            ),
            None,
            false,
            state,
        ),
    };
    st.metrics.rate_limited(kind);
    err.with_headers(&limit_headers(&state, retry, should_retry))
}

pub(crate) fn insert(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// `retry-after` (whole seconds, at least 1) and `retry-after-ms`.
pub(crate) fn retry_headers(retry_after_s: f64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    insert(&mut headers, "retry-after", (retry_after_s.ceil().max(1.0) as u64).to_string());
    insert(&mut headers, "retry-after-ms", (retry_after_s * 1000.0).ceil().to_string());
    headers
}

/// When a client refused for a full queue should retry: sequences finish all the time on a
/// busy model, so a short wait usually finds room; clients back off further on repeats.
const QUEUE_FULL_RETRY_AFTER_S: f64 = 1.0;

fn queue_full(snapshot: &str, refused: SeatsRefused) -> ApiError {
    let message = match refused {
        SeatsRefused::KeyFull { held, limit } => format!(
            "Your key has {held} completions in flight on {snapshot}, and may have at most {limit} at once. Please try again once some have finished."
        ),
        SeatsRefused::ModelFull { limit } => {
            format!("{snapshot} is running its most completions at once ({limit}). Please try again shortly.")
        }
    };
    let mut headers = retry_headers(QUEUE_FULL_RETRY_AFTER_S);
    insert(&mut headers, "x-should-retry", "true".to_string());
    ApiError::queue_full(message).with_headers(&headers)
}

/// The headers of a rate-limit refusal: the limits' state, when to retry, and whether to.
fn limit_headers(state: &LimitState, retry_after_s: Option<f64>, should_retry: bool) -> HeaderMap {
    let mut headers = state.headers();
    if let Some(s) = retry_after_s {
        headers.extend(retry_headers(s));
    }
    insert(
        &mut headers,
        "x-should-retry",
        if should_retry { "true" } else { "false" }.to_string(),
    );
    headers
}

/// Charges a request refused after authentication to the key's RPM (see
/// [`RateLimiter::charge_refused`]); when no request was left, the refusal becomes the 429 the
/// request would have met first. Refusals by the limiter itself and server errors pass as they are.
pub(crate) fn charge_refused(st: &AppState, key: &KeyRecord, body: Option<&Map<String, Value>>, err: ApiError) -> ApiError {
    if err.status == StatusCode::TOO_MANY_REQUESTS || err.status.is_server_error() {
        return err;
    }
    let snapshot = body
        .and_then(|b| b.get("model"))
        .and_then(Value::as_str)
        .and_then(|name| st.resolve(name))
        .filter(|(snap, alias)| key.may_use(snap, *alias))
        .map(|(snap, _)| snap);
    match st.limiter.charge_refused(key.id, snapshot) {
        Err(Denied::Requests { retry_after_s, state }) => {
            st.metrics.rate_limited("requests");
            let window = Window {
                kind: "requests",
                name: "requests per min (RPM)",
                limit: state.limit_requests,
            };
            let used = state.limit_requests - state.remaining_requests;
            window
                .exceeded(snapshot.unwrap_or("requests naming no model"), used, 1, retry_after_s)
                .with_headers(&limit_headers(&state, Some(retry_after_s), true))
        }
        // Only the requests bucket is charged, so nothing else can refuse.
        Ok(()) | Err(_) => err,
    }
}

/// The chat page's per-key message cap, checked before anything is generated.
pub(crate) fn take_page_message(st: &AppState, key: &KeyRecord) -> Result<(), ApiError> {
    let window = st.chat.window_hours * 3600.0;
    let now = unix_now() as f64;
    match st.store.take_chat_message(key.id, now, window, st.chat.messages_per_window) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(oldest)) => {
            let wait_min = ((oldest + window - now) / 60.0).ceil().max(1.0);
            Err(ApiError::usage_cap(format!(
                "You've reached the current usage cap of {} messages every {} hours. You can send another message in {wait_min} minutes.",
                st.chat.messages_per_window, st.chat.window_hours
            )))
        }
        Err(e) => {
            tracing::error!("chat cap check failed: {e}");
            Err(ApiError::server("The usage store is unavailable."))
        }
    }
}
