//! `/v1/chat/completions` request bodies: any bytes either parse into a request inside the
//! documented bounds or are rejected with a 400 that says why.

use serde_json::Value;

/// The code under test: the server's body parsing, which hands what the model is asked to do
/// to `ferrogpt_infer::request`.
mod under_test {
    pub use ferrogpt_serve::api::{parse_body, parse_chat, ChatBody};

    /// Body bytes to a request, or the client-facing rejection (status, message).
    pub fn parse(body: &[u8]) -> Result<ChatBody, (u16, String)> {
        parse_body(body)
            .and_then(|map| parse_chat(&map))
            .map_err(|e| (e.status.as_u16(), e.message))
    }
}

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
            // Parsing is a function of the body alone.
            assert_eq!(under_test::parse(data).ok(), Some(request));
        }
    }
}

fn check_bounds(body: &under_test::ChatBody) {
    assert!(!body.model.is_empty());
    let r = &body.request;
    assert!(!r.messages.is_empty());
    check_sampling(&r.params, r.n, 20);
    assert!(
        r.params.max_tokens.is_none_or(|m| m >= 1 && m <= u32::MAX as usize),
        "max_tokens {:?}",
        r.params.max_tokens
    );
    assert!(!body.include_usage || body.stream, "stream_options needs stream");
}

/// The sampling bounds both endpoints share; `max_logprobs` is the endpoint's own.
pub(crate) fn check_sampling(s: &ferrogpt_infer::SamplingParams, n: usize, max_logprobs: usize) {
    assert!((0.0..=2.0).contains(&s.temperature), "temperature {}", s.temperature);
    assert!((0.0..=1.0).contains(&s.top_p), "top_p {}", s.top_p);
    assert!((-2.0..=2.0).contains(&s.presence_penalty));
    assert!((-2.0..=2.0).contains(&s.frequency_penalty));
    assert!((1..=128).contains(&n), "n {n}");
    assert!(s.stop.len() <= 4 && s.stop.iter().all(|x| !x.is_empty()), "stop {:?}", s.stop);
    // OpenAI's limit on logit_bias entries.
    assert!(s.logit_bias.len() <= 300, "{} logit_bias entries", s.logit_bias.len());
    assert!(s.logit_bias.values().all(|b| (-100.0..=100.0).contains(b)));
    assert!(s.logprobs.is_none_or(|k| k <= max_logprobs), "logprobs {:?}", s.logprobs);
}
