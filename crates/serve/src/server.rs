//! The HTTP layer: routes, authentication, admission (model access, context length, rate
//! limits), generation through a [`Backend`], OpenAI-shaped responses and SSE streams, and
//! graceful shutdown with a drain deadline. What a request costs is [`Accounting`]'s.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, Extensions, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rand::Rng;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};

use ferrogpt_infer::request::CompletionPrompt;
use ferrogpt_infer::{
    token_prompt, ContentPart, FinishReason, GenerationEvent, GenerationRequest, InferError, PromptTokens, SamplingParams, TokenLogprob,
};

use crate::accounting::Accounting;
use crate::api;
use crate::auth::ApiKey;
use crate::backend::{Backend, GenEvent, SchedulerState};
use crate::config::{ChatPageConfig, Config, SnapshotConfig, WaitlistConfig};
use crate::error::{ApiError, ServeError};
use crate::ledger::LedgerWriter;
use crate::metrics::Metrics;
use crate::ratelimit::{AddressLimiter, Clock, Denied, LimitState, RateLimiter};
use crate::respond::{chat_logprobs, echo_text, echoed, legacy_logprobs, sampled, usage_json};
use crate::seats::{Seats, SeatsRefused, SequenceSeats};
use crate::store::{KeyRecord, Store, OUTCOME_INTERRUPTED};

/// One servable snapshot and the model behind it.
pub struct ModelEntry {
    pub config: SnapshotConfig,
    pub context_length: usize,
    pub backend: Arc<dyn Backend>,
    seats: Arc<SequenceSeats>,
}

impl ModelEntry {
    /// Refuses, before tokenizing it, text that cannot fit the context. Tokenizing is linear
    /// but not free (up to the body limit of 8 MiB), and every token of the model's byte-level
    /// BPE stands for at most `max_token_bytes` bytes of the text, its bytes in order: text of
    /// more than `context x max_token_bytes` bytes needs more than `context` tokens, however
    /// it is split. The bound is sound (it never refuses text that fits) and tight for text of
    /// the longest tokens; text that passes is tokenized and checked exactly.
    fn check_prompt_bytes(&self, param: &str, bytes: usize) -> Result<(), ApiError> {
        let max_bytes = self.context_length.saturating_mul(self.backend.max_token_bytes().max(1));
        if bytes > max_bytes {
            return Err(ApiError::prompt_bytes_exceed_context(param, self.context_length, bytes, max_bytes));
        }
        Ok(())
    }
}

/// Everything a request handler needs; shared by all connections.
pub struct AppState {
    models: BTreeMap<String, ModelEntry>,
    aliases: BTreeMap<String, String>,
    store: Arc<Store>,
    pub(crate) limiter: RateLimiter,
    pub(crate) metrics: Metrics,
    pub(crate) ledger: LedgerWriter,
    chat: ChatPageConfig,
    max_body: usize,
    body_timeout: Duration,
    drain: Duration,
    waitlist: WaitlistConfig,
    waitlist_limiter: AddressLimiter,
    /// Set when the drain deadline has passed: running requests end now, as interrupted.
    interrupt: watch::Sender<bool>,
}

