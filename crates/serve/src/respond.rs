//! The pieces of OpenAI's response bodies that the buffered and the streaming paths share:
//! logprobs in the chat and the legacy completions shapes, echoed prompts, usage.

use ferrogpt_infer::{PromptTokens, TokenLogprob};
use serde_json::{json, Map, Value};

use crate::backend::Backend;

/// A token's text (invalid UTF-8 replaced) and bytes, as logprobs show them.
pub(crate) fn token_text(backend: &dyn Backend, token: u32) -> (String, Vec<u8>) {
    let bytes = backend.token_bytes(token);
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

pub(crate) fn chat_logprobs(backend: &dyn Backend, tokens: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let (text, bytes) = token_text(backend, t.token);
            json!({
                "token": text,
                "logprob": t.logprob,
                "bytes": bytes,
                "top_logprobs": t.top.iter().map(|&(id, logprob)| {
                    let (text, bytes) = token_text(backend, id);
                    json!({"token": text, "logprob": logprob, "bytes": bytes})
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// The legacy completions logprobs object of `(token, its logprob)` entries (`None` for the
/// first prompt token, which nothing predicts); `offset` is the text offset of the first token.
pub(crate) fn legacy_logprobs<'a>(
    backend: &dyn Backend,
    entries: impl IntoIterator<Item = (u32, Option<&'a TokenLogprob>)>,
    offset: usize,
) -> Value {
    let mut pos = offset;
    let mut texts = Vec::new();
    let mut lps = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    for (token, lp) in entries {
        let (text, _) = token_text(backend, token);
        lps.push(lp.map_or(Value::Null, |l| json!(l.logprob)));
        tops.push(match lp {
            None => Value::Null,
            Some(l) => {
                let mut m = Map::new();
                for &(id, logprob) in &l.top {
                    m.entry(token_text(backend, id).0).or_insert(json!(logprob));
                }
                Value::Object(m)
            }
        });
        offsets.push(json!(pos));
        pos += text.len();
        texts.push(json!(text));
    }
    json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// The client's part of prompt `p` (without what the BOS policy added) with the logprob of each
/// of its tokens from `scored` (the prompt logprobs of the whole prompt).
pub(crate) fn echoed<'a>(
    p: &'a PromptTokens,
    scored: &'a [Option<TokenLogprob>],
) -> impl Iterator<Item = (u32, Option<&'a TokenLogprob>)> + 'a {
    p.ids
        .iter()
        .enumerate()
        .skip(p.added)
        .map(move |(k, &id)| (id, scored.get(k).and_then(Option::as_ref)))
}

/// Sampled tokens as logprob entries.
pub(crate) fn sampled(tokens: &[TokenLogprob]) -> impl Iterator<Item = (u32, Option<&TokenLogprob>)> {
    tokens.iter().map(|t| (t.token, Some(t)))
}

/// The text of the client's part of prompt `p`, token by token as logprobs show it.
pub(crate) fn echo_text(backend: &dyn Backend, p: &PromptTokens) -> String {
    p.ids[p.added.min(p.ids.len())..]
        .iter()
        .map(|&id| token_text(backend, id).0)
        .collect()
}

pub(crate) fn usage_json(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}
