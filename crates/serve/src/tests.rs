//! End-to-end tests of the HTTP layer against a deterministic fake model: API shapes, SSE,
//! error envelopes, keys, rate limits under concurrency, the ledger and the chat-page cap.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc::UnboundedSender, watch};
use tower::ServiceExt;

use crate::backend::*;
use crate::config::{Config, SnapshotConfig};
use crate::ratelimit::Clock;
use crate::server::{router, AppState};
use crate::store::Store;
use ferrogpt_infer::{
    token_prompt, ChatMessage, FinishReason, GenerationEvent, GenerationRequest, InferError, PromptTokens, ResponseFormat, TokenLogprob,
};

mod hostile;
mod moderation;

/// A clock that only moves when told to, so rate-limit tests cannot depend on timing.
struct FrozenClock(AtomicU64);
impl Clock for FrozenClock {
    fn now(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::SeqCst))
    }
}

const REPLY: &str = "Hello, world! How are you today?";

/// Byte-level "model": every prompt gets `REPLY` (or `{"ok": true}` in JSON mode), one byte per
/// token. A closed gate holds generation, before the token numbered `hold_at`, until opened, so
/// tests can keep requests in flight at a known point.
struct FakeBackend {
    gate: watch::Receiver<bool>,
    hold_at: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    /// The thread of every tokenization, in order.
    tokenized_on: Arc<Mutex<Vec<ThreadId>>>,
}

impl FakeBackend {
    fn tokenizing(&self) {
        self.tokenized_on.lock().unwrap().push(std::thread::current().id());
    }
}

impl Backend for FakeBackend {
    fn context_length(&self) -> usize {
        256
    }
    fn vocab_size(&self) -> usize {
        257
    }
    /// One byte per token.
    fn max_token_bytes(&self) -> usize {
        1
    }
    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, InferError> {
        self.tokenizing();
        if let Some(message) = messages.iter().position(ChatMessage::has_images) {
            return Err(InferError::TextOnly { message });
        }
        let mut out = Vec::new();
        for m in messages {
            out.extend(format!("{}:{}\n", m.role.as_str(), m.text()).bytes().map(u32::from));
        }
        out.extend(b"assistant:".iter().map(|&b| u32::from(b)));
        Ok(out)
    }
    /// A byte-level model has no `<|bos|>`: text is its bytes.
    fn text_prompt(&self, text: &str) -> PromptTokens {
        self.tokenizing();
        token_prompt(text.bytes().map(u32::from).collect())
    }
    fn token_bytes(&self, token: u32) -> Vec<u8> {
        vec![token as u8]
    }
    fn submit(&self, req: GenerationRequest, tag: usize, tx: UnboundedSender<(usize, GenEvent)>) -> Result<(), BackendError> {
        let mut gate = self.gate.clone();
        let hold_at = self.hold_at.load(Ordering::SeqCst);
        let running = self.running.clone();
        tokio::spawn(async move {
            running.fetch_add(1, Ordering::SeqCst);
            if hold_at == 0 {
                let _ = gate.wait_for(|open| *open).await;
            }
            let tok = |b: u8, lp: f32, k: usize| TokenLogprob {
                token: u32::from(b),
                logprob: lp,
                is_argmax: true,
                top: (0..k).map(|i| (u32::from(b + i as u8), -0.25 - i as f32)).collect(),
            };
            let send = |ev: GenerationEvent| tx.send((tag, GenEvent::Sequence(ev))).is_ok();
            if req.prompt_logprobs {
                let toks = req
                    .prompt
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| (i > 0).then(|| tok(t as u8, -1.0, 1)))
                    .collect();
                send(GenerationEvent::Prompt(toks));
            }
            let reply = if req.params.response_format == ResponseFormat::JsonObject {
                "{\"ok\": true}"
            } else {
                REPLY
            };
            let mut text = reply.to_string();
            let mut finish = FinishReason::Stop;
            if let Some(cut) = req.params.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                text.truncate(cut);
            }
            let max_tokens = req.params.max_tokens.unwrap_or(usize::MAX);
            if text.len() > max_tokens {
                text.truncate(max_tokens);
                finish = FinishReason::Length;
            }
            for (k, b) in text.bytes().enumerate() {
                if k > 0 && k == hold_at {
                    let _ = gate.wait_for(|open| *open).await;
                }
                let logprobs = req.params.logprobs.map(|k| tok(b, -0.25, k)).into_iter().collect();
                if !send(GenerationEvent::Text {
                    text: (b as char).to_string(),
                    tokens: vec![u32::from(b)],
                    logprobs,
                }) {
                    running.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
            }
            send(GenerationEvent::Finished {
                reason: finish,
                prompt_tokens: req.prompt.len(),
                completion_tokens: text.len(),
            });
            running.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(())
    }
    fn stats(&self) -> BackendStats {
        BackendStats {
            running: self.running.load(Ordering::SeqCst),
            ..BackendStats::default()
        }
    }
}

struct Harness {
    dir: tempfile::TempDir,
    config: Config,
    state: Arc<AppState>,
    app: Router,
    key: String,
    gate: watch::Sender<bool>,
    hold_at: Arc<AtomicUsize>,
    tokenized_on: Arc<Mutex<Vec<ThreadId>>>,
}

fn harness_with(edit: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("state.sqlite")).unwrap());
    let (_, key) = store.create_key("tester", None).unwrap();
    let snap = |id: &str| SnapshotConfig {
        id: id.into(),
        folder: dir.path().into(),
        context_length: Some(128),
        prompt_price_per_1k: 0.03,
        completion_price_per_1k: 0.06,
        created: 1_678_752_000,
    };
    let mut config = Config {
        snapshots: vec![snap("fake-0314"), snap("fake-32k-0314")],
        ..Config::default()
    };
    config.aliases.insert("fake".into(), "fake-0314".into());
    config.server.max_body_bytes = 64 * 1024;
    edit(&mut config);
    let (gate, gate_rx) = watch::channel(true);
    let hold_at = Arc::new(AtomicUsize::new(0));
    let tokenized_on = Arc::default();
    let state = fake_state(&config, store, gate_rx, &hold_at, &tokenized_on);
    Harness {
        dir,
        config,
        app: router(state.clone()),
        state,
        key,
        gate,
        hold_at,
        tokenized_on,
    }
}

