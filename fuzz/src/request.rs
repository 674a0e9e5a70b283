//! What both request harnesses check: any bytes either parse into a request inside the
//! documented bounds or are rejected with a 400 that says why, and parsing depends on the
//! body alone.

use std::fmt::Debug;

use ferrogpt_infer::SamplingParams;
use ferrogpt_serve::api::parse_body;
use ferrogpt_serve::ApiError;
use serde_json::{Map, Value};

/// Feeds `data` to the server's body parsing and then to `parse` (one endpoint's request
/// translation); a request that parses must satisfy `check_bounds`.
pub(crate) fn check_parse<T: PartialEq + Debug>(data: &[u8], parse: fn(&Map<String, Value>) -> Result<T, ApiError>, check_bounds: fn(&T)) {
    let is_object = matches!(serde_json::from_slice::<Value>(data), Ok(Value::Object(_)));
    match parse_body(data).and_then(|map| parse(&map)) {
        Err(e) => {
            assert_eq!(e.status.as_u16(), 400, "a malformed request is the client's fault: {}", e.message);
            assert!(!e.message.is_empty(), "a rejection must say why");
        }
        Ok(request) => {
            assert!(is_object, "only a JSON object is a request");
            check_bounds(&request);
            let again = parse_body(data).and_then(|map| parse(&map)).ok();
            assert_eq!(again, Some(request), "parsing is a function of the body alone");
        }
    }
}

/// The sampling bounds both endpoints share; `max_logprobs` is the endpoint's own.
pub(crate) fn check_sampling(s: &SamplingParams, n: usize, max_logprobs: usize) {
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