impl AppState {
    /// `backends` maps each snapshot id of `config` to its loaded model.
    pub fn new(
        config: &Config,
        mut backends: BTreeMap<String, Arc<dyn Backend>>,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServeError> {
        let mut models = BTreeMap::new();
        for snap in &config.snapshots {
            let backend = backends.remove(&snap.id).ok_or_else(|| ServeError::Backend {
                model: snap.id.clone(),
                message: "no model was loaded for this snapshot".into(),
            })?;
            let native = backend.context_length();
            let context_length = match snap.context_length {
                Some(c) if c > native => {
                    return Err(ServeError::Backend {
                        model: snap.id.clone(),
                        message: format!("context_length {c} is longer than the model's own {native}"),
                    })
                }
                Some(c) => c,
                None => native,
            };
            models.insert(
                snap.id.clone(),
                ModelEntry {
                    config: snap.clone(),
                    context_length,
                    backend,
                    seats: SequenceSeats::new(config.server.max_sequences_per_model, config.server.max_sequences_per_key),
                },
            );
        }
        let w = &config.waitlist;
        Ok(Self {
            models,
            aliases: config.aliases.clone(),
            limiter: RateLimiter::new(config.limits.requests_per_minute, config.limits.tokens_per_minute, clock.clone()),
            ledger: LedgerWriter::start(&store)?,
            store,
            metrics: Metrics::default(),
            chat: config.chat.clone(),
            max_body: config.server.max_body_bytes,
            body_timeout: Duration::from_secs_f64(config.server.body_timeout_seconds),
            drain: Duration::from_secs_f64(config.server.drain_seconds),
            waitlist: w.clone(),
            waitlist_limiter: AddressLimiter::new(w.per_address_per_hour, w.per_hour, clock),
            interrupt: watch::channel(false).0,
        })
    }

    /// Whether running requests are being cut short (the drain deadline passed).
    pub(crate) fn is_interrupting(&self) -> bool {
        *self.interrupt.borrow()
    }

    /// Resolves when running requests must end.
    pub(crate) async fn interrupted(&self) {
        let mut rx = self.interrupt.subscribe();
        // The sender lives as long as `self`, so this only returns once the flag is set.
        let _ = rx.wait_for(|cut| *cut).await;
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Waits until every ledger entry queued so far is in the database.
    pub fn flush_ledger(&self) {
        self.ledger.flush();
    }

    /// Sequences `snapshot` holds now, running or waiting (0 for an unknown snapshot).
    #[cfg(test)]
    pub(crate) fn sequences_held(&self, snapshot: &str) -> usize {
        self.models.get(snapshot).map_or(0, |m| m.seats.held())
    }

    /// The snapshot `name` (a snapshot id or an alias) stands for, if `key` may use it.
    fn model_for<'a>(&'a self, key: &KeyRecord, name: &str) -> Result<(&'a str, &'a ModelEntry), ApiError> {
        self.resolve(name)
            .filter(|(snap, alias)| key.may_use(snap, *alias))
            .and_then(|(snap, _)| self.models.get_key_value(snap))
            .map(|(snap, entry)| (snap.as_str(), entry))
            .ok_or_else(|| ApiError::model_not_found(name))
    }

    /// Resolves an alias or snapshot id to (snapshot id, alias used).
    fn resolve<'a>(&'a self, name: &'a str) -> Option<(&'a str, Option<&'a str>)> {
        if self.models.contains_key(name) {
            return Some((name, None));
        }
        self.aliases
            .get(name)
            .filter(|s| self.models.contains_key(s.as_str()))
            .map(|s| (s.as_str(), Some(name)))
    }
}

/// The routes; `/v1/*` follow OpenAI's API, `/` is the chat page.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(crate::page::index))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/waitlist", post(waitlist))
        .route("/chat/api/completions", post(chat_page_completions))
        .route("/chat/api/usage", get(chat_page_usage))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("Unknown request URL. Please check the URL and method.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Each model's scheduler: its state, the panics it recovered from, and the sequences it holds.
/// `ok` (200) while every scheduler runs, else `degraded` (503) for load balancers to see.
async fn health(State(st): State<Arc<AppState>>) -> Response {
    let mut models = Map::new();
    let mut all_running = true;
    for (id, m) in &st.models {
        let stats = m.backend.stats();
        all_running &= stats.state == SchedulerState::Running;
        models.insert(
            id.clone(),
            json!({"state": stats.state.as_str(), "restarts": stats.restarts, "sequences": m.seats.held()}),
        );
    }
    let (status, word) = if all_running {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    };
    (status, axum::Json(json!({"status": word, "models": models}))).into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let stats: Vec<_> = st.models.iter().map(|(id, m)| (id.clone(), m.backend.stats())).collect();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render(&stats)).into_response()
}

fn model_json(id: &str, created: u64, context_length: usize, snapshot: Option<&str>) -> Value {
    let mut v = json!({
        "id": id,
        "object": "model",
        "created": created,
        "owned_by": "ferrogpt",
        "context_length": context_length,
    });
    if let Some(s) = snapshot {
        v["snapshot"] = json!(s);
    }
    v
}