/// A server over fake models: every snapshot of `config` answers through its own [`FakeBackend`].
fn fake_state(
    config: &Config,
    store: Arc<Store>,
    gate: watch::Receiver<bool>,
    hold_at: &Arc<AtomicUsize>,
    tokenized_on: &Arc<Mutex<Vec<ThreadId>>>,
) -> Arc<AppState> {
    let mut backends: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
    for s in &config.snapshots {
        backends.insert(
            s.id.clone(),
            Arc::new(FakeBackend {
                gate: gate.clone(),
                hold_at: hold_at.clone(),
                running: Arc::default(),
                tokenized_on: tokenized_on.clone(),
            }),
        );
    }
    let clock = Arc::new(FrozenClock(AtomicU64::new(0f64.to_bits())));
    Arc::new(AppState::new(config, backends, store, clock).unwrap())
}

fn harness() -> Harness {
    harness_with(|_| {})
}

impl Harness {
    fn request(&self, method: &str, path: &str, body: Option<Value>, key: Option<&str>) -> Request<Body> {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        }
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, headers, bytes)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, axum::http::HeaderMap, Value) {
        let (s, h, b) = self.send(self.request("POST", path, Some(body), Some(&self.key))).await;
        let v = serde_json::from_slice(&b).unwrap_or(Value::Null);
        (s, h, v)
    }
}

fn chat_body(extra: Value) -> Value {
    let mut v = json!({"model": "fake", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"}]});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// Parses an SSE body into its `data:` payloads.
fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ").map(str::to_string)))
        .collect()
}

fn assert_envelope(v: &Value, status: StatusCode) {
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{status}: {v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
}

#[tokio::test]
async fn chat_completion_shape_and_alias_resolution() {
    let h = harness();
    let (s, headers, v) = h.post("/v1/chat/completions", chat_body(json!({}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "fake-0314");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], REPLY);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let prompt = "system:You are terse.\nuser:Hi\nassistant:".len() as u64;
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": prompt, "completion_tokens": REPLY.len(), "total_tokens": prompt + REPLY.len() as u64})
    );
    assert_eq!(headers["x-ratelimit-limit-requests"], "200");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "199");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "40000");
    assert!(headers.contains_key("x-request-id"));
    h.state.flush_ledger();
    let ledger = h.state.store().ledger().unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].model, "fake-0314");
    assert_eq!(ledger[0].outcome, "ok");
    let cost = (prompt as f64 * 0.03 + REPLY.len() as f64 * 0.06) / 1000.0;
    assert!((ledger[0].cost - cost).abs() < 1e-12);
}

#[tokio::test]
async fn streaming_matches_non_streaming_and_ends_with_usage_and_done() {
    let h = harness();
    let req = h.request(
        "POST",
        "/v1/chat/completions",
        Some(chat_body(json!({"stream": true, "stream_options": {"include_usage": true}}))),
        Some(&h.key),
    );
    let (s, headers, body) = h.send(req).await;
    assert_eq!(s, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(headers.contains_key("x-ratelimit-remaining-tokens"));
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let ids: std::collections::HashSet<_> = chunks.iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 1, "every chunk shares one id");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, REPLY);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], REPLY.len());
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()));
}

#[tokio::test]
async fn n_stop_max_tokens_logprobs_and_json_mode() {
    let h = harness();
    let (_, _, v) = h.post("/v1/chat/completions", chat_body(json!({"n": 2, "stop": ["world"]}))).await;
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["choices"][1]["message"]["content"], "Hello, ");
    assert_eq!(v["usage"]["completion_tokens"], 14);

    let (_, _, v) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 5}))).await;
    assert_eq!(v["choices"][0]["message"]["content"], "Hello");
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    let (_, _, v) = h
        .post(
            "/v1/chat/completions",
            chat_body(json!({"max_tokens": 2, "logprobs": true, "top_logprobs": 2})),
        )
        .await;
    let lp = &v["choices"][0]["logprobs"]["content"];
    assert_eq!(lp[0]["token"], "H");
    assert_eq!(lp[0]["bytes"], json!([72]));
    assert_eq!(lp[1]["top_logprobs"].as_array().unwrap().len(), 2);

    let (_, _, v) = h
        .post(
            "/v1/chat/completions",
            chat_body(json!({"response_format": {"type": "json_object"}})),
        )
        .await;
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(serde_json::from_str::<Value>(content).unwrap().is_object());
}

