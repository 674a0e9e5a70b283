//! Completion functions: the protocol every template calls (`complete`, and `loglikelihood`
//! for scoring continuations), `dummy`, and OpenAI-compatible HTTP endpoints with bounded
//! retries, a per-request timeout and an on-disk request cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{EvalError, Result};
use crate::prompt;

/// What upstream's `DummyCompletionFn` answers to every prompt.
pub const DUMMY_RESPONSE: &str = "This is a dummy response.";

/// The result of one completion call.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub completions: Vec<String>,
    /// Data for a `sampling` event (`prompt`, `sampled`, `model`, `usage`), as upstream's
    /// OpenAI completion functions record; `None` where upstream records nothing (`dummy`).
    pub sampling: Option<Value>,
}

/// The log-probability of a continuation given a context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loglikelihood {
    pub logprob: f64,
    /// Whether greedy decoding would have produced the continuation.
    pub is_greedy: bool,
}

/// openai/evals' `CompletionFn` protocol, plus continuation scoring.
pub trait CompletionFn: Send + Sync {
    /// The name as given on the command line (recorded in the log).
    fn name(&self) -> &str;

    /// Complete a string or chat-list prompt; `params` are the sampling keyword arguments a
    /// template passes (`temperature`, `max_tokens`, ...).
    fn complete(&self, prompt: &Value, params: &Map<String, Value>) -> Result<Completion>;

    /// Score `continuation` after `context` (for log-likelihood multiple choice and
    /// bits-per-byte evals).
    fn loglikelihood(&self, _context: &str, _continuation: &str) -> Result<Loglikelihood> {
        Err(EvalError::Unsupported {
            name: self.name().to_string(),
            what: "score continuations (use a completions endpoint or a local model)",
        })
    }
}

/// Upstream's `dummy`: always [`DUMMY_RESPONSE`], no `sampling` event.
pub struct Dummy;

impl CompletionFn for Dummy {
    fn name(&self) -> &str {
        "dummy"
    }

    fn complete(&self, _prompt: &Value, _params: &Map<String, Value>) -> Result<Completion> {
        Ok(Completion {
            completions: vec![DUMMY_RESPONSE.to_string()],
            sampling: None,
        })
    }

    /// A deterministic stand-in so scoring evals can be smoke-tested without a model:
    /// one nat per byte, never greedy.
    fn loglikelihood(&self, _context: &str, continuation: &str) -> Result<Loglikelihood> {
        Ok(Loglikelihood {
            logprob: -(continuation.len() as f64),
            is_greedy: false,
        })
    }
}

/// How to reach an OpenAI-compatible server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    pub api_key: Option<String>,
    /// Whole-request timeout (connect + send + receive), so no request hangs a run.
    pub timeout: Duration,
    /// Retries after the first attempt, on 408/409/429/5xx and transport errors.
    pub max_retries: u32,
    /// First backoff delay; each retry multiplies it by 1.5, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Responses are cached here, keyed by (endpoint, request body incl. model), so a rerun
    /// of an interrupted eval only sends the requests that never completed.
    pub cache_dir: Option<PathBuf>,
}

/// The longest per-request timeout [`HttpConfig::set_timeout_secs`] accepts.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

impl HttpConfig {
    /// Sets the per-request timeout from seconds, as `--timeout` gives them: a finite number
    /// above zero and at most [`MAX_TIMEOUT`] (a day), so `inf`, `NaN` or `1e300` get an
    /// error rather than a panic or a request that can hang a run forever.
    pub fn set_timeout_secs(&mut self, secs: f64) -> Result<()> {
        let max = MAX_TIMEOUT.as_secs_f64();
        let valid = secs > 0.0 && secs <= max; // false for NaN too
        if !valid {
            return Err(EvalError::Setting {
                name: "timeout",
                message: format!("{secs} seconds: must be above 0 and at most {max} (a day)"),
            });
        }
        self.timeout = Duration::from_secs_f64(secs);
        Ok(())
    }

    /// `OPENAI_BASE_URL` (default the OpenAI API) and `OPENAI_API_KEY`.
    pub fn from_env() -> HttpConfig {
        HttpConfig {
            base_url: std::env::var("OPENAI_BASE_URL")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "https://api.openai.com/v1".into()),
            api_key: std::env::var("OPENAI_API_KEY").ok().filter(|s| !s.is_empty()),
            timeout: Duration::from_secs(120),
            max_retries: 8,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            cache_dir: None,
        }
    }
}

/// A JSON-over-HTTP client shared by the completion functions of one run.
pub struct HttpClient {
    cfg: HttpConfig,
    agent: ureq::Agent,
}

