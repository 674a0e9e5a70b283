//! OpenAI-shaped requests turned into generation inputs: chat messages (text and inline image
//! parts), completion prompts, and the sampling fields under [`SamplingParams::validate`]'s
//! rules. The server's endpoints and `local:` evals both go through here, so a field means the
//! same thing wherever it is sent.
//!
//! Bodies are read as generic JSON and each known field is checked by hand, so that every
//! problem becomes a [`RequestError`] naming the field as OpenAI's API spells it; unknown
//! fields are ignored, as OpenAI's newer SDKs send many that need not be known. An explicit
//! `null` reads as an absent field, as OpenAI reads it.

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::chat::{ChatMessage, ContentPart, ImagePart, Role};
use crate::sample::{ResponseFormat, SamplingParams};

/// A field of a request that cannot be used, and why, in words for the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// The field, as OpenAI names it (`messages.[0].content.[1]`, `logit_bias`, ...).
    pub param: String,
    pub message: String,
}

impl RequestError {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        RequestError {
            param: param.into(),
            message: message.into(),
        }
    }
}

/// Most sequences one request may ask for (`n` times the number of prompts), so that one
/// request cannot fill the scheduler's queue on its own.
pub const MAX_SEQUENCES_PER_REQUEST: usize = 128;
/// Most prompts in one completions request.
pub const MAX_PROMPTS: usize = 128;
/// Largest decoded image accepted in a message part (OpenAI's limit is 20 MB).
pub const MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;

/// Which endpoint's rules apply where the two differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`: `max_tokens` at least 1, default the rest of the context.
    Chat,
    /// `/v1/completions`: `max_tokens` 0 scores the prompt only, default 16 (OpenAI's).
    Completions,
}

/// The sampling fields of a request, and how many completions of each prompt it wants.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    pub params: SamplingParams,
    pub n: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// With `logprobs` / `top_logprobs` and `response_format` applied.
    pub params: SamplingParams,
    pub n: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompletionPrompt {
    /// Raw text: tokenized under the BOS policy ([`crate::prompt::text_prompt`]).
    Text(String),
    /// Token ids, used as given (checked against the vocabulary by the caller).
    Tokens(Vec<u32>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRequest {
    pub prompts: Vec<CompletionPrompt>,
    /// With the legacy `logprobs: k` applied.
    pub params: SamplingParams,
    pub n: usize,
    /// Return the prompt before each completion.
    pub echo: bool,
}

/// What kind of JSON value `v` is, as error messages name it ("a string", "an array"...).
pub fn kind_of(v: &Value) -> &'static str {
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
pub fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

/// A number field, its range left to [`SamplingParams::validate`].
fn opt_f32(obj: &Map<String, Value>, name: &str) -> Result<Option<f32>, RequestError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.as_f64().unwrap_or(f64::NAN) as f32)),
        Some(v) => Err(RequestError::new(name, format!("'{name}' must be a number, not {}.", kind_of(v)))),
    }
}

fn opt_int(obj: &Map<String, Value>, name: &str, lo: i64, hi: i64) -> Result<Option<i64>, RequestError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            Some(x) => Err(RequestError::new(
                name,
                format!("{x} is not valid for '{name}': it must be between {lo} and {hi}."),
            )),
            None => Err(RequestError::new(name, format!("'{name}' must be an integer, not {n}."))),
        },
        Some(v) => Err(RequestError::new(name, format!("'{name}' must be an integer, not {}.", kind_of(v)))),
    }
}

/// An optional boolean field.
pub fn opt_bool(obj: &Map<String, Value>, name: &str) -> Result<Option<bool>, RequestError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(RequestError::new(name, format!("'{name}' must be a boolean, not {}.", kind_of(v)))),
    }
}

fn parse_stop(obj: &Map<String, Value>) -> Result<Vec<String>, RequestError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(RequestError::new(
            "stop",
            format!("'stop' must be a string or an array of strings, not {}.", kind_of(other)),
        )),
    };
    match field(obj, "stop") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