#[tokio::test]
async fn completions_echo_scores_the_prompt() {
    let h = harness();
    let (s, _, v) = h
        .post(
            "/v1/completions",
            json!({"model": "fake-0314", "prompt": "abc", "max_tokens": 0, "echo": true, "logprobs": 1}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    let c = &v["choices"][0];
    assert_eq!(c["text"], "abc");
    assert_eq!(c["logprobs"]["tokens"], json!(["a", "b", "c"]));
    assert_eq!(c["logprobs"]["token_logprobs"], json!([null, -1.0, -1.0]));
    assert_eq!(c["logprobs"]["text_offset"], json!([0, 1, 2]));
    assert_eq!(c["logprobs"]["top_logprobs"][0], Value::Null);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(v["usage"]["completion_tokens"], 0);

    let (s, _, v) = h
        .post("/v1/completions", json!({"model": "fake", "prompt": ["a", "b"], "max_tokens": 3}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(v["choices"][1]["text"], "Hel");
}

/// `echo` returns the prompt before the completion, also without `logprobs` (it used to come
/// back without the prompt), streamed or not.
#[tokio::test]
async fn completions_echo_without_logprobs_returns_the_prompt() {
    let h = harness();
    let body = json!({"model": "fake", "prompt": ["ab", "cd"], "max_tokens": 3, "echo": true});
    let (s, _, v) = h.post("/v1/completions", body.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], "abHel");
    assert_eq!(v["choices"][1]["text"], "cdHel");
    assert!(v["choices"][0]["logprobs"].is_null());
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let (s, _, raw) = h.send(h.request("POST", "/v1/completions", Some(streamed), Some(&h.key))).await;
    assert_eq!(s, 200);
    let mut texts = [String::new(), String::new()];
    for d in sse_data(&raw).iter().filter(|d| *d != "[DONE]") {
        let c: Value = serde_json::from_str(d).unwrap();
        let i = c["choices"][0]["index"].as_u64().unwrap() as usize;
        texts[i].push_str(c["choices"][0]["text"].as_str().unwrap());
    }
    assert_eq!(texts, ["abHel", "cdHel"]);
}

/// OpenAI's `top_p: 0` ("only the most likely token") is accepted.
#[tokio::test]
async fn top_p_zero_is_accepted() {
    let h = harness();
    let (s, _, v) = h.post("/v1/chat/completions", chat_body(json!({"top_p": 0}))).await;
    assert_eq!(s, 200, "{v}");
    let (s, _, v) = h.post("/v1/completions", json!({"model": "fake", "prompt": "a", "top_p": 0})).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn models_are_listed_per_key() {
    let h = harness();
    let (s, _, b) = h.send(h.request("GET", "/v1/models", None, Some(&h.key))).await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&b).unwrap();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["fake-0314", "fake-32k-0314", "fake"]);
    let (s, _, b) = h.send(h.request("GET", "/v1/models/fake", None, Some(&h.key))).await;
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["snapshot"], "fake-0314");

    // A waitlisted user approved for one snapshot sees only it; the rest is "not found".
    let (s, _, b) = h
        .send(h.request(
            "POST",
            "/v1/waitlist",
            Some(json!({"name": "Ada", "email": "ada@example.com", "reason": "evals"})),
            None,
        ))
        .await;
    assert_eq!(s, 201);
    let wid = serde_json::from_slice::<Value>(&b).unwrap()["id"].as_i64().unwrap();
    let (_, limited) = h.state.store().approve(wid, Some(&["fake-0314".to_string()])).unwrap();
    let (_, _, b) = h.send(h.request("GET", "/v1/models", None, Some(&limited))).await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["fake-0314", "fake"], "a granted snapshot brings its alias along");
    let req = h.request(
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": "fake-32k-0314", "messages": [{"role": "user", "content": "x"}]})),
        Some(&limited),
    );
    let (s, _, b) = h.send(req).await;
    assert_eq!(s, 404);
    assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn error_statuses_and_codes() {
    let h = harness();
    let body = chat_body(json!({}));
    let (s, _, b) = h.send(h.request("POST", "/v1/chat/completions", Some(body.clone()), None)).await;
    assert_eq!(s, 401);
    assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["error"]["code"], "invalid_api_key");
    let (s, _, b) = h
        .send(h.request("POST", "/v1/chat/completions", Some(body.clone()), Some("sk-nope-nope-nope")))
        .await;
    assert_eq!(s, 401);
    let msg = serde_json::from_slice::<Value>(&b).unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("sk-***nope") && !msg.contains("sk-nope-nope"), "{msg}");

    let (s, _, v) = h.post("/v1/chat/completions", chat_body(json!({"model": "gpt-4"}))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("model_not_found")));

    let long = "x".repeat(200);
    let (s, _, v) = h
        .post(
            "/v1/chat/completions",
            json!({"model": "fake", "messages": [{"role": "user", "content": long}]}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["param"], "messages");
    let (s, _, v) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 120}))).await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("in the completion"), "{v}");

    let (s, _, v) = h.post("/v1/chat/completions", json!({"model": "fake", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]})).await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("text-only"));
}