fn retryable(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}

impl HttpClient {
    pub fn new(cfg: HttpConfig) -> HttpClient {
        let agent = ureq::AgentBuilder::new().timeout(cfg.timeout).build();
        HttpClient { cfg, agent }
    }

    pub fn config(&self) -> &HttpConfig {
        &self.cfg
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.cfg.base_url.trim_end_matches('/'), path)
    }

    fn cache_path(&self, url: &str, body: &Value) -> Option<PathBuf> {
        let dir = self.cfg.cache_dir.as_ref()?;
        let mut h = Sha256::new();
        h.update(url.as_bytes());
        h.update(b"\n");
        h.update(body.to_string().as_bytes());
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Some(dir.join(&hex[..2]).join(format!("{hex}.json")))
    }

    /// POST `body` to `<base_url>/<path>`, retrying transient failures with backoff that
    /// honours `retry-after`; answered from / stored in the cache when one is configured.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let url = self.url(path);
        let cache = self.cache_path(&url, body);
        if let Some(cached) = cache.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
            if let Ok(v) = serde_json::from_str(&cached) {
                return Ok(v);
            }
        }
        let response = self.send_with_retries(&url, Some(body))?;
        if let Some(p) = cache {
            // The cache only saves work; failing to write it must not fail the request.
            let _ = write_atomically(&p, &response.to_string());
        }
        Ok(response)
    }

    /// GET `<base_url>/<path>` (used to list models), with the same retry policy.
    pub fn get_json(&self, path: &str) -> Result<Value> {
        let url = self.url(path);
        self.send_with_retries(&url, None)
    }

    fn send_with_retries(&self, url: &str, body: Option<&Value>) -> Result<Value> {
        let mut delay = self.cfg.backoff_base;
        let mut attempt = 0;
        loop {
            let mut req = match body {
                Some(_) => self.agent.post(url),
                None => self.agent.get(url),
            };
            if let Some(key) = &self.cfg.api_key {
                req = req.set("Authorization", &format!("Bearer {key}"));
            }
            let result = match body {
                Some(b) => req.send_json(b),
                None => req.call(),
            };
            let (message, retry_after) = match result {
                Ok(resp) => {
                    return resp.into_json::<Value>().map_err(|e| EvalError::Http {
                        url: url.to_string(),
                        message: format!("response is not JSON: {e}"),
                    })
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let retry_after = resp
                        .header("retry-after")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        // Past Duration's range (e.g. `1e300`): as long as possible; the sleep
                        // below is capped at backoff_max anyway.
                        .map(|s| Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX));
                    let text = resp.into_string().unwrap_or_default();
                    let message = format!("HTTP {code}: {}", text.chars().take(500).collect::<String>());
                    if !retryable(code) {
                        return Err(EvalError::Http {
                            url: url.to_string(),
                            message,
                        });
                    }
                    (message, retry_after)
                }
                Err(ureq::Error::Transport(t)) => (t.to_string(), None),
            };
            if attempt >= self.cfg.max_retries {
                return Err(EvalError::Http {
                    url: url.to_string(),
                    message: format!("{message} (gave up after {} attempts)", attempt + 1),
                });
            }
            std::thread::sleep(retry_after.unwrap_or(delay).min(self.cfg.backoff_max));
            delay = delay.mul_f64(1.5).min(self.cfg.backoff_max);
            attempt += 1;
        }
    }
}

fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

/// Which OpenAI endpoint a model is called through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    /// `/chat/completions` (string prompts become one system message).
    Chat,
    /// `/completions` (chat prompts are rendered as "User: ...\nAssistant:" text).
    Completions,
}

/// A model behind an OpenAI-compatible endpoint.
pub struct OpenAiFn {
    name: String,
    model: String,
    kind: ApiKind,
    client: Arc<HttpClient>,
    /// Upstream's `extra_options`: override the template's sampling arguments.
    extra_options: Map<String, Value>,
}

impl OpenAiFn {
    pub fn new(name: &str, model: &str, kind: ApiKind, client: Arc<HttpClient>, extra_options: Map<String, Value>) -> OpenAiFn {
        OpenAiFn {
            name: name.to_string(),
            model: model.to_string(),
            kind,
            client,
            extra_options,
        }
    }

