//! Prompt shapes as openai/evals handles them: a prompt is either a string or a chat list
//! (`[{"role", "content", "name"?}]`), converted for chat or completions endpoints exactly
//! as `evals/prompt/base.py` does.

use serde_json::{json, Value};

/// `is_chat_prompt`: a list whose items are all objects.
pub fn is_chat(prompt: &Value) -> bool {
    matches!(prompt, Value::Array(items) if items.iter().all(Value::is_object))
}

fn field<'a>(msg: &'a Value, key: &str) -> Option<&'a str> {
    msg.get(key).and_then(Value::as_str)
}

fn capitalize(s: &str) -> String {
    // Python's str.capitalize: first character upper-cased, the rest lower-cased.
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect(),
        None => String::new(),
    }
}

/// `chat_prompt_to_text_prompt`: one message gives its content; otherwise each message is
/// `prefix + content + "\n"` (system: no prefix, `example_user`: "User: ",
/// `example_assistant`: "Assistant: ", other roles capitalised), then "Assistant:" when
/// rendering for a completion model, and the whole text left-stripped.
pub fn chat_to_text(messages: &[Value], for_completion: bool) -> String {
    if messages.len() == 1 {
        return field(&messages[0], "content").unwrap_or_default().to_string();
    }
    let mut text = String::new();
    for msg in messages {
        let role = field(msg, "name").or_else(|| field(msg, "role")).unwrap_or_default();
        let prefix = match role {
            "system" => String::new(),
            "example_user" => "User: ".to_string(),
            "example_assistant" => "Assistant: ".to_string(),
            other => format!("{}: ", capitalize(other)),
        };
        text.push_str(&prefix);
        text.push_str(field(msg, "content").unwrap_or_default());
        text.push('\n');
    }
    if for_completion {
        text.push_str("Assistant:");
    }
    text.trim_start_matches(crate::text::is_py_space).to_string()
}

/// The prompt as a completions endpoint receives it (`CompletionPrompt`).
pub fn to_text(prompt: &Value) -> String {
    match prompt {
        Value::String(s) => s.clone(),
        Value::Array(items) if is_chat(prompt) => chat_to_text(items, true),
        other => crate::text::py_str(other),
    }
}

/// The prompt as a chat endpoint receives it (`ChatCompletionPrompt`): a string becomes one
/// system message.
pub fn to_chat(prompt: &Value) -> Value {
    if is_chat(prompt) {
        prompt.clone()
    } else {
        let text = match prompt {
            Value::String(s) => s.clone(),
            other => crate::text::py_str(other),
        };
        json!([{"role": "system", "content": text}])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chat_as_text_like_upstream() {
        let p = json!([
            {"role": "system", "content": "Answer."},
            {"role": "system", "name": "example_user", "content": "1+1"},
            {"role": "system", "name": "example_assistant", "content": "2"},
            {"role": "user", "content": "2+2"}
        ]);
        assert_eq!(to_text(&p), "Answer.\nUser: 1+1\nAssistant: 2\nUser: 2+2\nAssistant:");
        let one = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(to_text(&one), "hi");
        assert_eq!(to_chat(&json!("x")), json!([{"role": "system", "content": "x"}]));
    }
}