/// Models this key may use: its snapshots and the aliases that point at them.
fn visible_models(st: &AppState, key: &KeyRecord) -> Vec<Value> {
    let mut out = Vec::new();
    for (id, m) in &st.models {
        if key.may_use(id, None) {
            out.push(model_json(id, m.config.created, m.context_length, None));
        }
    }
    for (alias, target) in &st.aliases {
        if let Some(m) = st.models.get(target) {
            if key.may_use(target, Some(alias)) {
                out.push(model_json(alias, m.config.created, m.context_length, Some(target)));
            }
        }
    }
    out
}

async fn list_models(State(st): State<Arc<AppState>>, ApiKey(key): ApiKey) -> axum::Json<Value> {
    axum::Json(json!({"object": "list", "data": visible_models(&st, &key)}))
}

async fn get_model(State(st): State<Arc<AppState>>, ApiKey(key): ApiKey, Path(id): Path<String>) -> Result<axum::Json<Value>, ApiError> {
    visible_models(&st, &key)
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .map(axum::Json)
        .ok_or_else(|| ApiError::model_not_found(&id))
}

async fn read_body(st: &AppState, body: Body) -> Result<Map<String, Value>, ApiError> {
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

/// The client's address as the listener saw it; `None` when the server runs without one (tests).
fn client_address(extensions: &Extensions) -> Option<IpAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
}