    fn body(&self, prompt_key: &str, prompt: Value, params: &Map<String, Value>) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), Value::String(self.model.clone()));
        body.insert(prompt_key.into(), prompt);
        for (k, v) in params.iter().chain(self.extra_options.iter()) {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

fn bad_response(url: String, what: &str) -> EvalError {
    EvalError::Http {
        url,
        message: format!("unexpected response shape: {what}"),
    }
}

impl CompletionFn for OpenAiFn {
    fn name(&self) -> &str {
        &self.name
    }

    fn complete(&self, prompt: &Value, params: &Map<String, Value>) -> Result<Completion> {
        let (path, sent_prompt, body) = match self.kind {
            ApiKind::Chat => {
                let messages = prompt::to_chat(prompt);
                ("chat/completions", messages.clone(), self.body("messages", messages, params))
            }
            ApiKind::Completions => {
                let text = Value::String(prompt::to_text(prompt));
                ("completions", text.clone(), self.body("prompt", text, params))
            }
        };
        let resp = self.client.post_json(path, &body)?;
        let choices = resp
            .get("choices")
            .and_then(Value::as_array)
            .ok_or_else(|| bad_response(self.client.url(path), "no `choices` list"))?;
        let completions: Vec<String> = choices
            .iter()
            .filter_map(|c| match self.kind {
                ApiKind::Chat => c.pointer("/message/content").and_then(Value::as_str),
                ApiKind::Completions => c.get("text").and_then(Value::as_str),
            })
            .map(String::from)
            .collect();
        let sampling = json!({
            "prompt": sent_prompt,
            "sampled": completions,
            "model": resp.get("model").cloned().unwrap_or(Value::Null),
            "usage": resp.get("usage").cloned().unwrap_or(Value::Null),
        });
        Ok(Completion {
            completions,
            sampling: Some(sampling),
        })
    }

    /// `/completions` with `echo` and `logprobs`: the prompt's own token log-probabilities.
    /// Tokens whose `text_offset` (characters, as OpenAI reports it) falls at or after the
    /// end of the context belong to the continuation.
    fn loglikelihood(&self, context: &str, continuation: &str) -> Result<Loglikelihood> {
        if self.kind == ApiKind::Chat {
            return Err(EvalError::Unsupported {
                name: self.name.clone(),
                what: "score continuations through chat completions (name the model as completions:MODEL)",
            });
        }
        let mut params = Map::new();
        params.insert("max_tokens".into(), json!(0));
        params.insert("echo".into(), json!(true));
        params.insert("logprobs".into(), json!(1));
        params.insert("temperature".into(), json!(0.0));
        let text = format!("{context}{continuation}");
        let body = self.body("prompt", Value::String(text), &params);
        let resp = self.client.post_json("completions", &body)?;
        let url = || self.client.url("completions");
        let lp = resp
            .pointer("/choices/0/logprobs")
            .ok_or_else(|| bad_response(url(), "no choices[0].logprobs"))?;
        let arr = |k: &str| {
            lp.get(k)
                .and_then(Value::as_array)
                .ok_or_else(|| bad_response(url(), &format!("no logprobs.{k}")))
        };
        let (tokens, token_logprobs, offsets) = (arr("tokens")?, arr("token_logprobs")?, arr("text_offset")?);
        let top = lp.get("top_logprobs").and_then(Value::as_array);
        let boundary = context.chars().count() as u64;
        let mut logprob = 0.0;
        let mut is_greedy = true;
        let mut counted = 0;
        for (i, token) in tokens.iter().enumerate() {
            if offsets.get(i).and_then(Value::as_u64).is_none_or(|o| o < boundary) {
                continue;
            }
            let Some(l) = token_logprobs.get(i).and_then(Value::as_f64) else {
                continue;
            };
            logprob += l;
            counted += 1;
            if let Some(best) = top.and_then(|t| t.get(i)).and_then(Value::as_object).and_then(|m| {
                m.iter()
                    .max_by(|a, b| a.1.as_f64().partial_cmp(&b.1.as_f64()).unwrap_or(std::cmp::Ordering::Equal))
            }) {
                if Some(best.0.as_str()) != token.as_str() {
                    is_greedy = false;
                }
            }
        }
        if counted == 0 && !continuation.is_empty() {
            return Err(bad_response(url(), "no continuation tokens had logprobs"));
        }
        Ok(Loglikelihood { logprob, is_greedy })
    }
}

/// openai/evals' `is_chat_model`: which bare model names go through chat completions.
pub fn is_chat_model(name: &str) -> bool {
    if name == "gpt-4-base" || name.starts_with("gpt-3.5-turbo-instruct") {
        return false;
    }
    matches!(name, "gpt-3.5-turbo" | "gpt-3.5-turbo-16k" | "gpt-4" | "gpt-4-32k")
        || name.starts_with("gpt-3.5-turbo-")
        || name.starts_with("gpt-4-")
}
