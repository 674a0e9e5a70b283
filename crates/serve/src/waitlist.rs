//! `POST /v1/waitlist`: anyone may ask for a key. Inserts are limited per client address and in
//! all, and the pending list is capped, so the endpoint cannot be used to fill the database.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::admission::{read_body, retry_headers};
use crate::error::ApiError;
use crate::server::AppState;

/// The client's address as the listener saw it; `None` when the server runs without one (tests).
fn client_address(extensions: &Extensions) -> Option<IpAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
}

pub(crate) async fn waitlist(State(st): State<Arc<AppState>>, extensions: Extensions, body: Body) -> Response {
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