/// Every kind of malformed request gets a 4xx in the OpenAI envelope, never a 5xx or a panic.
#[tokio::test]
async fn malformed_requests_get_4xx_envelopes() {
    let h = harness();
    let key = Some(h.key.as_str());
    let raw = |method: &str, path: &str, body: &'static [u8], ct: Option<&str>| {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", h.key));
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        b.body(Body::from(body)).unwrap()
    };
    let mut reqs = vec![
        raw("POST", "/v1/chat/completions", b"", None),
        raw("POST", "/v1/chat/completions", b"{", Some("application/json")),
        raw("POST", "/v1/chat/completions", b"null", Some("application/json")),
        raw("POST", "/v1/chat/completions", b"[]", Some("application/json")),
        raw("POST", "/v1/chat/completions", b"\"text\"", Some("application/json")),
        raw("POST", "/v1/chat/completions", b"\xff\xfe", Some("application/json")),
        raw(
            "POST",
            "/v1/chat/completions",
            b"model=fake",
            Some("application/x-www-form-urlencoded"),
        ),
        raw(
            "POST",
            "/v1/completions",
            b"{\"model\": \"fake\", \"prompt\": \"a\", \"n\": 1e400}",
            None,
        ),
        raw("GET", "/v1/chat/completions", b"", None),
        raw("DELETE", "/v1/models", b"", None),
        raw("GET", "/v2/anything", b"", None),
    ];
    let bad_bodies = [
        json!({"model": 5, "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "", "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "fake", "messages": "hi"}),
        json!({"model": "fake", "messages": [5]}),
        json!({"model": "fake", "messages": [{"content": "x"}]}),
        json!({"model": "fake", "messages": [{"role": "tool", "content": "x"}]}),
        json!({"model": "fake", "messages": [{"role": "user", "content": 5}]}),
        json!({"model": "fake", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}),
        json!({"model": "fake", "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
        json!({"model": "fake", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}),
        json!({"model": "fake", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]}),
        json!({"model": "fake", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "temperature": -1}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "top_p": 1.5}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "n": 1.5}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "n": 500}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "max_tokens": -3}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "max_tokens": 99999999999u64}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "stop": 5}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "stop": [""]}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"abc": 1}}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": 101}}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"99999": 1}}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "logit_bias": [1]}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"05": 1}}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"+5": 1}}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "logit_bias": {" 5": 1}}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "logit_bias": (0..301).map(|i| (i.to_string(), json!(1))).collect::<serde_json::Map<_, _>>()}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "presence_penalty": 3}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "seed": "x"}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "logprobs": "yes"}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "response_format": "json"}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "stream": true, "stream_options": 1}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}),
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "user": 7}),
    ];
    for b in bad_bodies {
        reqs.push(h.request("POST", "/v1/chat/completions", Some(b), key));
    }
    for b in [
        json!({"model": "fake"}),
        json!({"model": "fake", "prompt": []}),
        json!({"model": "fake", "prompt": [[]]}),
        json!({"model": "fake", "prompt": [1, "a"]}),
        json!({"model": "fake", "prompt": [999999]}),
        json!({"model": "fake", "prompt": ""}),
        json!({"model": "fake", "prompt": "a", "logprobs": 6}),
        json!({"model": "fake", "prompt": "a", "best_of": 3}),
        json!({"model": "fake", "prompt": "a", "suffix": "z"}),
        json!({"model": "fake", "prompt": "a", "echo": 1}),
        json!({"model": "fake", "prompt": ["a", "b", "c"], "n": 50}),
    ] {
        reqs.push(h.request("POST", "/v1/completions", Some(b), key));
    }
    reqs.push(h.request("POST", "/v1/waitlist", Some(json!({"name": "x"})), None));
    reqs.push(h.request("POST", "/v1/waitlist", Some(json!({"name": "x", "email": "nope"})), None));
    let big = format!(
        "{{\"model\": \"fake\", \"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
        "a".repeat(70_000)
    );
    reqs.push(
        Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header("authorization", format!("Bearer {}", h.key))
            .body(Body::from(big))
            .unwrap(),
    );
    reqs.push(
        Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header("authorization", "Basic abc")
            .body(Body::from("{}"))
            .unwrap(),
    );
    let total = reqs.len();
    for (i, req) in reqs.into_iter().enumerate() {
        let what = format!("#{i} {} {}", req.method(), req.uri());
        let (s, _, b) = h.send(req).await;
        assert!(s.is_client_error(), "{what}: {s} {}", String::from_utf8_lossy(&b));
        let v: Value = serde_json::from_slice(&b).unwrap_or_else(|_| panic!("{what}: body is not JSON: {}", String::from_utf8_lossy(&b)));
        assert_envelope(&v, s);
    }
    assert!(total > 55);
    // Nothing above reached the model, so nothing was charged.
    h.state.flush_ledger();
    assert!(h.state.store().ledger().unwrap().is_empty());
}

/// RPM under concurrency: with time frozen, exactly the limit is admitted out of many
/// simultaneous requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_per_minute_is_exact_under_concurrency() {
    let h = Arc::new(harness_with(|c| c.limits.requests_per_minute = 50));
    let mut tasks = Vec::new();
    for _ in 0..150 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let (s, headers, _) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 4}))).await;
            (s, headers)
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        let (s, headers) = t.await.unwrap();
        match s.as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert!(headers.contains_key("retry-after"));
                assert_eq!(headers["x-should-retry"], "true");
                assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (50, 100));
    // A different snapshot has its own bucket.
    let (s, _, _) = h
        .post(
            "/v1/chat/completions",
            chat_body(json!({"model": "fake-32k-0314", "max_tokens": 4})),
        )
        .await;
    assert_eq!(s, 200);
}

/// TPM under concurrency: generation is held so no reservation settles early; each request
/// reserves prompt + max_tokens, so exactly floor(limit / reservation) get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_per_minute_is_exact_under_concurrency() {
    let h = Arc::new(harness_with(|c| c.limits.tokens_per_minute = 1000));
    h.gate.send_replace(false);
    let body = json!({"model": "fake", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 80});
    let prompt = "user:Hi\nassistant:".len();
    let per_request = prompt + 80;
    let expected_ok = 1000 / per_request;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..40 {
        let (h, body, done_tx) = (h.clone(), body.clone(), done_tx.clone());
        tokio::spawn(async move {
            let (s, headers, _) = h.post("/v1/chat/completions", body).await;
            let _ = done_tx.send((s, headers));
        });
    }
    // While the admitted requests are held, only the refused ones can answer.
    for _ in 0..40 - expected_ok {
        let (s, headers) = done_rx.recv().await.unwrap();
        assert_eq!(s, 429);
        assert_eq!(headers["x-should-retry"], "true");
    }
    h.gate.send_replace(true);
    for _ in 0..expected_ok {
        let (s, _) = done_rx.recv().await.unwrap();
        assert_eq!(s, 200);
    }
    // Settled to actual usage: the unused part of each reservation came back.
    let (s, headers, _) = h
        .post(
            "/v1/chat/completions",
            json!({"model": "fake", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}),
        )
        .await;
    assert_eq!(s, 200);
    let used = expected_ok * (prompt + REPLY.len()) + prompt + 1;
    assert_eq!(headers["x-ratelimit-remaining-tokens"], (1000 - used).to_string());
}

#[tokio::test]
async fn rpm_and_tpm_denials_say_which_limit_in_openai_words() {
    let h = harness_with(|c| {
        c.limits.requests_per_minute = 1;
        c.limits.tokens_per_minute = 1000;
    });
    let (s, _, _) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 4}))).await;
    assert_eq!(s, 200);
    let (s, _, v) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 4}))).await;
    assert_eq!(s, 429);
    assert_eq!(v["error"]["type"], "requests");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("on requests per min (RPM): Limit 1, Used 1, Requested 1. Please try again in"),
        "{message}"
    );

    let h = harness_with(|c| c.limits.tokens_per_minute = 100);
    let (s, _, _) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 60}))).await;
    assert_eq!(s, 200);
    let (s, _, v) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 60}))).await;
    assert_eq!(s, 429);
    assert_eq!(v["error"]["type"], "tokens");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("on tokens per min (TPM): Limit 100, Used "), "{message}");
    assert!(message.contains("Please try again in"), "{message}");
}

