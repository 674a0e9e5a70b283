//! Request bodies of the OpenAI endpoints. What a request asks the model to generate —
//! messages, prompts, sampling fields — is read by ferrogpt-infer's [`request`] module, the one
//! translation shared with `local:` evals; this module adds what only the server needs (the
//! model name, streaming, the end user) and turns every problem into a 400 naming the field.
//! A `/v1/moderations` body (texts to classify, no generation) is read here whole.

use ferrogpt_infer::request::{self, field, kind_of, opt_bool, ChatRequest, CompletionRequest, RequestError};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A `/v1/chat/completions` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatBody {
    pub model: String,
    pub request: ChatRequest,
    pub stream: bool,
    pub include_usage: bool,
}

/// A `/v1/completions` body.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionBody {
    pub model: String,
    pub request: CompletionRequest,
    pub stream: bool,
    pub include_usage: bool,
}

/// A `/v1/moderations` body: the texts to classify, each its own result.
#[derive(Debug, Clone, PartialEq)]
pub struct ModerationBody {
    /// The model named, if any (OpenAI's default is its latest moderation model).
    pub model: Option<String>,
    pub inputs: Vec<String>,
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError::invalid(e.param, e.message)
    }
}

/// Parses a request body; errors say what is wrong in the envelope's words.
pub fn parse_body(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("The request body is empty; send a JSON object."));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("We could not parse the JSON body of your request: {e}.")))?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::bad_request(format!(
            "The request body must be a JSON object, not {}.",
            kind_of(&other)
        ))),
    }
}

fn req_string(obj: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match field(obj, name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(ApiError::invalid(name, format!("'{name}' must not be empty."))),
        Some(v) => Err(ApiError::invalid(name, format!("'{name}' must be a string, not {}.", kind_of(v)))),
        None => Err(ApiError::invalid(name, format!("you must provide a '{name}' parameter"))),
    }
}

fn parse_stream(obj: &Map<String, Value>) -> Result<(bool, bool), ApiError> {
    let stream = opt_bool(obj, "stream")?.unwrap_or(false);
    let include_usage = match field(obj, "stream_options") {
        None => false,
        Some(Value::Object(opts)) => {
            if !stream {
                return Err(ApiError::invalid(
                    "stream_options",
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                ));
            }
            opt_bool(opts, "include_usage")
                .map_err(|_| ApiError::invalid("stream_options.include_usage", "'stream_options.include_usage' must be a boolean."))?
                .unwrap_or(false)
        }
        Some(v) => {
            return Err(ApiError::invalid(
                "stream_options",
                format!("'stream_options' must be an object, not {}.", kind_of(v)),
            ))
        }
    };
    Ok((stream, include_usage))
}

pub fn parse_chat(obj: &Map<String, Value>) -> Result<ChatBody, ApiError> {
    let model = req_string(obj, "model")?;
    let request = request::chat_request(obj)?;
    if let Some(v) = field(obj, "user") {
        if !v.is_string() {
            return Err(ApiError::invalid("user", "'user' must be a string."));
        }
    }
    let (stream, include_usage) = parse_stream(obj)?;
    Ok(ChatBody {
        model,
        request,
        stream,
        include_usage,
    })
}

pub fn parse_completion(obj: &Map<String, Value>) -> Result<CompletionBody, ApiError> {
    let model = req_string(obj, "model")?;
    let request = request::completion_request(obj)?;
    let (stream, include_usage) = parse_stream(obj)?;
    Ok(CompletionBody {
        model,
        request,
        stream,
        include_usage,
    })
}

