//! `/v1/completions` request bodies: any bytes either parse into a request inside the
//! documented bounds or are rejected with a 400 that says why.

use serde_json::Value;

/// The code under test. Request translation is moving from `ferrogpt_serve::api` into
/// `ferrogpt_infer`; re-pointing the harness is this `use` line.
mod under_test {
    pub use ferrogpt_serve::api::{parse_body, parse_completion, CompletionRequest, Prompt};

    /// Body bytes to a request, or the client-facing rejection (status, message).
    pub fn parse(body: &[u8]) -> Result<CompletionRequest, (u16, String)> {
        parse_body(body)
            .and_then(|map| parse_completion(&map))
            .map_err(|e| (e.status.as_u16(), e.message))
    }
}

use under_test::Prompt;

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

fn check_bounds(r: &under_test::CompletionRequest) {
    assert!(!r.model.is_empty());
    assert!((1..=128).contains(&r.prompts.len()), "{} prompts", r.prompts.len());
    // A token-id prompt holds at least one id: an empty list is no prompt at all.
    assert!(
        r.prompts.iter().all(|p| !matches!(p, Prompt::Tokens(ids) if ids.is_empty())),
        "empty token-id prompt"
    );
    let s = &r.sampling;
    assert!((0.0..=2.0).contains(&s.temperature), "temperature {}", s.temperature);
    assert!((0.0..=1.0).contains(&s.top_p), "top_p {}", s.top_p);
    assert!((-2.0..=2.0).contains(&s.presence_penalty));
    assert!((-2.0..=2.0).contains(&s.frequency_penalty));
    assert!((1..=128).contains(&s.n), "n {}", s.n);
    assert!(s.stop.len() <= 4 && s.stop.iter().all(|x| !x.is_empty()), "stop {:?}", s.stop);
    assert!(s.logit_bias.iter().all(|(_, b)| (-100.0..=100.0).contains(b)));
    // The legacy endpoint defaults to 16 tokens and allows 0 (score the prompt only).
    assert!(s.max_tokens.is_some_and(|m| m <= u32::MAX as usize), "max_tokens {:?}", s.max_tokens);
    assert!(r.logprobs.is_none_or(|k| k <= 5));
    assert!(!r.include_usage || r.stream, "stream_options needs stream");
}
