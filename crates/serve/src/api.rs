//! Request parsing for the OpenAI endpoints. Bodies are read as generic JSON and each known
//! field is checked by hand so that every problem becomes a 400 naming the field (`param`);
//! unknown fields are ignored, as OpenAI's newer SDKs send many the server need not know.

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::backend::{ChatMessage, Role};
use crate::error::ApiError;

/// Sampling fields shared by both endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Token id (as sent, checked against the vocabulary later) and bias.
    pub logit_bias: Vec<(u64, f32)>,
    pub n: usize,
    /// `max_completion_tokens`, else `max_tokens`; `None` = the rest of the context.
    pub max_tokens: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub image_parts: usize,
    pub sampling: Sampling,
    /// `Some(k)` when `logprobs: true` (`k` = `top_logprobs`, default 0).
    pub logprobs: Option<usize>,
    pub json_object: bool,
    pub stream: bool,
    pub include_usage: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub model: String,
    pub prompts: Vec<Prompt>,
    pub sampling: Sampling,
    /// Legacy `logprobs: k` (0..=5): logprob of each token and its `k` best alternatives.
    pub logprobs: Option<usize>,
    pub echo: bool,
    pub stream: bool,
    pub include_usage: bool,
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

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Field access that treats an explicit `null` like an absent field, as OpenAI does.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn req_string(obj: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match field(obj, name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(ApiError::invalid(name, format!("'{name}' must not be empty."))),
        Some(v) => Err(ApiError::invalid(name, format!("'{name}' must be a string, not {}.", kind_of(v)))),
        None => Err(ApiError::invalid(name, format!("you must provide a '{name}' parameter"))),
    }
}

fn opt_number(obj: &Map<String, Value>, name: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if x.is_finite() && (lo..=hi).contains(&x) {
                Ok(Some(x))
            } else {
                Err(ApiError::invalid(
                    name,
                    format!("{x} is not valid for '{name}': it must be between {lo} and {hi}."),
                ))
            }
        }
        Some(v) => Err(ApiError::invalid(name, format!("'{name}' must be a number, not {}.", kind_of(v)))),
    }
}

fn opt_int(obj: &Map<String, Value>, name: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            Some(x) => Err(ApiError::invalid(
                name,
                format!("{x} is not valid for '{name}': it must be between {lo} and {hi}."),
            )),
            None => Err(ApiError::invalid(name, format!("'{name}' must be an integer, not {n}."))),
        },
        Some(v) => Err(ApiError::invalid(name, format!("'{name}' must be an integer, not {}.", kind_of(v)))),
    }
}

fn opt_bool(obj: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ApiError::invalid(name, format!("'{name}' must be a boolean, not {}.", kind_of(v)))),
    }
}

fn parse_stop(obj: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let one = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::String(_) => Err(ApiError::invalid("stop", "Stop sequences must not be empty.")),
        other => Err(ApiError::invalid(
            "stop",
            format!("'stop' must be a string or an array of strings, not {}.", kind_of(other)),
        )),
    };
    match field(obj, "stop") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            if items.len() > 4 {
                return Err(ApiError::invalid(
                    "stop",
                    format!("'stop' may hold at most 4 sequences, not {}.", items.len()),
                ));
            }
            items.iter().map(one).collect()
        }
        Some(v) => Ok(vec![one(v)?]),
    }
}

fn parse_logit_bias(obj: &Map<String, Value>) -> Result<Vec<(u64, f32)>, ApiError> {
    match field(obj, "logit_bias") {
        None => Ok(Vec::new()),
        Some(Value::Object(map)) => {
            let mut out = Vec::with_capacity(map.len());
            for (k, v) in map {
                let id: u64 = k.parse().map_err(|_| {
                    ApiError::invalid(
                        "logit_bias",
                        format!("Invalid key {k:?} in 'logit_bias': keys must be token ids (integers as strings)."),
                    )
                })?;
                let bias = v.as_f64().filter(|b| (-100.0..=100.0).contains(b)).ok_or_else(|| {
                    ApiError::invalid(
                        "logit_bias",
                        format!("Invalid bias {v} for token {k} in 'logit_bias': it must be a number between -100 and 100."),
                    )
                })?;
                out.push((id, bias as f32));
            }
            Ok(out)
        }
        Some(v) => Err(ApiError::invalid(
            "logit_bias",
            format!("'logit_bias' must be an object mapping token ids to biases, not {}.", kind_of(v)),
        )),
    }
}