/// `input` is a string or a non-empty array of strings, none of them empty. OpenAI's
/// multi-modal parts (`{"type": "text" | "image_url", ...}`) are refused: the classifier reads
/// text, and one string per result keeps results and inputs one-to-one.
pub fn parse_moderation(obj: &Map<String, Value>) -> Result<ModerationBody, ApiError> {
    let model = match field(obj, "model") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => return Err(ApiError::invalid("model", format!("'model' must be a string, not {}.", kind_of(v)))),
    };
    let text = |param: String, v: &Value| match v {
        Value::String(s) if s.is_empty() => Err(ApiError::invalid(param.clone(), format!("'{param}' must not be empty."))),
        Value::String(s) => Ok(s.clone()),
        Value::Object(_) => Err(ApiError::invalid(
            param.clone(),
            format!("'{param}' must be a string: this server moderates text only, given as strings, not as input parts."),
        )),
        other => Err(ApiError::invalid(
            param.clone(),
            format!("'{param}' must be a string, not {}.", kind_of(other)),
        )),
    };
    let inputs = match field(obj, "input") {
        None => return Err(ApiError::invalid("input", "you must provide an 'input' parameter")),
        Some(Value::Array(items)) if items.is_empty() => return Err(ApiError::invalid("input", "'input' must not be an empty array.")),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| text(format!("input.[{i}]"), v))
            .collect::<Result<Vec<_>, _>>()?,
        Some(v @ Value::String(_)) => vec![text("input".into(), v)?],
        Some(v) => {
            return Err(ApiError::invalid(
                "input",
                format!("'input' must be a string or an array of strings, not {}.", kind_of(v)),
            ))
        }
    };
    Ok(ModerationBody { model, inputs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogpt_infer::request::CompletionPrompt;
    use ferrogpt_infer::{ChatMessage, ContentPart, ResponseFormat, Role};
    use serde_json::json;

    fn chat(v: Value) -> Result<ChatBody, ApiError> {
        parse_chat(v.as_object().unwrap())
    }

    #[test]
    fn parses_a_full_chat_request() {
        let r = chat(json!({
            "model": "m", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}
            ],
            "temperature": 0, "n": 2, "stop": ["\n"], "max_tokens": 5, "max_completion_tokens": 7,
            "logprobs": true, "top_logprobs": 3, "response_format": {"type": "json_object"},
            "seed": 42, "stream": true, "stream_options": {"include_usage": true},
            "logit_bias": {"5": -100}, "some_future_field": {"x": 1}
        }))
        .unwrap();
        let messages = &r.request.messages;
        assert_eq!(messages[0], ChatMessage::new(Role::System, "be brief"));
        assert_eq!(messages[1].text(), "hi");
        let images = messages[1].content.iter().filter(|p| matches!(p, ContentPart::Image(_))).count();
        assert_eq!(images, 1);
        let params = &r.request.params;
        assert_eq!(params.max_tokens, Some(7));
        assert_eq!(r.request.n, 2);
        assert_eq!(params.logit_bias, [(5, -100.0)].into_iter().collect());
        assert_eq!(params.logprobs, Some(3));
        assert_eq!(params.response_format, ResponseFormat::JsonObject);
        assert!(r.stream && r.include_usage);
    }

    #[test]
    fn bad_fields_name_their_param() {
        let cases = [
            (json!({"messages": [{"role": "user", "content": "x"}]}), "model"),
            (json!({"model": "m"}), "messages"),
            (json!({"model": "m", "messages": []}), "messages"),
            (
                json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
                "messages.[0].role",
            ),
            (json!({"model": "m", "messages": [{"role": "user"}]}), "messages.[0].content"),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}),
                "temperature",
            ),
            (json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}), "n"),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a","b","c","d","e"]}),
                "stop",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
                "top_logprobs",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}),
                "stream_options",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
                "messages.[0].content.[0]",
            ),
        ];
        for (body, param) in cases {
            let e = chat(body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn completion_prompts_and_defaults() {
        let r = parse_completion(
            json!({"model": "m", "prompt": [[1, 2], [3]], "echo": true, "logprobs": 1, "max_tokens": 0})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            r.request.prompts,
            vec![CompletionPrompt::Tokens(vec![1, 2]), CompletionPrompt::Tokens(vec![3])]
        );
        assert_eq!(r.request.params.max_tokens, Some(0));
        let r = parse_completion(json!({"model": "m", "prompt": "hi"}).as_object().unwrap()).unwrap();
        assert_eq!(r.request.params.max_tokens, Some(16));
        assert!(parse_completion(json!({"model": "m", "prompt": [true]}).as_object().unwrap()).is_err());
    }

    #[test]
    fn moderation_inputs() {
        let parse = |v: Value| parse_moderation(v.as_object().unwrap());
        let one = parse(json!({"input": "hello"})).unwrap();
        assert_eq!(
            one,
            ModerationBody {
                model: None,
                inputs: vec!["hello".into()]
            }
        );
        let many = parse(json!({"input": ["a", "b"], "model": "m"})).unwrap();
        assert_eq!(many.inputs, ["a", "b"]);
        assert_eq!(many.model.as_deref(), Some("m"));
        let cases = [
            (json!({}), "input"),
            (json!({"input": null}), "input"),
            (json!({"input": ""}), "input"),
            (json!({"input": []}), "input"),
            (json!({"input": 3}), "input"),
            (json!({"input": {"text": "x"}}), "input"),
            (json!({"input": ["a", ""]}), "input.[1]"),
            (json!({"input": ["a", 1]}), "input.[1]"),
            (json!({"input": [{"type": "text", "text": "x"}]}), "input.[0]"),
            (json!({"input": "x", "model": 5}), "model"),
        ];
        for (body, param) in cases {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn body_must_be_an_object() {
        assert!(parse_body(b"").is_err());
        assert!(parse_body(b"[1]").is_err());
        assert!(parse_body(b"{\"a\":").is_err());
        assert!(parse_body(b"{}").is_ok());
    }
}
