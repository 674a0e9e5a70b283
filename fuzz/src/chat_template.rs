//! The chat template over arbitrary conversations: the token stream has exactly the template's
//! structure, each message's content comes back intact between its role token and `<|end|>`,
//! and no text a user types ever becomes a control token.
//!
//! Input: records separated by 0x1E (ASCII record separator); a record's first byte picks the
//! role (low two bits: system, user, assistant, user), the rest is its content (invalid UTF-8
//! replaced, as a client's JSON string could not carry it).

use ferrogpt_infer::{render_chat, ChatMessage, Role};
use ferrogpt_tokenizer::{Special, Tokenizer};

use crate::fixtures::merged_tokenizer;

pub const RECORD_SEPARATOR: u8 = 0x1E;

pub fn messages_from(data: &[u8]) -> Vec<ChatMessage> {
    data.split(|&b| b == RECORD_SEPARATOR)
        .filter_map(|record| {
            let (&role, content) = record.split_first()?;
            let role = match role & 3 {
                0 => Role::System,
                2 => Role::Assistant,
                _ => Role::User,
            };
            Some(ChatMessage::new(role, String::from_utf8_lossy(content)))
        })
        .collect()
}

pub fn run(data: &[u8], _scratch: &std::path::Path) {
    let tok = merged_tokenizer();
    let messages = messages_from(data);
    // Text-only messages: rendering them cannot fail.
    let ids = render_chat(tok, &messages).unwrap_or_else(|e| panic!("a text conversation renders: {e}"));
    check_structure(tok, &messages, &ids);
}

fn role_token(role: Role) -> u32 {
    match role {
        Role::System => Special::System.id(),
        Role::User => Special::User.id(),
        Role::Assistant => Special::Assistant.id(),
    }
}

fn check_structure(tok: &Tokenizer, messages: &[ChatMessage], ids: &[u32]) {
    assert_eq!(ids.first(), Some(&Special::Bos.id()), "the prompt starts with <|bos|>");
    assert_eq!(ids.last(), Some(&Special::Assistant.id()), "the prompt ends ready for the reply");
    let mut rest = &ids[1..ids.len() - 1];
    for (i, m) in messages.iter().enumerate() {
        let Some((&role, after_role)) = rest.split_first() else {
            panic!("message {i} is missing from the token stream");
        };
        assert_eq!(role, role_token(m.role), "message {i} starts with its role token");
        let Some(end) = after_role.iter().position(|&t| tok.is_special(t)) else {
            panic!("message {i} has no <|end|>");
        };
        assert_eq!(after_role[end], Special::End.id(), "message {i}: only <|end|> may follow its text");
        assert_eq!(tok.decode(&after_role[..end]), m.text(), "message {i}'s text comes back intact");
        rest = &after_role[end + 1..];
    }
    assert!(rest.is_empty(), "tokens after the last message: {rest:?}");
}