#[tokio::test]
async fn request_larger_than_tpm_is_not_retryable() {
    let h = harness_with(|c| c.limits.tokens_per_minute = 50);
    let (s, headers, v) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 60}))).await;
    assert_eq!(s, 429);
    assert_eq!(headers["x-should-retry"], "false");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["type"], "tokens");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("Request too large"));
}

/// Reads an SSE body until `enough` holds for the text of its content deltas so far.
async fn read_stream_until(body: &mut Body, enough: impl Fn(&str) -> bool) -> String {
    let mut raw = Vec::new();
    loop {
        let text: String = sse_data(&raw)
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
            .collect();
        if enough(&text) {
            return text;
        }
        let frame = body.frame().await.expect("the stream ended early").unwrap();
        raw.extend_from_slice(&frame.into_data().unwrap());
    }
}

/// Flushes the ledger until it holds a row that `settled` accepts: a stream task records its
/// request when it notices the closed connection, which happens on another task.
async fn wait_for_ledger(h: &Harness, settled: impl Fn(&crate::store::LedgerEntry) -> bool) -> Vec<crate::store::LedgerEntry> {
    for _ in 0..3000 {
        h.state.flush_ledger();
        let ledger = h.state.store().ledger().unwrap();
        if ledger.iter().any(&settled) {
            return ledger;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no settled ledger row after 30 s: {:?}", h.state.store().ledger().unwrap());
}

const CHAT_PROMPT: &str = "system:You are terse.\nuser:Hi\nassistant:";

/// A client that closes a stream mid-way pays for its prompt and the tokens it was sent, and
/// the rate limiter is settled with them (before, both were 0 and the reservation came back).
#[tokio::test]
async fn disconnect_mid_stream_charges_the_prompt_and_tokens_so_far() {
    let h = harness_with(|c| c.limits.tokens_per_minute = 1000);
    h.hold_at.store(10, Ordering::SeqCst);
    h.gate.send_replace(false);
    let req = h.request(
        "POST",
        "/v1/chat/completions",
        Some(chat_body(json!({"stream": true, "max_tokens": 40}))),
        Some(&h.key),
    );
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let seen = read_stream_until(&mut body, |t| t.len() >= 10).await;
    assert_eq!(seen, REPLY[..10]);
    drop(body);
    let ledger = wait_for_ledger(&h, |e| e.outcome == "client_disconnected").await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    let prompt = CHAT_PROMPT.len() as u64;
    assert_eq!((ledger[0].prompt_tokens, ledger[0].completion_tokens), (prompt, 10));
    let cost = (prompt as f64 * 0.03 + 10.0 * 0.06) / 1000.0;
    assert!((ledger[0].cost - cost).abs() < 1e-12, "{}", ledger[0].cost);
    // The limiter kept prompt + 10 tokens of the first request's reservation.
    h.gate.send_replace(true);
    h.hold_at.store(0, Ordering::SeqCst);
    let (s, headers, _) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 4}))).await;
    assert_eq!(s, 200);
    let remaining = 1000 - (prompt + 10) - (prompt + 4);
    assert_eq!(headers["x-ratelimit-remaining-tokens"], remaining.to_string());
}

/// The ledger row exists from admission on (`open`, prompt tokens known) and is settled in
/// place when the request ends: one row per request, never a second one.
#[tokio::test]
async fn ledger_row_is_written_at_admission_and_settled_at_the_end() {
    let h = harness();
    h.gate.send_replace(false);
    let req = h.request(
        "POST",
        "/v1/chat/completions",
        Some(chat_body(json!({"stream": true}))),
        Some(&h.key),
    );
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    h.state.flush_ledger();
    let ledger = h.state.store().ledger().unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].outcome, "open");
    assert_eq!(ledger[0].prompt_tokens, CHAT_PROMPT.len() as u64);
    h.gate.send_replace(true);
    read_stream_until(&mut body, |t| t == REPLY).await;
    while body.frame().await.is_some() {}
    let ledger = wait_for_ledger(&h, |e| e.outcome == "ok").await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].completion_tokens, REPLY.len() as u64);
}

/// A restart after a crash (here: a second server on the same state file while the first still
/// holds a stream) closes the rows left open as `interrupted`, with the tokens known, and
/// `usage` bills them.
#[tokio::test]
async fn restart_closes_open_rows_as_interrupted_and_usage_bills_them() {
    let h = harness();
    h.hold_at.store(10, Ordering::SeqCst);
    h.gate.send_replace(false);
    let req = h.request(
        "POST",
        "/v1/chat/completions",
        Some(chat_body(json!({"stream": true}))),
        Some(&h.key),
    );
    let resp = h.app.clone().oneshot(req).await.unwrap();
    let mut body = resp.into_body();
    read_stream_until(&mut body, |t| t.len() >= 10).await;
    h.state.flush_ledger();
    let store = Arc::new(Store::open(&h.dir.path().join("state.sqlite")).unwrap());
    let restarted = fake_state(&h.config, store.clone(), watch::channel(true).1, &Arc::default(), &Arc::default());
    restarted.flush_ledger();
    let ledger = store.ledger().unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    let row = &ledger[0];
    assert_eq!(row.outcome, "interrupted");
    assert_eq!(row.prompt_tokens, CHAT_PROMPT.len() as u64);
    assert!((1..=10).contains(&row.completion_tokens), "{row:?}");
    let usage = store.usage(None).unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].requests, usage[0].prompt_tokens), (1, row.prompt_tokens));
    assert_eq!(usage[0].completion_tokens, row.completion_tokens);
    assert!(usage[0].cost > 0.0);
}

