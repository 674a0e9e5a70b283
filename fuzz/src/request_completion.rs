//! `/v1/completions` request bodies: any bytes either parse into a request inside the
//! documented bounds or are rejected with a 400 that says why.

use serde_json::Value;

/// The code under test: the server's body parsing, which hands what the model is asked to do
/// to `ferrogpt_infer::request`.
mod under_test {
    pub use ferrogpt_infer::request::CompletionPrompt;
    pub use ferrogpt_serve::api::{parse_body, parse_completion, CompletionBody};

    /// Body bytes to a request, or the client-facing rejection (status, message).
    pub fn parse(body: &[u8]) -> Result<CompletionBody, (u16, String)> {
        parse_body(body)
            .and_then(|map| parse_completion(&map))
            .map_err(|e| (e.status.as_u16(), e.message))
    }
}

use crate::request_chat::check_sampling;
use under_test::CompletionPrompt;

pub fn run(data: &[u8], _scratch: &std::path::Path) {
    let is_object = matches!(serde_json::from_slice::<Value>(data), Ok(Value::Object(_)));
    match under_test::parse(data) {
        Err((status, message)) => {
            assert_eq!(status, 400, "a malformed request is the client's fault: {message}");
            assert!(!message.is_empty(), "a rejection must say why");
        }
        Ok(request) => {
            assert!(is_object, "only a JSON object is a request");
            check_bounds(&request);
            assert_eq!(under_test::parse(data).ok(), Some(request));
        }
    }
}

fn check_bounds(body: &under_test::CompletionBody) {
    assert!(!body.model.is_empty());
    let r = &body.request;
    assert!((1..=128).contains(&r.prompts.len()), "{} prompts", r.prompts.len());
    // A token-id prompt holds at least one id: an empty list is no prompt at all.
    assert!(
        r.prompts
            .iter()
            .all(|p| !matches!(p, CompletionPrompt::Tokens(ids) if ids.is_empty())),
        "empty token-id prompt"
    );
    // The legacy endpoint's logprobs is an integer up to 5.
    check_sampling(&r.params, r.n, 5);
    // The legacy endpoint defaults to 16 tokens and allows 0 (score the prompt only).
    assert!(
        r.params.max_tokens.is_some_and(|m| m <= u32::MAX as usize),
        "max_tokens {:?}",
        r.params.max_tokens
    );
    assert!(!body.include_usage || body.stream, "stream_options needs stream");
}
