//! Examples as JSONL in OpenAI's chat fine-tuning format, one conversation a line:
//! `{"messages":[{"role":"system","content":"..."},...],"ferrogpt":{"task":...,"family":...,
//! "category":...,"split":...,"expected":{...},"rejected":[...]}}`. OpenAI's fine-tuning
//! reads `messages` and ignores the extra `ferrogpt` object, which carries what the checkers
//! and the reward model need. Messages are read back by the one parser of OpenAI messages,
//! `ferrogpt_infer::request::messages`.

use std::io::{BufRead, Write};

use ferrogpt_infer::request::{messages, RequestError};
use ferrogpt_infer::Role;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{Category, Example, Expected, Split, TaskKind};

#[derive(Debug, thiserror::Error)]
pub enum ChatDataError {
    #[error("cannot read or write the JSONL")]
    Io(#[source] std::io::Error),
    #[error("line {line}: not an example in chat fine-tuning format")]
    Json {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("line {line}: invalid messages")]
    Messages {
        line: usize,
        #[source]
        source: RequestError,
    },
    #[error("line {line}: the last message must be the assistant's reply")]
    NoReply { line: usize },
}

/// The example's labels beside its messages.
#[derive(Serialize, Deserialize)]
struct Labels {
    task: TaskKind,
    family: String,
    category: Category,
    split: Split,
    expected: Expected,
    rejected: Vec<String>,
}

#[derive(Deserialize)]
struct Line {
    messages: Value,
    ferrogpt: Labels,
}

/// One example as one JSON line (no newline).
pub fn to_jsonl_line(example: &Example) -> String {
    let messages: Vec<Value> = example
        .messages
        .iter()
        .map(|m| json!({"role": m.role.as_str(), "content": m.text()}))
        .collect();
    let labels = Labels {
        task: example.task,
        family: example.family.clone(),
        category: example.category,
        split: example.split,
        expected: example.expected.clone(),
        rejected: example.rejected.clone(),
    };
    json!({"messages": messages, "ferrogpt": labels}).to_string()
}

pub fn write_jsonl<W: Write>(mut out: W, examples: &[Example]) -> Result<(), ChatDataError> {
    for example in examples {
        writeln!(out, "{}", to_jsonl_line(example)).map_err(ChatDataError::Io)?;
    }
    out.flush().map_err(ChatDataError::Io)
}

/// Examples from JSONL written by [`write_jsonl`]; blank lines are skipped. Line numbers in
/// errors count from 1.
pub fn read_jsonl<R: BufRead>(input: R) -> Result<Vec<Example>, ChatDataError> {
    let mut examples = Vec::new();
    for (index, text) in input.lines().enumerate() {
        let line = index + 1;
        let text = text.map_err(ChatDataError::Io)?;
        if text.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&text).map_err(|source| ChatDataError::Json { line, source })?;
        let messages = messages(Some(&parsed.messages)).map_err(|source| ChatDataError::Messages { line, source })?;
        if messages.last().map(|m| m.role) != Some(Role::Assistant) {
            return Err(ChatDataError::NoReply { line });
        }
        let labels = parsed.ferrogpt;
        examples.push(Example {
            messages,
            task: labels.task,
            family: labels.family,
            category: labels.category,
            split: labels.split,
            expected: labels.expected,
            rejected: labels.rejected,
        });
    }
    Ok(examples)
}
