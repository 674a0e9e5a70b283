//! Who is asking: the API-key extractor. A handler that takes an [`ApiKey`] runs only for a
//! request with a valid bearer key; any other gets OpenAI's 401 envelope before its body is read.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use crate::error::ApiError;
use crate::server::AppState;
use crate::store::KeyRecord;

/// The key a request authenticated with.
pub(crate) struct ApiKey(pub(crate) KeyRecord);

impl FromRequestParts<Arc<AppState>> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Self, ApiError> {
        authenticate(st, &parts.headers).await.map(ApiKey)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Looks the bearer key up on the store's key-lookup connections, off the async runtime.
async fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<KeyRecord, ApiError> {
    let Some(secret) = bearer(headers).filter(|s| !s.is_empty()) else {
        return Err(ApiError::invalid_api_key(
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        ));
    };
    let (store, presented) = (st.store().clone(), secret.to_string());
    let found = tokio::task::spawn_blocking(move || store.authenticate(&presented)).await;
    match found {
        Ok(Ok(Some(key))) => Ok(key),
        Ok(Ok(None)) => Err(ApiError::invalid_api_key(format!(
            "Incorrect API key provided: {}. Create one with `ferrogpt keys create`.",
            redact(secret)
        ))),
        Ok(Err(e)) => {
            tracing::error!("key lookup failed: {e}");
            Err(ApiError::server("The key store is unavailable."))
        }
        Err(e) => {
            tracing::error!("key lookup task failed: {e}");
            Err(ApiError::server("The key store is unavailable."))
        }
    }
}

/// Shows only the ends of a secret, as OpenAI does in its 401 message.
fn redact(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 8 {
        return "sk-***".into();
    }
    let head: String = chars[..3.min(chars.len())].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}***{tail}")
}