/// Key lookup has its own connection: a request authenticates while another user of the
/// state file holds its shared connection (before, the lookup waited on that lock, on a
/// runtime worker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lookup_does_not_wait_for_other_store_users() {
    let h = Arc::new(harness());
    let store = h.state.store().clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _guard = store.conn();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    locked_rx.recv().unwrap();
    let task = {
        let h = h.clone();
        tokio::spawn(async move { h.send(h.request("GET", "/v1/models", None, Some(&h.key))).await.0 })
    };
    let answered = tokio::time::timeout(std::time::Duration::from_secs(60), task).await;
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(answered.expect("the key lookup waited for the store's lock").unwrap(), 200);
}

/// `ferrogpt keys revoke` runs in another process: the server refuses the key on the very
/// next request.
#[tokio::test]
async fn revoked_key_is_refused_on_the_next_request() {
    let h = harness();
    let (s, _, _) = h.send(h.request("GET", "/v1/models", None, Some(&h.key))).await;
    assert_eq!(s, 200);
    let other_process = Store::open(&h.dir.path().join("state.sqlite")).unwrap();
    assert_eq!(other_process.revoke_key("tester").unwrap(), 1);
    let (s, _, b) = h.send(h.request("GET", "/v1/models", None, Some(&h.key))).await;
    assert_eq!(s, 401);
    assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["error"]["code"], "invalid_api_key");
}

/// Requests refused after authentication count against the key's RPM: those naming a model
/// against that model's bucket, those that name none against the key's own.
#[tokio::test]
async fn refused_requests_count_against_requests_per_minute() {
    let h = harness_with(|c| c.limits.requests_per_minute = 2);
    let long = json!({"model": "fake", "messages": [{"role": "user", "content": "x".repeat(300)}]});
    let (s, _, v) = h.post("/v1/chat/completions", long).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("context_length_exceeded"))
    );
    let (s, _, _) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 4}))).await;
    assert_eq!(s, 200);
    let (s, headers, v) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 4}))).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["type"], "requests");
    assert!(headers.contains_key("retry-after"));

    let garbage = || {
        Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header("authorization", format!("Bearer {}", h.key))
            .body(Body::from("{"))
            .unwrap()
    };
    for _ in 0..2 {
        let (s, _, _) = h.send(garbage()).await;
        assert_eq!(s, 400);
    }
    let (s, _, b) = h.send(garbage()).await;
    assert_eq!(s, 429, "{}", String::from_utf8_lossy(&b));
    assert_envelope(&serde_json::from_slice(&b).unwrap(), s);
    // Another model's bucket is untouched.
    let (s, _, _) = h
        .post(
            "/v1/chat/completions",
            chat_body(json!({"model": "fake-32k-0314", "max_tokens": 4})),
        )
        .await;
    assert_eq!(s, 200);
}

/// A chat-page message refused by the rate limiter does not use up the page's cap.
/// Prompts are tokenized on a blocking thread, not on the async runtime's, and a prompt with
/// more bytes than the context's tokens can hold (here 128 tokens of at most 1 byte) is
/// refused before it is tokenized at all; such refusals count against the key's RPM.
#[tokio::test]
async fn prompts_are_tokenized_off_the_runtime_and_oversize_ones_not_at_all() {
    let h = harness_with(|c| c.limits.requests_per_minute = 4);
    let runtime = std::thread::current().id();
    let (s, _, v) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 2}))).await;
    assert_eq!(s, 200, "{v}");
    let (s, _, v) = h
        .post("/v1/completions", json!({"model": "fake", "prompt": ["Hi", "Ho"], "max_tokens": 2}))
        .await;
    assert_eq!(s, 200, "{v}");
    let tokenized = h.tokenized_on.lock().unwrap().clone();
    assert_eq!(tokenized.len(), 3);
    assert!(tokenized.iter().all(|&t| t != runtime), "tokenized on the runtime's thread");

    let long = "x".repeat(129);
    let (s, _, v) = h
        .post(
            "/v1/chat/completions",
            json!({"model": "fake", "messages": [{"role": "user", "content": long}]}),
        )
        .await;
    assert_eq!(
        (s, &v["error"]["code"], &v["error"]["param"]),
        (StatusCode::BAD_REQUEST, &json!("context_length_exceeded"), &json!("messages")),
        "{v}"
    );
    let (s, _, v) = h
        .post("/v1/completions", json!({"model": "fake", "prompt": ["Hi", long], "max_tokens": 2}))
        .await;
    assert_eq!(
        (s, &v["error"]["code"], &v["error"]["param"]),
        (StatusCode::BAD_REQUEST, &json!("context_length_exceeded"), &json!("prompt")),
        "{v}"
    );
    assert_eq!(h.tokenized_on.lock().unwrap().len(), 3, "an oversize prompt was tokenized");
    // Two admitted and two refused: the fifth request is over the RPM of 4.
    let (s, _, v) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 2}))).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
}

#[tokio::test]
async fn chat_page_cap_is_taken_after_the_rate_limiter() {
    let h = harness_with(|c| {
        c.chat.messages_per_window = 5;
        c.limits.requests_per_minute = 1;
    });
    let (s, _, _) = h.post("/chat/api/completions", chat_body(json!({}))).await;
    assert_eq!(s, 200);
    let (s, _, v) = h.post("/chat/api/completions", chat_body(json!({}))).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limit_exceeded"))
    );
    let (_, _, b) = h.send(h.request("GET", "/chat/api/usage", None, Some(&h.key))).await;
    assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["used"], 1);
}

fn from_address(mut req: Request<Body>, ip: [u8; 4]) -> Request<Body> {
    let addr = std::net::SocketAddr::from((ip, 40_000));
    req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
    req
}