/// A `logit_bias` key: a token id written the one canonical way (decimal digits, no sign, no
/// leading zero, no spaces), so that two keys never name the same token.
fn logit_bias_token(key: &str) -> Option<u32> {
    let canonical = key == "0" || (!key.starts_with('0') && !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()));
    canonical.then(|| key.parse().ok()).flatten()
}

fn parse_logit_bias(obj: &Map<String, Value>) -> Result<Vec<(u32, f32)>, RequestError> {
    match field(obj, "logit_bias") {
        None => Ok(Vec::new()),
        Some(Value::Object(map)) => {
            // Checked before the entries are read, so a huge map costs nothing more.
            if map.len() > crate::sample::MAX_LOGIT_BIAS_ENTRIES {
                return Err(RequestError::new(
                    "logit_bias",
                    format!(
                        "'logit_bias' may hold at most {} entries, not {}.",
                        crate::sample::MAX_LOGIT_BIAS_ENTRIES,
                        map.len()
                    ),
                ));
            }
            let mut out = Vec::with_capacity(map.len());
            for (k, v) in map {
                let id = logit_bias_token(k).ok_or_else(|| {
                    RequestError::new(
                        "logit_bias",
                        format!("Invalid key {k:?} in 'logit_bias': keys must be token ids (integers as strings)."),
                    )
                })?;
                let bias = v.as_f64().ok_or_else(|| {
                    RequestError::new(
                        "logit_bias",
                        format!("Invalid bias {v} for token {k} in 'logit_bias': it must be a number between -100 and 100."),
                    )
                })?;
                out.push((id, bias as f32));
            }
            Ok(out)
        }
        Some(v) => Err(RequestError::new(
            "logit_bias",
            format!("'logit_bias' must be an object mapping token ids to biases, not {}.", kind_of(v)),
        )),
    }
}

fn parse_seed(obj: &Map<String, Value>) -> Result<Option<u64>, RequestError> {
    match field(obj, "seed") {
        None => Ok(None),
        // A negative seed is as good a seed as any: its two's complement bits are used.
        Some(Value::Number(n)) => n
            .as_i64()
            .map(|x| x as u64)
            .or_else(|| n.as_u64())
            .map(Some)
            .ok_or_else(|| RequestError::new("seed", "'seed' must be an integer.")),
        Some(v) => Err(RequestError::new("seed", format!("'seed' must be an integer, not {}.", kind_of(v)))),
    }
}

/// The sampling fields both endpoints share (temperature, top_p, n, max_tokens /
/// max_completion_tokens, stop, penalties, logit_bias, seed), validated. `local:` evals read
/// their parameters with this too.
pub fn sampling(obj: &Map<String, Value>, endpoint: Endpoint) -> Result<Sampling, RequestError> {
    let (min_max, default_max) = match endpoint {
        Endpoint::Chat => (1, None),
        Endpoint::Completions => (0, Some(16)),
    };
    let max_completion = opt_int(obj, "max_completion_tokens", min_max, i64::from(u32::MAX))?;
    let max_tokens = opt_int(obj, "max_tokens", min_max, i64::from(u32::MAX))?;
    let defaults = SamplingParams::default();
    let params = SamplingParams {
        temperature: opt_f32(obj, "temperature")?.unwrap_or(defaults.temperature),
        top_p: opt_f32(obj, "top_p")?.unwrap_or(defaults.top_p),
        top_k: None,
        max_tokens: max_completion.or(max_tokens).map(|x| x as usize).or(default_max),
        seed: parse_seed(obj)?,
        stop: parse_stop(obj)?,
        presence_penalty: opt_f32(obj, "presence_penalty")?.unwrap_or(0.0),
        frequency_penalty: opt_f32(obj, "frequency_penalty")?.unwrap_or(0.0),
        logit_bias: parse_logit_bias(obj)?.into_iter().collect(),
        stop_at_end: true,
        logprobs: None,
        response_format: ResponseFormat::Text,
    };
    params.validate()?;
    let n = opt_int(obj, "n", 1, MAX_SEQUENCES_PER_REQUEST as i64)?.unwrap_or(1) as usize;
    Ok(Sampling { params, n })
}

