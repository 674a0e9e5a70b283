//! `POST /v1/moderations` and the chat page's input check, served by the moderation classifier
//! that `ferrogpt rm train --kind moderation` trains: [`Moderator`] is the loaded classifier
//! (what it reads is its text under the BOS policy, `ferrogpt_infer::text_prompt`, what its probabilities mean in
//! OpenAI's categories is ferrogpt-chatdata's `moderation`), and [`moderations`] the endpoint.
//!
//! Moderations are free, as in OpenAI's API: a request counts against the key's RPM and, for
//! the tokens the classifier reads, TPM on the moderation model's own buckets (classifying costs
//! the server a forward pass per input, which a flood must not get for nothing), and gets a
//! ledger row with those tokens at a price of 0, so usage stays visible but is billed nothing.
//!
//! Text longer than the classifier's context is truncated silently, as OpenAI does, keeping its
//! end: the score is read at the last token, and training kept the same tail of long texts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ferrogpt_chatdata::moderation::request_text;
use ferrogpt_chatdata::moderation::{moderation, Moderation};
use ferrogpt_chatdata::Category;
use ferrogpt_engine::kernels::post_training::log_softmax;
use ferrogpt_infer::text_prompt;
use ferrogpt_infer::{ChatMessage, InferError, LocalModel};

use crate::accounting::Accounting;
use crate::admission::{charge_refused, insert, limit_refusal, read_body, request_id, take_page_message};
use crate::api;
use crate::auth::ApiKey;
use crate::error::{ApiError, ServeError};
use crate::respond::ModerationResponse;
use crate::server::AppState;
use crate::store::KeyRecord;

/// The id the moderation classifier is served and listed under.
pub const MODERATION_MODEL_ID: &str = "ferrogpt-moderation";

/// The folder inside a chat model's folder where the speedrun puts its moderation classifier.
const FOLDER_IN_MODEL: &str = "moderation";

/// A loaded moderation classifier: one output per [`Category::ALL`], in that order.
pub struct Moderator {
    model: LocalModel,
    /// When the classifier was made (its folder's modification time), for `/v1/models`.
    pub(crate) created: u64,
}

impl Moderator {
    /// Loads the classifier in `folder`, refusing a model that is not one.
    pub fn load(folder: &Path) -> Result<Self, ServeError> {
        let model = LocalModel::load(folder).map_err(|e| ServeError::Backend {
            model: folder.display().to_string(),
            message: e.to_string(),
        })?;
        Self::new(model, crate::config::folder_mtime(folder))
    }

    /// Wraps a loaded classifier; `created` is shown in `/v1/models`.
    pub fn new(model: LocalModel, created: u64) -> Result<Self, ServeError> {
        let labels = Category::ALL.len();
        if model.config().num_labels != Some(labels) {
            return Err(ServeError::Backend {
                model: model.dir().display().to_string(),
                message: format!(
                    "not a moderation classifier: its config.json must have num_labels = {labels} (one per policy category), found {:?}",
                    model.config().num_labels
                ),
            });
        }
        Ok(Self { model, created })
    }

    /// The moderation classifier that comes with the chat model in `model_folder`, if any.
    pub fn folder_in(model_folder: &Path) -> Option<PathBuf> {
        let folder = model_folder.join(FOLDER_IN_MODEL);
        folder.is_dir().then_some(folder)
    }

    pub fn context_length(&self) -> usize {
        self.model.context_length()
    }

    /// What the classifier reads for `text`: its tokens, the last `context_length` of them.
    pub fn tokens(&self, text: &str) -> Vec<u32> {
        let mut ids = text_prompt(self.model.tokenizer(), text).ids;
        let context = self.context_length();
        if ids.len() > context {
            ids.drain(..ids.len() - context);
        }
        ids
    }

    /// The moderation result of each token list (from [`Moderator::tokens`]).
    pub fn moderate(&self, token_lists: &[Vec<u32>]) -> Result<Vec<Moderation>, InferError> {
        let logits = self.model.classify(token_lists)?;
        Ok(logits
            .iter()
            .map(|row| {
                let probs: Vec<f64> = log_softmax(row).into_iter().map(f64::exp).collect();
                moderation(&probs)
            })
            .collect())
    }
}

/// Runs CPU-bound classifier work on tokio's blocking pool, off the runtime's workers.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!("moderation task failed: {e}");
        ApiError::server("The moderation model failed to run.")
    })
}