fn parse_sampling(obj: &Map<String, Value>, default_max: Option<usize>, min_max: i64) -> Result<Sampling, ApiError> {
    let max_completion = opt_int(obj, "max_completion_tokens", min_max, i64::from(u32::MAX))?;
    let max_tokens = opt_int(obj, "max_tokens", min_max, i64::from(u32::MAX))?;
    let seed = match field(obj, "seed") {
        None => None,
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .map(|x| x as u64)
                .or_else(|| n.as_u64())
                .ok_or_else(|| ApiError::invalid("seed", "'seed' must be an integer."))?,
        ),
        Some(v) => return Err(ApiError::invalid("seed", format!("'seed' must be an integer, not {}.", kind_of(v)))),
    };
    Ok(Sampling {
        temperature: opt_number(obj, "temperature", 0.0, 2.0)?.unwrap_or(1.0) as f32,
        top_p: opt_number(obj, "top_p", 0.0, 1.0)?.unwrap_or(1.0) as f32,
        seed,
        stop: parse_stop(obj)?,
        presence_penalty: opt_number(obj, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
        frequency_penalty: opt_number(obj, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
        logit_bias: parse_logit_bias(obj)?,
        n: opt_int(obj, "n", 1, 128)?.unwrap_or(1) as usize,
        max_tokens: max_completion.or(max_tokens).map(|x| x as usize).or(default_max),
    })
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

/// Checks an `image_url` part: only inline `data:image/...;base64,` URLs are accepted because
/// the server never fetches from the network.
fn check_image(part: &Map<String, Value>, param: &str) -> Result<(), ApiError> {
    let url = match part.get("image_url") {
        Some(Value::Object(o)) => o.get("url"),
        Some(Value::String(s)) => return check_data_url(s, param),
        _ => None,
    };
    match url {
        Some(Value::String(s)) => check_data_url(s, param),
        _ => Err(ApiError::invalid(param, "An 'image_url' part needs an object with a string 'url'.")),
    }
}

fn check_data_url(url: &str, param: &str) -> Result<(), ApiError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(ApiError::invalid(
            param,
            "Only inline images are accepted: 'image_url.url' must be a 'data:image/...;base64,...' URL. This server does not fetch images from other URLs.",
        ));
    };
    let Some((meta, data)) = rest.split_once(',') else {
        return Err(ApiError::invalid(param, "The data URL has no ',' before its data."));
    };
    if !meta.starts_with("image/") || !meta.ends_with(";base64") {
        return Err(ApiError::invalid(
            param,
            format!("The data URL's media type must be 'image/<format>;base64', not {meta:?}."),
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| ApiError::invalid(param, format!("The image data is not valid base64: {e}.")))?;
    Ok(())
}

fn parse_message(i: usize, v: &Value) -> Result<(ChatMessage, usize), ApiError> {
    let param = format!("messages.[{i}]");
    let Value::Object(m) = v else {
        return Err(ApiError::invalid(
            param,
            format!("Each message must be an object, not {}.", kind_of(v)),
        ));
    };
    let role = match m.get("role").and_then(Value::as_str) {
        Some("system") | Some("developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some(other @ ("tool" | "function")) => {
            return Err(ApiError::invalid(
                format!("{param}.role"),
                format!("Messages with role '{other}' are not supported: this server has no tool calling."),
            ))
        }
        Some(other) => {
            return Err(ApiError::invalid(
                format!("{param}.role"),
                format!("'{other}' is not one of ['system', 'developer', 'user', 'assistant'] - '{param}.role'"),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                format!("{param}.role"),
                format!("Missing required parameter: '{param}.role'."),
            ))
        }
    };
    let mut images = 0;
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let pparam = format!("{param}.content.[{j}]");
                let Value::Object(p) = part else {
                    return Err(ApiError::invalid(pparam, "Each content part must be an object."));
                };
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => match p.get("text") {
                        Some(Value::String(t)) => text.push_str(t),
                        _ => return Err(ApiError::invalid(format!("{pparam}.text"), "A 'text' part needs a string 'text'.")),
                    },
                    Some("image_url") => {
                        if role != Role::User {
                            return Err(ApiError::invalid(
                                pparam,
                                format!("Image parts are only allowed in user messages, not {} messages.", role.as_str()),
                            ));
                        }
                        check_image(p, &pparam)?;
                        images += 1;
                    }
                    Some(other) => {
                        return Err(ApiError::invalid(
                            format!("{pparam}.type"),
                            format!("Content parts of type '{other}' are not supported; use 'text' or 'image_url'."),
                        ))
                    }
                    None => {
                        return Err(ApiError::invalid(
                            format!("{pparam}.type"),
                            "Each content part needs a string 'type'.",
                        ))
                    }
                }
            }
            text
        }
        Some(Value::Null) | None => {
            return Err(ApiError::invalid(
                format!("{param}.content"),
                format!("Missing required parameter: '{param}.content'."),
            ))
        }
        Some(other) => {
            return Err(ApiError::invalid(
                format!("{param}.content"),
                format!("'content' must be a string or an array of parts, not {}.", kind_of(other)),
            ))
        }
    };
    Ok((ChatMessage { role, content }, images))
}

