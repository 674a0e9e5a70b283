//! Conversations and the chat template. Each message is `<|role|>content<|end|>` after one
//! `<|bos|>`, and the prompt ends with `<|assistant|>` for the reply. The system message keeps
//! its own role token — it is never merged into the user turn — which is what makes it steer.
//!
//! A message's content is a list of parts: text, and images (decoded bytes with their media
//! type). The vision model will place an image's features at `<|image|>` positions; the
//! text-only models of today refuse image parts with [`InferError::TextOnly`].

use ferrogpt_tokenizer::{Special, Tokenizer};

use crate::InferError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// OpenAI's name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// An image sent inline with a message: its bytes as decoded from the request, still in
/// their file format (`media_type`, e.g. `image/png`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePart {
    pub media_type: String,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContentPart {
    Text(String),
    Image(ImagePart),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: Vec<ContentPart>,
}

impl ChatMessage {
    /// A message of one text part.
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: vec![ContentPart::Text(text.into())],
        }
    }

    /// The text parts joined, images left out.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text(t) => Some(t.as_str()),
                ContentPart::Image(_) => None,
            })
            .collect()
    }

    pub fn has_images(&self) -> bool {
        self.content.iter().any(|p| matches!(p, ContentPart::Image(_)))
    }
}

/// [`render_chat`] as a Jinja chat template, the form Hugging Face's `apply_chat_template` and
/// llama.cpp read (`tokenizer_config.json`, GGUF `tokenizer.chat_template`): `<|bos|>`, then
/// `<|role|>content<|end|>` per message, then `<|assistant|>` for a generation prompt. Content
/// may be a string or OpenAI-style parts, whose text parts are joined. One difference remains:
/// a tokenizer given the rendered string reads `<|end|>` typed inside content as the control
/// token, where `render_chat` keeps it as characters.
pub const CHAT_TEMPLATE_JINJA: &str = "{{ '<|bos|>' }}{% for message in messages %}{{ '<|' + message['role'] + '|>' }}\
{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}\
{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}{{ '<|end|>' }}{% endfor %}\
{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

/// Token ids of a conversation, ready for the assistant's reply. Message contents are encoded
/// as plain text: a user typing `<|end|>` gets those characters, not the control token. A
/// message's text parts are joined before encoding, so splitting text into parts does not
/// change the tokens. Image parts are refused: no model reads them yet.
pub fn render_chat(tok: &Tokenizer, messages: &[ChatMessage]) -> Result<Vec<u32>, InferError> {
    let mut ids = render_messages(tok, messages, |_, _| {})?;
    ids.push(tok.special_id(Special::Assistant));
    Ok(ids)
}

/// A whole conversation as fine-tuning sees it: its tokens, and which of them the model is
/// trained to predict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainingTokens {
    pub ids: Vec<u32>,
    /// `trained[i]`: token `i` is a target of the loss — the content and the closing `<|end|>`
    /// of every assistant message. The `<|assistant|>` token that opens a reply is not: at
    /// inference [`render_chat`] supplies it, so the model never has to choose to speak.
    pub trained: Vec<bool>,
}

/// Renders a finished conversation the way [`render_chat`] renders its prompts, so that the
/// tokens before each assistant reply are exactly the prompt that reply will be generated
/// from; marks the replies' tokens as trained.
pub fn render_for_training(tok: &Tokenizer, messages: &[ChatMessage]) -> Result<TrainingTokens, InferError> {
    // `<|bos|>` is not trained.
    let mut trained = vec![false];
    let ids = render_messages(tok, messages, |role, added| {
        trained.push(false);
        trained.extend(std::iter::repeat_n(role == Role::Assistant, added - 1));
    })?;
    Ok(TrainingTokens { ids, trained })
}

/// `<|bos|>`, then `<|role|>content<|end|>` per message; `each(role, n)` is told the `n` tokens
/// each message added, its role token first.
fn render_messages(tok: &Tokenizer, messages: &[ChatMessage], mut each: impl FnMut(Role, usize)) -> Result<Vec<u32>, InferError> {
    if let Some(message) = messages.iter().position(ChatMessage::has_images) {
        return Err(InferError::TextOnly { message });
    }
    let mut ids = vec![tok.special_id(Special::Bos)];
    for m in messages {
        let role = match m.role {
            Role::System => Special::System,
            Role::User => Special::User,
            Role::Assistant => Special::Assistant,
        };
        let start = ids.len();
        ids.push(tok.special_id(role));
        ids.extend(tok.encode(&m.text()));
        ids.push(tok.special_id(Special::End));
        each(m.role, ids.len() - start);
    }
    Ok(ids)
}
