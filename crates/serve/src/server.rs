//! The server: the shared state ([`AppState`], one [`ModelEntry`] per snapshot), the routes,
//! the small handlers (health, metrics, models), and [`serve`], which shuts down gracefully with a
//! drain deadline. Admission is `admission`'s, the generating endpoints are `completion`'s and
//! `run`'s, moderations are `moderation`'s, the waitlist is `waitlist`'s; what a request costs
//! is `accounting`'s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;

use crate::auth::ApiKey;
use crate::backend::{Backend, SchedulerState};
use crate::completion::{chat_completions, chat_page_completions, chat_page_usage, completions};
use crate::config::{ChatPageConfig, Config, SnapshotConfig, WaitlistConfig};
use crate::error::{ApiError, ServeError};
use crate::ledger::LedgerWriter;
use crate::metrics::Metrics;
use crate::moderation::{moderations, Moderator, MODERATION_MODEL_ID};
use crate::ratelimit::{AddressLimiter, Clock, RateLimiter};
use crate::respond::{Health, Model, ModelHealth, ModelList};
use crate::seats::SequenceSeats;
use crate::store::{KeyRecord, Store};
use crate::waitlist::waitlist;

/// One servable snapshot and the model behind it.
pub struct ModelEntry {
    pub config: SnapshotConfig,
    pub context_length: usize,
    pub backend: Arc<dyn Backend>,
    pub(crate) seats: Arc<SequenceSeats>,
}

impl ModelEntry {
    /// Refuses, before tokenizing it, text that cannot fit the context. Tokenizing is linear
    /// but not free (up to the body limit of 8 MiB), and every token of the model's byte-level
    /// BPE stands for at most `max_token_bytes` bytes of the text, its bytes in order: text of
    /// more than `context x max_token_bytes` bytes needs more than `context` tokens, however
    /// it is split. The bound is sound (it never refuses text that fits) and tight for text of
    /// the longest tokens; text that passes is tokenized and checked exactly.
    pub(crate) fn check_prompt_bytes(&self, param: &str, bytes: usize) -> Result<(), ApiError> {
        let max_bytes = self.context_length.saturating_mul(self.backend.max_token_bytes().max(1));
        if bytes > max_bytes {
            return Err(ApiError::prompt_bytes_exceed_context(param, self.context_length, bytes, max_bytes));
        }
        Ok(())
    }
}

/// Everything a request handler needs; shared by all connections.
pub struct AppState {
    pub(crate) models: BTreeMap<String, ModelEntry>,
    pub(crate) aliases: BTreeMap<String, String>,
    pub(crate) store: Arc<Store>,
    pub(crate) limiter: RateLimiter,
    pub(crate) metrics: Metrics,
    pub(crate) ledger: LedgerWriter,
    pub(crate) chat: ChatPageConfig,
    pub(crate) max_body: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) drain: Duration,
    pub(crate) waitlist: WaitlistConfig,
    pub(crate) waitlist_limiter: AddressLimiter,
    /// Set when the drain deadline has passed: running requests end now, as interrupted.
    pub(crate) interrupt: watch::Sender<bool>,
    /// The moderation classifier behind `/v1/moderations` and the chat page's input check.
    pub(crate) moderator: Option<Arc<Moderator>>,
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
            moderator: None,
        })
    }

    /// Serves `moderator` at `/v1/moderations` and moderates the chat page's input with it.
    pub fn with_moderator(mut self, moderator: Moderator) -> Self {
        self.moderator = Some(Arc::new(moderator));
        self
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
    pub(crate) fn model_for<'a>(&'a self, key: &KeyRecord, name: &str) -> Result<(&'a str, &'a ModelEntry), ApiError> {
        self.resolve(name)
            .filter(|(snap, alias)| key.may_use(snap, *alias))
            .and_then(|(snap, _)| self.models.get_key_value(snap))
            .map(|(snap, entry)| (snap.as_str(), entry))
            .ok_or_else(|| ApiError::model_not_found(name))
    }

    /// Resolves an alias or snapshot id to (snapshot id, alias used).
    pub(crate) fn resolve<'a>(&'a self, name: &'a str) -> Option<(&'a str, Option<&'a str>)> {
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
        .route("/v1/moderations", post(moderations))
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
async fn health(State(st): State<Arc<AppState>>) -> (StatusCode, axum::Json<Health>) {
    let mut models = BTreeMap::new();
    let mut all_running = true;
    for (id, m) in &st.models {
        let stats = m.backend.stats();
        all_running &= stats.state == SchedulerState::Running;
        let model = ModelHealth {
            state: stats.state.as_str(),
            restarts: stats.restarts,
            sequences: m.seats.held(),
        };
        models.insert(id.clone(), model);
    }
    let (status, word) = if all_running {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    };
    (status, axum::Json(Health { status: word, models }))
}

async fn metrics(State(st): State<Arc<AppState>>) -> ([(HeaderName, &'static str); 1], String) {
    let stats: Vec<_> = st.models.iter().map(|(id, m)| (id.clone(), m.backend.stats())).collect();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render(&stats))
}

/// Models this key may use: its snapshots, the aliases that point at them, and the
/// moderation classifier, which every key may use (it generates nothing and is free).
fn visible_models(st: &AppState, key: &KeyRecord) -> Vec<Model> {
    let mut out = Vec::new();
    for (id, m) in &st.models {
        if key.may_use(id, None) {
            out.push(Model::new(id, m.config.created, m.context_length, None));
        }
    }
    for (alias, target) in &st.aliases {
        if let Some(m) = st.models.get(target) {
            if key.may_use(target, Some(alias)) {
                out.push(Model::new(alias, m.config.created, m.context_length, Some(target)));
            }
        }
    }
    if let Some(m) = &st.moderator {
        out.push(Model::new(MODERATION_MODEL_ID, m.created, m.context_length(), None));
    }
    out
}

async fn list_models(State(st): State<Arc<AppState>>, ApiKey(key): ApiKey) -> axum::Json<ModelList> {
    axum::Json(ModelList::new(visible_models(&st, &key)))
}

async fn get_model(State(st): State<Arc<AppState>>, ApiKey(key): ApiKey, Path(id): Path<String>) -> Result<axum::Json<Model>, ApiError> {
    visible_models(&st, &key)
        .into_iter()
        .find(|m| m.id == id)
        .map(axum::Json)
        .ok_or_else(|| ApiError::model_not_found(&id))
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