/// Decodes an `image_url` part. Only inline `data:image/...;base64,` URLs are accepted: the
/// server never fetches from the network.
fn parse_image(part: &Map<String, Value>, param: &str) -> Result<ImagePart, RequestError> {
    let url = match part.get("image_url") {
        Some(Value::Object(o)) => o.get("url"),
        Some(s @ Value::String(_)) => Some(s),
        _ => None,
    };
    match url {
        Some(Value::String(s)) => decode_data_url(s, param),
        _ => Err(RequestError::new(param, "An 'image_url' part needs an object with a string 'url'.")),
    }
}

fn decode_data_url(url: &str, param: &str) -> Result<ImagePart, RequestError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(RequestError::new(
            param,
            "Only inline images are accepted: 'image_url.url' must be a 'data:image/...;base64,...' URL. This server does not fetch images from other URLs.",
        ));
    };
    let Some((meta, data)) = rest.split_once(',') else {
        return Err(RequestError::new(param, "The data URL has no ',' before its data."));
    };
    let media_type = meta
        .strip_suffix(";base64")
        .filter(|m| m.strip_prefix("image/").is_some_and(|sub| !sub.is_empty()));
    let Some(media_type) = media_type else {
        return Err(RequestError::new(
            param,
            format!("The data URL's media type must be 'image/<format>;base64', not {meta:?}."),
        ));
    };
    let data = data.trim();
    // Base64 carries 3 bytes in 4 characters: refuse before decoding what would be too big.
    if data.len() / 4 * 3 > MAX_IMAGE_BYTES {
        return Err(RequestError::new(
            param,
            format!("The image is larger than {MAX_IMAGE_BYTES} bytes."),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| RequestError::new(param, format!("The image data is not valid base64: {e}.")))?;
    Ok(ImagePart {
        media_type: media_type.to_string(),
        data: bytes,
    })
}

/// One message of a `messages` array. OpenAI Evals' few-shot convention is honoured: a
/// `system` message named `example_user` or `example_assistant` is that turn of an example.
fn parse_message(i: usize, v: &Value) -> Result<ChatMessage, RequestError> {
    let param = format!("messages.[{i}]");
    let Value::Object(m) = v else {
        return Err(RequestError::new(
            param,
            format!("Each message must be an object, not {}.", kind_of(v)),
        ));
    };
    let role = match m.get("role").and_then(Value::as_str) {
        Some("system") | Some("developer") => match m.get("name").and_then(Value::as_str) {
            Some("example_user") => Role::User,
            Some("example_assistant") => Role::Assistant,
            _ => Role::System,
        },
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some(other @ ("tool" | "function")) => {
            return Err(RequestError::new(
                format!("{param}.role"),
                format!("Messages with role '{other}' are not supported: this server has no tool calling."),
            ))
        }
        Some(other) => {
            return Err(RequestError::new(
                format!("{param}.role"),
                format!("'{other}' is not one of ['system', 'developer', 'user', 'assistant'] - '{param}.role'"),
            ))
        }
        None => {
            return Err(RequestError::new(
                format!("{param}.role"),
                format!("Missing required parameter: '{param}.role'."),
            ))
        }
    };
    let content = match m.get("content") {
        Some(Value::String(s)) => vec![ContentPart::Text(s.clone())],
        Some(Value::Array(parts)) => {
            let mut content = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let pparam = format!("{param}.content.[{j}]");
                let Value::Object(p) = part else {
                    return Err(RequestError::new(pparam, "Each content part must be an object."));
                };
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => match p.get("text") {
                        Some(Value::String(t)) => content.push(ContentPart::Text(t.clone())),
                        _ => return Err(RequestError::new(format!("{pparam}.text"), "A 'text' part needs a string 'text'.")),
                    },
                    Some("image_url") => {
                        if role != Role::User {
                            return Err(RequestError::new(
                                pparam,
                                format!("Image parts are only allowed in user messages, not {} messages.", role.as_str()),
                            ));
                        }
                        content.push(ContentPart::Image(parse_image(p, &pparam)?));
                    }
                    Some(other) => {
                        return Err(RequestError::new(
                            format!("{pparam}.type"),
                            format!("Content parts of type '{other}' are not supported; use 'text' or 'image_url'."),
                        ))
                    }
                    None => {
                        return Err(RequestError::new(
                            format!("{pparam}.type"),
                            "Each content part needs a string 'type'.",
                        ))
                    }
                }
            }
            content
        }
        Some(Value::Null) | None => {
            return Err(RequestError::new(
                format!("{param}.content"),
                format!("Missing required parameter: '{param}.content'."),
            ))
        }
        Some(other) => {
            return Err(RequestError::new(
                format!("{param}.content"),
                format!("'content' must be a string or an array of parts, not {}.", kind_of(other)),
            ))
        }
    };
    Ok(ChatMessage { role, content })
}

