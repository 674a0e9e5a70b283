//! `/v1/completions` request bodies: any bytes either parse into a request inside the
//! documented bounds or are rejected with a 400 that says why.

use ferrogpt_infer::request::CompletionPrompt;
use ferrogpt_serve::api::{parse_completion, CompletionBody};

use crate::request::{check_parse, check_sampling};

pub fn run(data: &[u8], _scratch: &std::path::Path) {
    check_parse(data, parse_completion, check_bounds);
}

fn check_bounds(body: &CompletionBody) {
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