/// The waitlist takes a few entries per client address per hour and short fields only.
#[tokio::test]
async fn waitlist_limits_inserts_per_address_and_field_length() {
    let h = harness();
    let entry = |i: usize| json!({"name": format!("Ada {i}"), "email": "ada@example.com", "reason": "evals"});
    for i in 0..5 {
        let (s, _, _) = h
            .send(from_address(h.request("POST", "/v1/waitlist", Some(entry(i)), None), [10, 0, 0, 1]))
            .await;
        assert_eq!(s, 201);
    }
    let (s, headers, b) = h
        .send(from_address(h.request("POST", "/v1/waitlist", Some(entry(5)), None), [10, 0, 0, 1]))
        .await;
    assert_eq!(s, 429, "{}", String::from_utf8_lossy(&b));
    assert!(headers.contains_key("retry-after"));
    assert_envelope(&serde_json::from_slice(&b).unwrap(), s);
    let (s, _, _) = h
        .send(from_address(h.request("POST", "/v1/waitlist", Some(entry(6)), None), [10, 0, 0, 2]))
        .await;
    assert_eq!(s, 201);
    let long_name = json!({"name": "n".repeat(201), "email": "ada@example.com"});
    let (s, _, b) = h
        .send(from_address(
            h.request("POST", "/v1/waitlist", Some(long_name), None),
            [10, 0, 0, 3],
        ))
        .await;
    assert_eq!(s, 400);
    assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["error"]["param"], "name");
    assert_eq!(h.state.store().list_waitlist().unwrap().len(), 6);
}

#[tokio::test]
async fn chat_page_cap_and_metrics() {
    let h = harness_with(|c| c.chat.messages_per_window = 2);
    let (s, _, b) = h.send(h.request("GET", "/", None, None)).await;
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&b).contains("id=\"system\""));
    // A request refused for its length does not use up the allowance.
    let long = json!({"model": "fake", "messages": [{"role": "user", "content": "x".repeat(300)}]});
    let (s, _, _) = h.post("/chat/api/completions", long).await;
    assert_eq!(s, 400);
    for _ in 0..2 {
        let (s, _, v) = h.post("/chat/api/completions", chat_body(json!({}))).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, _, v) = h.post("/chat/api/completions", chat_body(json!({}))).await;
    assert_eq!(s, 429);
    assert_eq!(v["error"]["code"], "usage_cap_reached");
    assert!(v["error"]["message"].as_str().unwrap().contains("2 messages every 3 hours"));
    let (_, _, b) = h.send(h.request("GET", "/chat/api/usage", None, Some(&h.key))).await;
    assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["used"], 2);
    // The API itself is not capped.
    let (s, _, _) = h.post("/v1/chat/completions", chat_body(json!({}))).await;
    assert_eq!(s, 200);

    let (s, _, b) = h.send(h.request("GET", "/metrics", None, None)).await;
    assert_eq!(s, 200);
    let text = String::from_utf8(b).unwrap();
    assert!(
        text.contains("ferrogpt_requests_total{endpoint=\"chat.completions\",status=\"200\"} 3"),
        "{text}"
    );
    assert!(text.contains("ferrogpt_time_to_first_token_seconds_count{model=\"fake-0314\"} 3"));
    let (s, _, _) = h.send(h.request("GET", "/health", None, None)).await;
    assert_eq!(s, 200);
}

/// The real scheduler behind the HTTP layer, on a tiny random-weight model: concurrent
/// requests are batched, JSON mode yields valid JSON, streams and `n` work, scoring works, and
/// a panic in a step fails that batch and restarts the scheduler.
mod real_engine {
    use super::*;
    use crate::engine::{Decode, EngineBackend, NewDecoder};
    use ferrogpt_engine::{Model, ModelConfig};
    use ferrogpt_infer::engine::DecoderStats;
    use ferrogpt_infer::{BatchDecoder, LocalModel, SeqId};
    use ferrogpt_tokenizer::Tokenizer;

    fn harness() -> (Harness, Arc<EngineBackend>) {
        harness_with_decoder(Box::new(|m, config| Box::new(BatchDecoder::new(m, config))))
    }