/// A `messages` array (at least one message).
pub fn messages(value: Option<&Value>) -> Result<Vec<ChatMessage>, RequestError> {
    let items = match value.filter(|v| !v.is_null()) {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(RequestError::new("messages", "'messages' must hold at least one message.")),
        Some(v) => {
            return Err(RequestError::new(
                "messages",
                format!("'messages' must be an array, not {}.", kind_of(v)),
            ))
        }
        None => return Err(RequestError::new("messages", "Missing required parameter: 'messages'.")),
    };
    items.iter().enumerate().map(|(i, m)| parse_message(i, m)).collect()
}

/// The generation fields of a `/v1/chat/completions` body: messages, tools (refused),
/// sampling, `logprobs` / `top_logprobs` and `response_format`.
pub fn chat_request(obj: &Map<String, Value>) -> Result<ChatRequest, RequestError> {
    let messages = messages(obj.get("messages"))?;
    for name in ["tools", "functions"] {
        if matches!(field(obj, name), Some(Value::Array(a)) if !a.is_empty()) {
            return Err(RequestError::new(
                name,
                format!("'{name}' is not supported: this server has no tool calling."),
            ));
        }
    }
    let Sampling { mut params, n } = sampling(obj, Endpoint::Chat)?;
    let logprobs = opt_bool(obj, "logprobs")?.unwrap_or(false);
    let top = opt_int(obj, "top_logprobs", 0, crate::sample::MAX_TOP_LOGPROBS as i64)?;
    if top.is_some() && !logprobs {
        return Err(RequestError::new("top_logprobs", "'top_logprobs' requires 'logprobs' to be true."));
    }
    params.logprobs = logprobs.then(|| top.unwrap_or(0) as usize);
    params.response_format = match field(obj, "response_format") {
        None => ResponseFormat::Text,
        Some(Value::Object(rf)) => match rf.get("type").and_then(Value::as_str) {
            Some("text") => ResponseFormat::Text,
            Some("json_object") => ResponseFormat::JsonObject,
            Some(other) => {
                return Err(RequestError::new(
                    "response_format.type",
                    format!("'response_format.type' {other:?} is not supported; use 'text' or 'json_object'."),
                ))
            }
            None => {
                return Err(RequestError::new(
                    "response_format.type",
                    "'response_format' needs a string 'type'.",
                ))
            }
        },
        Some(v) => {
            return Err(RequestError::new(
                "response_format",
                format!("'response_format' must be an object, not {}.", kind_of(v)),
            ))
        }
    };
    Ok(ChatRequest { messages, params, n })
}