async fn waitlist(State(st): State<Arc<AppState>>, extensions: Extensions, body: Body) -> Response {
    if let Err(retry_after_s) = st.waitlist_limiter.take(client_address(&extensions)) {
        let err = ApiError::rate_limited(
            "requests",
            format!(
                "Too many waitlist requests from your address. Please try again in {}.",
                crate::ratelimit::go_duration(retry_after_s)
            ),
        );
        return err.with_headers(&retry_headers(retry_after_s)).into_response();
    }
    let obj = match read_body(&st, body).await {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let text = |name: &str, required: bool, max: usize| -> Result<String, ApiError> {
        match obj.get(name) {
            Some(Value::String(s)) if s.len() <= max && (!required || !s.trim().is_empty()) => Ok(s.trim().to_string()),
            None | Some(Value::Null) if !required => Ok(String::new()),
            _ => Err(ApiError::invalid(
                name,
                format!(
                    "'{name}' must be a {}string of at most {max} bytes.",
                    if required { "non-empty " } else { "" }
                ),
            )),
        }
    };
    // At most: a short name, an email address (RFC 5321's path limit), a paragraph.
    let fields = (|| Ok::<_, ApiError>((text("name", true, 200)?, text("email", true, 254)?, text("reason", false, 1000)?)))();
    let (name, email, reason) = match fields {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    if !email.contains('@') {
        return ApiError::invalid("email", "'email' must be an email address.").into_response();
    }
    let (store, max_pending) = (st.store.clone(), st.waitlist.max_pending);
    let added = tokio::task::spawn_blocking(move || store.add_waitlist(&name, &email, &reason, max_pending)).await;
    match added {
        Ok(Ok(Some(id))) => (
            StatusCode::CREATED,
            axum::Json(json!({"object": "waitlist.entry", "id": id, "status": "pending"})),
        )
            .into_response(),
        Ok(Ok(None)) => ApiError::rate_limited(
            "requests",
            "The waitlist is full for now; please try again once requests have been reviewed.",
        )
        .into_response(),
        Ok(Err(e)) => {
            tracing::error!("waitlist insert failed: {e}");
            ApiError::server("Could not record the waitlist request.").into_response()
        }
        Err(e) => {
            tracing::error!("waitlist insert task failed: {e}");
            ApiError::server("Could not record the waitlist request.").into_response()
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    Chat,
    Completions,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat.completions",
            Endpoint::Completions => "completions",
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn request_id(prefix: &str) -> String {
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
struct Admitted {
    endpoint: Endpoint,
    id: String,
    snapshot: String,
    backend: Arc<dyn Backend>,
    /// One token list per prompt; each yields `n` choices.
    prompts: Vec<PromptTokens>,
    /// Every sequence's request but its prompt (and seed, which varies by choice).
    template: GenerationRequest,
    n: usize,
    stream: bool,
    include_usage: bool,
    echo: bool,
    headers: HeaderMap,
    /// The places of the request's sequences in the model's bound, given back when the
    /// request ends (this is dropped).
    _seats: Seats,
    acct: Accounting,
}

/// A parsed request of either endpoint, its model resolved and its prompts tokenized.
struct Admission<'a> {
    endpoint: Endpoint,
    /// The snapshot id the request's model name resolved to.
    snapshot: &'a str,
    /// One token list per prompt; each yields `n` choices.
    prompts: Vec<PromptTokens>,
    params: SamplingParams,
    n: usize,
    prompt_logprobs: bool,
    stream: bool,
    include_usage: bool,
    echo: bool,
    /// From the chat page, whose per-key message cap applies.
    chat_page: bool,
}

/// Everything both endpoints share after parsing: check context and reserve.
fn admit(st: &Arc<AppState>, key: &KeyRecord, req: Admission<'_>) -> Result<Admitted, ApiError> {
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
    let reservation = match st.limiter.admit(key.id, snapshot, reserve) {
        Ok(r) => r,
        Err(denied) => {
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
            return Err(err.with_headers(&limit_headers(&state, retry, should_retry)));
        }
    };
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

fn insert(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// `retry-after` (whole seconds, at least 1) and `retry-after-ms`.
fn retry_headers(retry_after_s: f64) -> HeaderMap {
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
fn charge_refused(st: &AppState, key: &KeyRecord, body: Option<&Map<String, Value>>, err: ApiError) -> ApiError {
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

async fn run_admitted(mut adm: Admitted) -> Response {
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

async fn chat_completions(State(st): State<Arc<AppState>>, ApiKey(key): ApiKey, body: Body) -> Result<Response, ApiError> {
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

async fn completions(State(st): State<Arc<AppState>>, ApiKey(key): ApiKey, body: Body) -> Result<Response, ApiError> {
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

/// The chat page's per-key message cap, checked before anything is generated.
fn take_page_message(st: &AppState, key: &KeyRecord) -> Result<(), ApiError> {
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

async fn chat_page_completions(State(st): State<Arc<AppState>>, ApiKey(key): ApiKey, body: Body) -> Result<Response, ApiError> {
    let adm = chat_inner(&st, key, body, true).await?;
    Ok(run_admitted(adm).await)
}

async fn chat_page_usage(State(st): State<Arc<AppState>>, ApiKey(key): ApiKey) -> Result<axum::Json<Value>, ApiError> {
    let window = st.chat.window_hours * 3600.0;
    let used = st.store.count_chat_messages(key.id, unix_now() as f64, window).map_err(|e| {
        tracing::error!("chat usage read failed: {e}");
        ApiError::server("The usage store is unavailable.")
    })?;
    Ok(axum::Json(json!({
        "used": used,
        "cap": st.chat.messages_per_window,
        "window_hours": st.chat.window_hours,
        "key_name": key.name,
    })))
}

/// How long connections get to close after running requests were cut short at the drain
/// deadline; one whose client stopped reading never closes, and is abandoned.
const AFTER_INTERRUPT: Duration = Duration::from_secs(2);

/// Serves until `shutdown` resolves, then stops accepting connections and lets running requests
/// finish for up to `[server] drain_seconds`; those still running then are cut short and
/// recorded as interrupted. Returns once the ledger holds every request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
    let deadline = async {
        match stopping_rx.await {
            Ok(()) => tokio::time::sleep(state.drain).await,
            // The server ended by itself, which the other branch sees.
            Err(_) => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = &mut server => r,
        () = deadline => {
            tracing::warn!("drain deadline passed: cutting short the requests still running");
            state.interrupt.send_replace(true);
            tokio::time::timeout(AFTER_INTERRUPT, &mut server).await.unwrap_or(Ok(()))
        }
    };
    result.map_err(ServeError::Serve)?;
    state.flush_ledger();
    Ok(())
}