fn no_moderator() -> ApiError {
    ApiError::model_not_loaded(
        "No moderation model is loaded on this server: start `ferrogpt serve` with --moderation-model PATH, or put the classifier in the model folder's moderation/ folder.",
    )
}

pub(crate) async fn moderations(State(st): State<Arc<AppState>>, ApiKey(key): ApiKey, body: Body) -> Result<Response, ApiError> {
    let obj = read_body(&st, body).await.map_err(|e| charge_refused(&st, &key, None, e))?;
    match api::parse_moderation(&obj) {
        Ok(req) => answer(&st, &key, req).await,
        Err(e) => Err(charge_refused(&st, &key, Some(&obj), e)),
    }
}

async fn answer(st: &Arc<AppState>, key: &KeyRecord, req: api::ModerationBody) -> Result<Response, ApiError> {
    let refused = |e: ApiError| charge_refused(st, key, None, e);
    let moderator = st.moderator.clone().ok_or_else(|| refused(no_moderator()))?;
    if let Some(name) = req.model.as_deref().filter(|&name| name != MODERATION_MODEL_ID) {
        return Err(refused(ApiError::model_not_found(name)));
    }
    let m = moderator.clone();
    let token_lists: Vec<Vec<u32>> = off_runtime(move || req.inputs.iter().map(|t| m.tokens(t)).collect()).await?;
    let tokens: u64 = token_lists.iter().map(|t| t.len() as u64).sum();
    let reservation = st
        .limiter
        .admit(key.id, MODERATION_MODEL_ID, tokens)
        .map_err(|denied| limit_refusal(st, MODERATION_MODEL_ID, denied))?;
    let id = request_id("modr");
    let mut headers = reservation.state.headers();
    insert(&mut headers, "x-request-id", id.clone());
    let mut acct = Accounting::open(
        st.clone(),
        reservation,
        key.id,
        MODERATION_MODEL_ID,
        "moderations",
        (0.0, 0.0),
        tokens,
        0,
    );
    acct.row_written().await.map_err(|e| e.with_headers(&headers))?;
    let results = off_runtime(move || moderator.moderate(&token_lists)).await.and_then(|r| {
        r.map_err(|e| {
            tracing::error!("moderation failed: {e}");
            ApiError::server("The moderation model failed to run.")
        })
    });
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            acct.status = e.status.as_u16();
            acct.outcome = "error";
            return Err(e.with_headers(&headers));
        }
    };
    acct.status = 200;
    acct.outcome = "ok";
    let body = ModerationResponse::new(id, MODERATION_MODEL_ID, results);
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().extend(headers);
    Ok(resp)
}

/// The chat page's check of a conversation before it is generated for: with a moderation model
/// loaded, a conversation whose user turns (what the classifier was trained to read) are
/// flagged is refused with a `content_filter` error and still takes one of the page's
/// messages, as a generated reply would. Without one, every conversation passes.
pub(crate) async fn check_chat_page_input(st: &AppState, key: &KeyRecord, messages: &[ChatMessage]) -> Result<(), ApiError> {
    let Some(moderator) = st.moderator.clone() else {
        return Ok(());
    };
    let text = request_text(messages);
    let results = off_runtime(move || {
        let tokens = moderator.tokens(&text);
        moderator.moderate(&[tokens])
    })
    .await?
    .map_err(|e| {
        tracing::error!("chat page moderation failed: {e}");
        ApiError::server("The moderation model failed to run.")
    })?;
    let Some(flagged) = results.iter().find(|m| m.flagged) else {
        return Ok(());
    };
    take_page_message(st, key)?;
    Err(ApiError::content_filter(format!(
        "Your message was flagged by the moderation model ({}) and was not answered. It counts toward your message cap.",
        flagged_categories(flagged)
    )))
}

/// The flagged categories of a flagged result, for the refusal; a result can be flagged by
/// the total probability of the harmful categories while no single category passes the
/// threshold, and then names its likeliest one.
fn flagged_categories(m: &Moderation) -> String {
    let named: Vec<&str> = m.categories.iter().filter(|(_, on)| **on).map(|(name, _)| *name).collect();
    if !named.is_empty() {
        return named.join(", ");
    }
    m.category_scores
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or_else(|| "unsafe".to_string(), |(name, _)| format!("most likely {name}"))
}
