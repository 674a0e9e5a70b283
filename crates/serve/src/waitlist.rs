//! `POST /v1/waitlist`: anyone may ask for a key. Inserts are limited per client address and in
//! all, and the pending list is capped, so the endpoint cannot be used to fill the database.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{Extensions, StatusCode};
use serde_json::{Map, Value};

use crate::admission::{read_body, retry_headers};
use crate::error::ApiError;
use crate::respond::WaitlistEntry;
use crate::server::AppState;

/// The client's address as the listener saw it; `None` when the server runs without one (tests).
fn client_address(extensions: &Extensions) -> Option<IpAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
}

pub(crate) async fn waitlist(
    State(st): State<Arc<AppState>>,
    extensions: Extensions,
    body: Body,
) -> Result<(StatusCode, axum::Json<WaitlistEntry>), ApiError> {
    if let Err(retry_after_s) = st.waitlist_limiter.take(client_address(&extensions)) {
        let err = ApiError::rate_limited(
            "requests",
            format!(
                "Too many waitlist requests from your address. Please try again in {}.",
                crate::ratelimit::go_duration(retry_after_s)
            ),
        );
        return Err(err.with_headers(&retry_headers(retry_after_s)));
    }
    let obj = read_body(&st, body).await?;
    // At most: a short name, an email address (RFC 5321's path limit), a paragraph.
    let name = text_field(&obj, "name", true, 200)?;
    let email = text_field(&obj, "email", true, 254)?;
    let reason = text_field(&obj, "reason", false, 1000)?;
    if !email.contains('@') {
        return Err(ApiError::invalid("email", "'email' must be an email address."));
    }
    let (store, max_pending) = (st.store.clone(), st.waitlist.max_pending);
    let added = tokio::task::spawn_blocking(move || store.add_waitlist(&name, &email, &reason, max_pending))
        .await
        .map_err(|e| {
            tracing::error!("waitlist insert task failed: {e}");
            ApiError::server("Could not record the waitlist request.")
        })?
        .map_err(|e| {
            tracing::error!("waitlist insert failed: {e}");
            ApiError::server("Could not record the waitlist request.")
        })?;
    let id = added.ok_or_else(|| {
        ApiError::rate_limited(
            "requests",
            "The waitlist is full for now; please try again once requests have been reviewed.",
        )
    })?;
    Ok((StatusCode::CREATED, axum::Json(WaitlistEntry::pending(id))))
}

/// A string field of at most `max` bytes, trimmed; a `required` one must not be blank, an
/// optional one may be missing or null (then it is empty).
fn text_field(obj: &Map<String, Value>, name: &str, required: bool, max: usize) -> Result<String, ApiError> {
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
}