fn completion_prompts(obj: &Map<String, Value>) -> Result<Vec<CompletionPrompt>, RequestError> {
    let bad = || {
        RequestError::new(
            "prompt",
            "'prompt' must be a string, an array of strings, an array of token ids or an array of token-id arrays.",
        )
    };
    let token = |t: &Value| match t.as_u64() {
        Some(id) => {
            u32::try_from(id).map_err(|_| RequestError::new("prompt", format!("Token id {id} in 'prompt' is not a token id of any model.")))
        }
        None => Err(bad()),
    };
    let tokens = |a: &[Value]| -> Result<Vec<u32>, RequestError> { a.iter().map(token).collect() };
    let prompts = match field(obj, "prompt") {
        None => return Err(RequestError::new("prompt", "Missing required parameter: 'prompt'.")),
        Some(Value::String(s)) => vec![CompletionPrompt::Text(s.clone())],
        Some(Value::Array(items)) => match items.first() {
            None => return Err(bad()),
            Some(Value::Number(_)) => vec![CompletionPrompt::Tokens(tokens(items)?)],
            Some(Value::String(_)) => items
                .iter()
                .map(|v| v.as_str().map(|s| CompletionPrompt::Text(s.to_string())).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
            Some(Value::Array(_)) => items
                .iter()
                .map(|v| match v {
                    Value::Array(a) if !a.is_empty() => tokens(a).map(CompletionPrompt::Tokens),
                    _ => Err(bad()),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad()),
        },
        Some(_) => return Err(bad()),
    };
    if prompts.len() > MAX_PROMPTS {
        return Err(RequestError::new("prompt", format!("At most {MAX_PROMPTS} prompts per request.")));
    }
    Ok(prompts)
}

/// The generation fields of a `/v1/completions` body: prompts, `suffix` (refused), sampling,
/// `best_of` (only equal to `n`), the legacy `logprobs: k` and `echo`. `n` times the number of
/// prompts is at most [`MAX_SEQUENCES_PER_REQUEST`].
pub fn completion_request(obj: &Map<String, Value>) -> Result<CompletionRequest, RequestError> {
    let prompts = completion_prompts(obj)?;
    if matches!(field(obj, "suffix"), Some(Value::String(s)) if !s.is_empty()) {
        return Err(RequestError::new("suffix", "'suffix' (insertion) is not supported."));
    }
    let Sampling { mut params, n } = sampling(obj, Endpoint::Completions)?;
    if let Some(best_of) = opt_int(obj, "best_of", 1, 20)? {
        if best_of as usize != n {
            return Err(RequestError::new("best_of", "'best_of' other than 'n' is not supported."));
        }
    }
    let sequences = n * prompts.len();
    if sequences > MAX_SEQUENCES_PER_REQUEST {
        return Err(RequestError::new(
            "n",
            format!(
                "'n' ({n}) times the number of prompts ({}) asks for {sequences} completions; one request may ask for at most {MAX_SEQUENCES_PER_REQUEST}.",
                prompts.len()
            ),
        ));
    }
    params.logprobs = opt_int(obj, "logprobs", 0, 5)?.map(|k| k as usize);
    Ok(CompletionRequest {
        prompts,
        params,
        n,
        echo: opt_bool(obj, "echo")?.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn chat(v: Value) -> Result<ChatRequest, RequestError> {
        chat_request(&obj(v))
    }

    #[test]
    fn parses_a_full_chat_request() {
        let r = chat(json!({
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "text", "text": " there"}]}
            ],
            "temperature": 0, "n": 2, "stop": ["\n"], "max_tokens": 5, "max_completion_tokens": 7,
            "logprobs": true, "top_logprobs": 3, "response_format": {"type": "json_object"},
            "seed": 42, "logit_bias": {"5": -100}, "some_future_field": {"x": 1}
        }))
        .unwrap();
        assert_eq!(r.messages[0], ChatMessage::new(Role::System, "be brief"));
        let png = ImagePart {
            media_type: "image/png".into(),
            data: vec![0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'],
        };
        assert_eq!(
            r.messages[1].content,
            [
                ContentPart::Text("hi".into()),
                ContentPart::Image(png),
                ContentPart::Text(" there".into())
            ]
        );
        assert_eq!(r.messages[1].text(), "hi there");
        assert_eq!((r.params.max_tokens, r.params.seed, r.n), (Some(7), Some(42), 2));
        assert_eq!(r.params.logit_bias, [(5, -100.0)].into_iter().collect());
        assert_eq!(r.params.logprobs, Some(3));
        assert_eq!(r.params.response_format, ResponseFormat::JsonObject);
        assert!(r.params.is_greedy());
        // Absent fields: the rest of the context, a random seed, no logprobs.
        let r = chat(json!({"messages": [{"role": "user", "content": "x"}]})).unwrap();
        assert_eq!((r.params.max_tokens, r.params.seed, r.params.logprobs, r.n), (None, None, None, 1));
    }

    #[test]
    fn bad_fields_name_their_param() {
        let user = || json!([{"role": "user", "content": "x"}]);
        let with = |extra: Value| {
            let mut v = json!({"messages": user()});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        let cases = [
            (json!({}), "messages"),
            (json!({"messages": []}), "messages"),
            (json!({"messages": [{"role": "robot", "content": "x"}]}), "messages.[0].role"),
            (json!({"messages": [{"role": "user"}]}), "messages.[0].content"),
            (with(json!({"temperature": 3})), "temperature"),
            (with(json!({"top_p": -0.5})), "top_p"),
            (with(json!({"n": 0})), "n"),
            (with(json!({"n": 129})), "n"),
            (with(json!({"stop": ["a", "b", "c", "d", "e"]})), "stop"),
            (with(json!({"stop": [""]})), "stop"),
            (with(json!({"top_logprobs": 2})), "top_logprobs"),
            (with(json!({"logprobs": true, "top_logprobs": 21})), "top_logprobs"),
            (with(json!({"presence_penalty": -2.5})), "presence_penalty"),
            (with(json!({"tools": [{"type": "function"}]})), "tools"),
            (with(json!({"response_format": {"type": "json_schema"}})), "response_format.type"),
        ];
        for (body, param) in cases {
            let e = chat(body.clone()).unwrap_err();
            assert_eq!(e.param, param, "{body}: {}", e.message);
        }
    }

    /// OpenAI's rule: `top_p = 0` keeps only the most likely token. The server's translation
    /// and the one `local:` evals use accept it alike, and both mean greedy.
    #[test]
    fn top_p_zero_is_greedy_on_every_path() {
        let body = json!({"messages": [{"role": "user", "content": "x"}], "top_p": 0, "temperature": 1});
        let served = chat(body.clone()).unwrap().params;
        let evals = sampling(&obj(body), Endpoint::Chat).unwrap().params;
        assert_eq!(served.top_p, 0.0);
        assert!(served.is_greedy() && evals.is_greedy());
        assert_eq!(served.validate(), Ok(()));
        let completions = completion_request(&obj(json!({"prompt": "x", "top_p": 0}))).unwrap();
        assert!(completions.params.is_greedy());
    }

    #[test]
    fn logit_bias_keys_are_canonical_token_ids_and_entries_are_limited() {
        let bias = |b: Value| sampling(&obj(json!({"logit_bias": b})), Endpoint::Chat);
        let ok = bias(json!({"0": 1, "1": -100, "42": 100, "4294967295": 0.5})).unwrap();
        assert_eq!(ok.params.logit_bias.len(), 4);
        assert_eq!(ok.params.logit_bias[&u32::MAX], 0.5);
        for key in ["01", "001", "00", "+1", "-1", " 1", "1 ", "", "1.0", "1e2", "4294967296", "x"] {
            let e = bias(Value::Object([(key.to_string(), json!(1))].into_iter().collect())).unwrap_err();
            assert_eq!(e.param, "logit_bias", "{key:?}");
            assert!(e.message.contains("Invalid key"), "{key:?}: {}", e.message);
        }
        for value in [json!(100.5), json!(-101), json!("5"), json!(null)] {
            let e = bias(json!({"5": value})).unwrap_err();
            assert!(e.message.contains("between -100 and 100"), "{value}: {}", e.message);
        }
        let entries = |n: usize| Value::Object((0..n).map(|i| (i.to_string(), json!(1))).collect());
        assert_eq!(bias(entries(300)).unwrap().params.logit_bias.len(), 300);
        let e = bias(entries(301)).unwrap_err();
        assert_eq!(e.param, "logit_bias");
        assert!(e.message.contains("at most 300 entries"), "{}", e.message);
        let e = bias(entries(5000)).unwrap_err();
        assert!(e.message.contains("not 5000"), "{}", e.message);
        // The same rules hold for parameters built in code.
        let mut p = SamplingParams {
            logit_bias: (0..301).map(|i| (i, 1.0)).collect(),
            ..SamplingParams::default()
        };
        assert_eq!(p.validate().unwrap_err().param, "logit_bias");
        p.logit_bias = [(3, f32::INFINITY)].into_iter().collect();
        assert_eq!(p.validate().unwrap_err().param, "logit_bias");
    }

    #[test]
    fn image_parts_are_decoded_or_refused() {
        let image =
            |url: Value, role: &str| chat(json!({"messages": [{"role": role, "content": [{"type": "image_url", "image_url": url}]}]}));
        let r = image(json!({"url": "data:image/jpeg;base64, /9j/4A== "}), "user").unwrap();
        let ContentPart::Image(img) = &r.messages[0].content[0] else {
            panic!("{r:?}")
        };
        assert_eq!(
            (img.media_type.as_str(), img.data.as_slice()),
            ("image/jpeg", &[0xff, 0xd8, 0xff, 0xe0][..])
        );
        // The short form with the URL as a string is read too.
        assert!(image(json!("data:image/png;base64,AA=="), "user").is_ok());
        let refused = [
            (json!({"url": "https://example.com/cat.png"}), "user", "does not fetch"),
            (json!({"url": "data:image/png;base64,@@@"}), "user", "not valid base64"),
            (json!({"url": "data:text/plain;base64,AA=="}), "user", "media type"),
            (json!({"url": "data:image/;base64,AA=="}), "user", "media type"),
            (json!({"url": "data:image/png,AA=="}), "user", "media type"),
            (json!({"url": "data:image/png;base64"}), "user", "no ','"),
            (json!({"link": "x"}), "user", "string 'url'"),
            (
                json!({"url": "data:image/png;base64,AA=="}),
                "system",
                "only allowed in user messages",
            ),
        ];
        for (url, role, why) in refused {
            let e = image(url.clone(), role).unwrap_err();
            assert_eq!(e.param, "messages.[0].content.[0]", "{url}");
            assert!(e.message.contains(why), "{url}: {}", e.message);
        }
        let huge = format!("data:image/png;base64,{}", "A".repeat(MAX_IMAGE_BYTES / 3 * 4 + 8));
        let e = image(json!({ "url": huge }), "user").unwrap_err();
        assert!(e.message.contains("larger than"), "{}", e.message);
    }

    #[test]
    fn few_shot_examples_keep_their_turns() {
        let m = messages(Some(&json!([
            {"role": "system", "content": "Answer."},
            {"role": "system", "name": "example_user", "content": "1+1"},
            {"role": "system", "name": "example_assistant", "content": "2"},
            {"role": "user", "content": "2+2"}
        ])))
        .unwrap();
        let roles: Vec<Role> = m.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::User]);
    }

    #[test]
    fn completion_prompts_defaults_and_the_sequence_cap() {
        let r = completion_request(&obj(json!({"prompt": [[1, 2], [3]], "echo": true, "logprobs": 1, "max_tokens": 0}))).unwrap();
        assert_eq!(r.prompts, [CompletionPrompt::Tokens(vec![1, 2]), CompletionPrompt::Tokens(vec![3])]);
        assert_eq!((r.params.max_tokens, r.params.logprobs, r.echo), (Some(0), Some(1), true));
        let r = completion_request(&obj(json!({"prompt": "hi"}))).unwrap();
        assert_eq!(
            (r.prompts, r.params.max_tokens),
            (vec![CompletionPrompt::Text("hi".into())], Some(16))
        );
        for bad in [json!([true]), json!([]), json!([[1], "x"]), json!([4294967296u64])] {
            let e = completion_request(&obj(json!({ "prompt": bad }))).unwrap_err();
            assert_eq!(e.param, "prompt", "{bad}");
        }
        // n x prompts is capped: 64 x 2 fits, 65 x 2 does not.
        let prompts: Vec<String> = vec!["a".into(); 2];
        assert!(completion_request(&obj(json!({"prompt": prompts, "n": 64}))).is_ok());
        let e = completion_request(&obj(json!({"prompt": prompts, "n": 65}))).unwrap_err();
        assert_eq!(e.param, "n");
        assert!(e.message.contains("130 completions"), "{}", e.message);
        let many: Vec<String> = vec!["a".into(); 129];
        assert_eq!(completion_request(&obj(json!({ "prompt": many }))).unwrap_err().param, "prompt");
    }
}
