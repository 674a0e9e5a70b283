//! The chat template. Each message is `<|role|>content<|end|>` after one
//! `<|bos|>`, and the prompt ends with `<|assistant|>` for the reply. The
//! system message keeps its own role token — it is never merged into the
//! user turn — which is what makes it steer.

use ferrogpt_tokenizer::{Special, Tokenizer};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// Token ids of a conversation, ready for the assistant's reply. Message
/// contents are encoded as plain text: a user typing `<|end|>` gets those
/// characters, not the control token.
pub fn render_chat(tok: &Tokenizer, messages: &[ChatMessage]) -> Vec<u32> {
    let mut ids = vec![tok.special_id(Special::Bos)];
    for m in messages {
        let role = match m.role {
            Role::System => Special::System,
            Role::User => Special::User,
            Role::Assistant => Special::Assistant,
        };
        ids.push(tok.special_id(role));
        ids.extend(tok.encode(&m.content));
        ids.push(tok.special_id(Special::End));
    }
    ids.push(tok.special_id(Special::Assistant));
    ids
}