pub fn parse_chat(obj: &Map<String, Value>) -> Result<ChatRequest, ApiError> {
    let model = req_string(obj, "model")?;
    let messages = match field(obj, "messages") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(ApiError::invalid("messages", "'messages' must hold at least one message.")),
        Some(v) => {
            return Err(ApiError::invalid(
                "messages",
                format!("'messages' must be an array, not {}.", kind_of(v)),
            ))
        }
        None => return Err(ApiError::invalid("messages", "Missing required parameter: 'messages'.")),
    };
    let mut parsed = Vec::with_capacity(messages.len());
    let mut image_parts = 0;
    for (i, m) in messages.iter().enumerate() {
        let (msg, imgs) = parse_message(i, m)?;
        image_parts += imgs;
        parsed.push(msg);
    }
    for name in ["tools", "functions"] {
        if matches!(field(obj, name), Some(Value::Array(a)) if !a.is_empty()) {
            return Err(ApiError::invalid(
                name,
                format!("'{name}' is not supported: this server has no tool calling."),
            ));
        }
    }
    let sampling = parse_sampling(obj, None, 1)?;
    let logprobs = opt_bool(obj, "logprobs")?.unwrap_or(false);
    let top = opt_int(obj, "top_logprobs", 0, 20)?;
    if top.is_some() && !logprobs {
        return Err(ApiError::invalid("top_logprobs", "'top_logprobs' requires 'logprobs' to be true."));
    }
    let json_object = match field(obj, "response_format") {
        None => false,
        Some(Value::Object(rf)) => match rf.get("type").and_then(Value::as_str) {
            Some("text") => false,
            Some("json_object") => true,
            Some(other) => {
                return Err(ApiError::invalid(
                    "response_format.type",
                    format!("'response_format.type' {other:?} is not supported; use 'text' or 'json_object'."),
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    "response_format.type",
                    "'response_format' needs a string 'type'.",
                ))
            }
        },
        Some(v) => {
            return Err(ApiError::invalid(
                "response_format",
                format!("'response_format' must be an object, not {}.", kind_of(v)),
            ))
        }
    };
    if let Some(v) = field(obj, "user") {
        if !v.is_string() {
            return Err(ApiError::invalid("user", "'user' must be a string."));
        }
    }
    let (stream, include_usage) = parse_stream(obj)?;
    Ok(ChatRequest {
        model,
        messages: parsed,
        image_parts,
        sampling,
        logprobs: logprobs.then(|| top.unwrap_or(0) as usize),
        json_object,
        stream,
        include_usage,
    })
}

