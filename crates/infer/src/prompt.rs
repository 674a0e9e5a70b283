//! The BOS policy: how every caller turns a prompt into the token ids the model sees.
//!
//! - **Raw text** starts with `<|bos|>`, then the text's tokens ([`text_prompt`]). Every
//!   training document starts with `<|bos|>`, so a model has only ever seen text after it;
//!   without it the first tokens are conditioned on nothing the model knows and come out worse.
//!   This holds for `ferrogpt generate`, the speedrun's samples, capability tasks,
//!   `/v1/completions` text prompts and `local:` evals' string prompts alike.
//! - **Chats** are rendered by [`crate::render_chat`], whose template starts with `<|bos|>`.
//! - **Token ids** sent by an API client are used exactly as given ([`token_prompt`]): the
//!   client chose them, and scoring clients count on their own positions.

use ferrogpt_tokenizer::{Special, Tokenizer};

/// A prompt's token ids and how many of them the policy put in front of the caller's own
/// (the `<|bos|>` of a text prompt). Those lead tokens are model context, not the caller's
/// text: `echo` leaves them out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptTokens {
    pub ids: Vec<u32>,
    pub added: usize,
}

/// `<|bos|>` followed by the tokens of `text`.
pub fn text_prompt(tok: &Tokenizer, text: &str) -> PromptTokens {
    let mut ids = vec![tok.special_id(Special::Bos)];
    ids.extend(tok.encode(text));
    PromptTokens { ids, added: 1 }
}

/// Token ids from a client, used as given.
pub fn token_prompt(ids: Vec<u32>) -> PromptTokens {
    PromptTokens { ids, added: 0 }
}