    fn harness_with_decoder(new_decoder: NewDecoder) -> (Harness, Arc<EngineBackend>) {
        let texts: Vec<String> = (0..80)
            .map(|i| format!("{{\"sea\": {i}, \"waves\": [\"blue\", true]}} The sea {i} is wide."))
            .collect();
        let tok = Tokenizer::train(texts.into_iter(), 320).unwrap();
        let cfg = ModelConfig {
            vocab_size: tok.vocab_size(),
            d_model: 32,
            n_layers: 2,
            n_heads: 2,
            n_kv_heads: 1,
            ffn_hidden: 64,
            max_seq_len: 128,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
            tie_embeddings: false,
            num_labels: None,
        };
        let model = LocalModel::from_parts(Model::new(cfg, 0.5, 11).unwrap(), tok, std::path::PathBuf::from("tiny"));
        let backend = Arc::new(EngineBackend::start_with_decoder(Arc::new(model), 4, new_decoder).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("state.sqlite")).unwrap());
        let (_, key) = store.create_key("tester", None).unwrap();
        let snapshot = SnapshotConfig {
            id: "tiny-0101".into(),
            folder: dir.path().into(),
            context_length: None,
            prompt_price_per_1k: 0.0,
            completion_price_per_1k: 0.0,
            created: 0,
        };
        let mut config = Config {
            snapshots: vec![snapshot],
            ..Config::default()
        };
        config.aliases.insert("tiny".into(), "tiny-0101".into());
        let mut backends: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
        backends.insert("tiny-0101".into(), backend.clone());
        let clock = Arc::new(FrozenClock(AtomicU64::new(0f64.to_bits())));
        let state = Arc::new(AppState::new(&config, backends, store, clock).unwrap());
        let h = Harness {
            dir,
            config,
            app: router(state.clone()),
            state,
            key,
            gate: watch::channel(true).0,
            hold_at: Arc::default(),
            tokenized_on: Arc::default(),
        };
        (h, backend)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_share_batches() {
        let (h, backend) = harness();
        let h = Arc::new(h);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                h.post("/v1/chat/completions", json!({"model": "tiny", "max_tokens": 20, "seed": i, "messages": [{"role": "user", "content": format!("The sea {i}")}]})).await
            }));
        }
        let mut generated = 0;
        for t in tasks {
            let (s, _, v) = t.await.unwrap();
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["model"], "tiny-0101");
            generated += v["usage"]["completion_tokens"].as_u64().unwrap();
        }
        let stats = backend.stats();
        // With 4 slots, 8 requests need far fewer forward passes than tokens generated.
        assert!(stats.steps < generated, "{} steps for {generated} tokens", stats.steps);
        assert_eq!(stats.running, 0);
    }

    #[tokio::test]
    async fn json_mode_streaming_n_and_scoring() {
        let (h, _) = harness();
        for max_tokens in [6, 15, 40] {
            let (s, _, v) = h.post("/v1/chat/completions", json!({"model": "tiny", "n": 2, "max_tokens": max_tokens, "temperature": 1.5, "seed": max_tokens, "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "JSON please"}]})).await;
            assert_eq!(s, 200, "{v}");
            for c in v["choices"].as_array().unwrap() {
                let text = c["message"]["content"].as_str().unwrap();
                assert!(
                    serde_json::from_str::<Value>(text).unwrap().is_object(),
                    "max_tokens {max_tokens}: {text:?}"
                );
            }
        }
        let body = json!({"model": "tiny", "max_tokens": 12, "temperature": 0, "messages": [{"role": "user", "content": "The sea"}]});
        let (_, _, plain) = h.post("/v1/chat/completions", body.clone()).await;
        // top_p = 0 is greedy whatever the temperature.
        let mut nucleus_zero = body.clone();
        nucleus_zero["temperature"] = json!(1.5);
        nucleus_zero["top_p"] = json!(0);
        let (_, _, v) = h.post("/v1/chat/completions", nucleus_zero).await;
        assert_eq!(v["choices"][0]["message"], plain["choices"][0]["message"]);
        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        let (s, _, raw) = h.send(h.request("POST", "/v1/chat/completions", Some(sbody), Some(&h.key))).await;
        assert_eq!(s, 200);
        let text: String = sse_data(&raw)
            .iter()
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
            .collect();
        assert_eq!(text, plain["choices"][0]["message"]["content"].as_str().unwrap());

        let (s, _, v) = h
            .post(
                "/v1/completions",
                json!({"model": "tiny", "prompt": "The sea is wide", "max_tokens": 0, "echo": true, "logprobs": 2}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let lp = &v["choices"][0]["logprobs"];
        assert_eq!(v["choices"][0]["text"], "The sea is wide");
        // A text prompt is read after `<|bos|>` (the BOS policy), which echo does not show: the
        // client's first token is predicted by it and so has a logprob too.
        let scored = lp["token_logprobs"].as_array().unwrap();
        assert!(scored.iter().all(|x| x.as_f64().unwrap() <= 0.0), "{lp}");
        assert_eq!(v["usage"]["prompt_tokens"], scored.len() + 1);
        assert_eq!(lp["text_offset"][0], 0);
        assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2);
        assert_eq!(lp["top_logprobs"][1].as_object().unwrap().len(), 2);
    }

    /// A prompt of these token ids makes [`PanicsOnPoison`] panic.
    const POISON: [u32; 3] = [99, 98, 97];

    /// The real decoder, but its next step panics once a request with the [`POISON`] prompt
    /// has joined (as a bug in the engine would, mid-batch).
    struct PanicsOnPoison<'m> {
        inner: BatchDecoder<'m>,
        poisoned: bool,
    }

    impl Decode for PanicsOnPoison<'_> {
        fn add(&mut self, request: GenerationRequest) -> Result<SeqId, InferError> {
            self.poisoned |= request.prompt == POISON;
            self.inner.add(request)
        }
        fn cancel(&mut self, id: SeqId) {
            self.inner.cancel(id)
        }
        fn is_idle(&self) -> bool {
            self.inner.is_idle()
        }
        fn step(&mut self) -> Result<Vec<(SeqId, GenerationEvent)>, InferError> {
            assert!(!self.poisoned, "poisoned prompt");
            self.inner.step()
        }
        fn stats(&self) -> DecoderStats {
            self.inner.stats()
        }
    }

    async fn health(h: &Harness) -> (StatusCode, Value) {
        let (s, _, b) = h.send(h.request("GET", "/health", None, None)).await;
        (s, serde_json::from_slice(&b).unwrap())
    }

    /// A panic in a step fails the requests in that batch with a 500 envelope; the scheduler
    /// starts over, the next request succeeds, and `/health` reports the restart.
    #[tokio::test]
    async fn scheduler_panic_fails_the_batch_and_restarts() {
        let (h, backend) = harness_with_decoder(Box::new(|m, config| {
            Box::new(PanicsOnPoison {
                inner: BatchDecoder::new(m, config),
                poisoned: false,
            })
        }));
        let (s, v) = health(&h).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["models"]["tiny-0101"], json!({"state": "running", "restarts": 0, "sequences": 0}));

        let (s, _, v) = h
            .post("/v1/completions", json!({"model": "tiny", "prompt": POISON, "max_tokens": 4}))
            .await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
        assert_envelope(&v, s);
        assert_eq!(v["error"]["type"], "server_error");

        let (s, _, v) = h
            .post("/v1/completions", json!({"model": "tiny", "prompt": "The sea", "max_tokens": 4}))
            .await;
        assert_eq!(s, 200, "{v}");
        assert!(v["choices"][0]["finish_reason"].is_string(), "{v}");
        let (s, v) = health(&h).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "ok");
        assert_eq!(v["models"]["tiny-0101"]["state"], "running");
        assert_eq!(v["models"]["tiny-0101"]["restarts"], 1);
        assert_eq!(backend.stats().restarts, 1);
    }
}