fn parse_prompts(obj: &Map<String, Value>) -> Result<Vec<Prompt>, ApiError> {
    let bad = || {
        ApiError::invalid(
            "prompt",
            "'prompt' must be a string, an array of strings, an array of token ids or an array of token-id arrays.",
        )
    };
    let tokens = |a: &[Value]| -> Result<Vec<u64>, ApiError> { a.iter().map(|t| t.as_u64().ok_or_else(bad)).collect() };
    let prompts = match field(obj, "prompt") {
        None => return Err(ApiError::invalid("prompt", "Missing required parameter: 'prompt'.")),
        Some(Value::String(s)) => vec![Prompt::Text(s.clone())],
        Some(Value::Array(items)) if items.is_empty() => return Err(bad()),
        Some(Value::Array(items)) => match &items[0] {
            Value::Number(_) => vec![Prompt::Tokens(tokens(items)?)],
            Value::String(_) => items
                .iter()
                .map(|v| v.as_str().map(|s| Prompt::Text(s.to_string())).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
            Value::Array(_) => items
                .iter()
                .map(|v| match v {
                    Value::Array(a) if !a.is_empty() => tokens(a).map(Prompt::Tokens),
                    _ => Err(bad()),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad()),
        },
        Some(_) => return Err(bad()),
    };
    if prompts.len() > 128 {
        return Err(ApiError::invalid("prompt", "At most 128 prompts per request."));
    }
    Ok(prompts)
}

pub fn parse_completion(obj: &Map<String, Value>) -> Result<CompletionRequest, ApiError> {
    let model = req_string(obj, "model")?;
    let prompts = parse_prompts(obj)?;
    if matches!(field(obj, "suffix"), Some(Value::String(s)) if !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "'suffix' (insertion) is not supported."));
    }
    // The legacy endpoint's documented default is 16 completion tokens; 0 scores the prompt only.
    let sampling = parse_sampling(obj, Some(16), 0)?;
    if let Some(best_of) = opt_int(obj, "best_of", 1, 20)? {
        if best_of as usize != sampling.n {
            return Err(ApiError::invalid("best_of", "'best_of' other than 'n' is not supported."));
        }
    }
    let (stream, include_usage) = parse_stream(obj)?;
    Ok(CompletionRequest {
        model,
        prompts,
        sampling,
        logprobs: opt_int(obj, "logprobs", 0, 5)?.map(|k| k as usize),
        echo: opt_bool(obj, "echo")?.unwrap_or(false),
        stream,
        include_usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(v: Value) -> Result<ChatRequest, ApiError> {
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
        assert_eq!(
            r.messages[0],
            ChatMessage {
                role: Role::System,
                content: "be brief".into()
            }
        );
        assert_eq!(r.messages[1].content, "hi");
        assert_eq!(r.image_parts, 1);
        assert_eq!(r.sampling.max_tokens, Some(7));
        assert_eq!(r.sampling.n, 2);
        assert_eq!(r.sampling.logit_bias, vec![(5, -100.0)]);
        assert_eq!(r.logprobs, Some(3));
        assert!(r.json_object && r.stream && r.include_usage);
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
        assert_eq!(r.prompts, vec![Prompt::Tokens(vec![1, 2]), Prompt::Tokens(vec![3])]);
        assert_eq!(r.sampling.max_tokens, Some(0));
        let r = parse_completion(json!({"model": "m", "prompt": "hi"}).as_object().unwrap()).unwrap();
        assert_eq!(r.sampling.max_tokens, Some(16));
        assert!(parse_completion(json!({"model": "m", "prompt": [true]}).as_object().unwrap()).is_err());
    }

    #[test]
    fn body_must_be_an_object() {
        assert!(parse_body(b"").is_err());
        assert!(parse_body(b"[1]").is_err());
        assert!(parse_body(b"{\"a\":").is_err());
        assert!(parse_body(b"{}").is_ok());
    }
}
