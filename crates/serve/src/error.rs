//! Errors: `ServeError` for the library's own failures (config, store, start-up) and
//! `ApiError`, which is what a client sees, in OpenAI's `{"error": {...}}` envelope.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Failures of the serving library outside a single request.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read config {path}: {source}")]
    ConfigRead { path: String, source: std::io::Error },
    #[error("config {path}: {message}")]
    Config { path: String, message: String },
    #[error("state database {path}: {source}")]
    Store { path: String, source: rusqlite::Error },
    #[error("cannot create state folder {path}: {source}")]
    StateDir { path: String, source: std::io::Error },
    #[error("{0}")]
    NotFound(String),
    #[error("model {model}: {message}")]
    Backend { model: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("server stopped with an error: {0}")]
    Serve(std::io::Error),
}

/// An error returned to an API client. `kind` is OpenAI's `type` field; `code` is a string
/// code the official clients match on (never an integer, unlike some open servers).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            headers: Vec::new(),
        }
    }

    /// 400 for a malformed or out-of-range field; `param` names the field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        e.param = Some(param.into());
        e
    }

    /// 400 for a request that is not valid at all (body not JSON, not an object).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn context_length(context: usize, prompt: usize, completion: Option<usize>) -> Self {
        let message = match completion {
            Some(c) => format!(
                "This model's maximum context length is {context} tokens. However, you requested {} tokens ({prompt} in the messages, {c} in the completion). Please reduce the length of the messages or completion.",
                prompt + c
            ),
            None => format!(
                "This model's maximum context length is {context} tokens. However, your messages resulted in {prompt} tokens. Please reduce the length of the messages."
            ),
        };
        let mut e = Self::invalid("messages", message);
        e.code = Some("context_length_exceeded");
        e
    }

    pub fn invalid_api_key(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message);
        e.code = Some("invalid_api_key");
        e
    }

    pub fn model_not_found(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
        );
        e.code = Some("model_not_found");
        e
    }

    /// 404 for a model this server has none of, as OpenAI answers a model that does not
    /// exist: `message` says how to load one.
    pub fn model_not_loaded(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message);
        e.code = Some("model_not_found");
        e
    }

    /// 400 for input the moderation model flagged, refused before anything is generated
    /// (Azure OpenAI's answer to a filtered prompt: `code: "content_filter"`).
    pub fn content_filter(message: impl Into<String>) -> Self {
        let mut e = Self::invalid("messages", message);
        e.code = Some("content_filter");
        e
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "Method not allowed on this path.",
        )
    }

    /// 429; `kind` is `"requests"` or `"tokens"` as OpenAI reports which limit was hit.
    pub fn rate_limited(kind: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, kind, message);
        e.code = Some("rate_limit_exceeded");
        e
    }

    /// 429 when a model (or the key's share of it) holds as many sequences as it may: retry
    /// once some have finished.
    pub fn queue_full(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "requests", message);
        e.code = Some("queue_full");
        e
    }

    /// 400 for a prompt whose length in bytes alone shows that it cannot fit the context:
    /// refused before it is tokenized.
    pub fn prompt_bytes_exceed_context(param: &str, context: usize, bytes: usize, max_bytes: usize) -> Self {
        let mut e = Self::invalid(
            param,
            format!(
                "This model's maximum context length is {context} tokens, which hold at most {max_bytes} bytes of text. However, your prompt is {bytes} bytes long. Please reduce the length of the prompt."
            ),
        );
        e.code = Some("context_length_exceeded");
        e
    }

    /// 429 for the chat page's per-user message cap.
    pub fn usage_cap(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "usage_cap", message);
        e.code = Some("usage_cap_reached");
        e
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("Request body is larger than the server's limit of {limit} bytes."),
        )
    }

    /// 408 for a body that did not arrive in time (a slow or stalled sender).
    pub fn request_timeout(seconds: f64) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!("The request body did not arrive within {seconds} seconds."),
        )
    }

    pub fn server(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
    }

    pub fn with_headers(mut self, headers: &HeaderMap) -> Self {
        for (k, v) in headers {
            self.headers.push((k.clone(), v.clone()));
        }
        self
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut resp = (self.status, axum::Json(body)).into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}
