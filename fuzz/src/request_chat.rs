//! `/v1/chat/completions` request bodies: any bytes either parse into a request inside the
//! documented bounds or are rejected with a 400 that says why.

use ferrogpt_serve::api::{parse_chat, ChatBody};

use crate::request::{check_parse, check_sampling};

pub fn run(data: &[u8], _scratch: &std::path::Path) {
    check_parse(data, parse_chat, check_bounds);
}

fn check_bounds(body: &ChatBody) {
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
