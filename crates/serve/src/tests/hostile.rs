//! Hostile and malformed requests, as an attacker or a broken client would send them: every one
//! must get an OpenAI-shaped 4xx (`{"error": {"message", "type", "param", "code"}}`), never a
//! 5xx or a panic, and the server must answer a valid request right after.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use axum::http::HeaderValue;

use super::*;

const MIB: usize = 1024 * 1024;

fn hostile_harness() -> Harness {
    harness_with(|c| {
        c.server.max_body_bytes = 8 * MIB;
        c.server.body_timeout_seconds = 5.0;
        // Refusals count against RPM; these limits are not what is tested here.
        c.limits.requests_per_minute = 1_000_000;
        c.limits.tokens_per_minute = 1_000_000_000;
    })
}

/// A request with a raw body and the harness's key.
fn raw(h: &Harness, method: &str, path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {}", h.key))
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

fn chat(h: &Harness, body: Value) -> Request<Body> {
    h.request("POST", "/v1/chat/completions", Some(body), Some(&h.key))
}

fn user(content: Value) -> Value {
    json!({"model": "fake", "messages": [{"role": "user", "content": content}]})
}

fn with(field: &str, value: Value) -> Value {
    let mut v = user(json!("Hi"));
    v[field] = value;
    v
}

fn image(url: Value) -> Value {
    user(json!([{"type": "text", "text": "look"}, {"type": "image_url", "image_url": url}]))
}

fn completion(extra: Value) -> Value {
    let mut v = json!({"model": "fake", "prompt": "Hi"});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// Sends every case and checks its answer; returns how many there were.
async fn expect_client_errors(h: &Harness, cases: Vec<(String, Request<Body>)>) -> usize {
    let total = cases.len();
    for (what, req) in cases {
        let (s, _, b) = h.send(req).await;
        assert!(
            s.is_client_error(),
            "{what}: {s} {}",
            String::from_utf8_lossy(&b[..b.len().min(500)])
        );
        let v: Value = serde_json::from_slice(&b).unwrap_or_else(|_| panic!("{what}: body is not JSON: {}", String::from_utf8_lossy(&b)));
        assert_envelope(&v, s);
        let e = v["error"].as_object().unwrap();
        assert_eq!(e.len(), 4, "{what}: {v}");
        assert!(e["param"].is_null() || e["param"].is_string(), "{what}: {v}");
        assert!(e["code"].is_null() || e["code"].is_string(), "{what}: {v}");
    }
    total
}

async fn valid_request_succeeds(h: &Harness) {
    let (s, _, v) = h.post("/v1/chat/completions", chat_body(json!({"max_tokens": 4}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Hell");
}

fn nested(depth: usize, open: &str, close: &str, inner: &str) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

#[tokio::test]
async fn hostile_requests_get_openai_4xx_envelopes_and_the_server_stays_up() {
    let h = hostile_harness();
    let mut cases: Vec<(String, Request<Body>)> = Vec::new();
    let mut add = |what: &str, req: Request<Body>| cases.push((what.to_string(), req));

    // Bodies that are not a JSON object, or not JSON at all.
    for (what, body) in [
        ("empty body", String::new()),
        ("truncated", "{".to_string()),
        ("null", "null".into()),
        ("array", "[]".into()),
        ("string", "\"text\"".into()),
        ("number", "42".into()),
        ("boolean", "true".into()),
        ("trailing garbage", "{}x".into()),
        ("NaN literal", r#"{"model": "fake", "temperature": NaN}"#.into()),
        ("Infinity literal", r#"{"model": "fake", "temperature": Infinity}"#.into()),
        ("single quotes", "{'model': 'fake'}".into()),
        ("comment", "{/* hi */}".into()),
        (
            "lone high surrogate",
            r#"{"model": "fake", "messages": [{"role": "user", "content": "\ud800"}]}"#.into(),
        ),
        (
            "lone low surrogate",
            r#"{"model": "fake", "messages": [{"role": "user", "content": "a\udc00b"}]}"#.into(),
        ),
        (
            "reversed surrogate pair",
            r#"{"model": "fake", "messages": [{"role": "user", "content": "\udc00\ud800"}]}"#.into(),
        ),
        ("surrogate in a key", r#"{"\ud800": 1, "model": "fake"}"#.into()),
        ("bad escape", r#"{"model": "fa\ke"}"#.into()),
        ("raw control character in a string", "{\"model\": \"fa\u{1}ke\"}".into()),
        (
            "overflowing float",
            r#"{"model": "fake", "messages": [{"role": "user", "content": "x"}], "temperature": 1e400}"#.into(),
        ),
        (
            "overflowing negative float",
            r#"{"model": "fake", "messages": [{"role": "user", "content": "x"}], "top_p": -1e400}"#.into(),
        ),
        (
            "overflowing max_tokens",
            r#"{"model": "fake", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e400}"#.into(),
        ),
        (
            "integer past u64",
            r#"{"model": "fake", "messages": [{"role": "user", "content": "x"}], "max_tokens": 18446744073709551616}"#.into(),
        ),
        ("20,000-deep arrays", nested(20_000, "[", "]", "")),
        ("20,000-deep objects", nested(20_000, "{\"a\":", "}", "1")),
        (
            "20,000-deep content",
            format!(
                r#"{{"model": "fake", "messages": [{{"role": "user", "content": {}}}]}}"#,
                nested(20_000, "[", "]", "\"x\"")
            ),
        ),
    ] {
        add(what, raw(&h, "POST", "/v1/chat/completions", body));
    }
    add(
        "invalid UTF-8",
        raw(&h, "POST", "/v1/chat/completions", &b"{\"model\": \"\xff\xfe\"}"[..]),
    );
    add(
        "9 MiB body",
        raw(
            &h,
            "POST",
            "/v1/chat/completions",
            format!(
                r#"{{"model": "fake", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
                "a".repeat(9 * MIB)
            ),
        ),
    );
    add("9 MiB of whitespace", raw(&h, "POST", "/v1/chat/completions", " ".repeat(9 * MIB)));
    add(
        "completions: 9 MiB",
        raw(
            &h,
            "POST",
            "/v1/completions",
            format!(r#"{{"model": "fake", "prompt": "{}"}}"#, "a".repeat(9 * MIB)),
        ),
    );
    add("prompt far past the context", chat(&h, user(json!("word ".repeat(200_000)))));

    // Wrong types and out-of-range values, field by field.
    for (field, value) in [
        ("model", json!(5)),
        ("model", json!("")),
        ("model", json!(["fake"])),
        ("model", json!({"id": "fake"})),
        ("model", json!("x".repeat(100_000))),
        ("model", json!("../../etc/passwd")),
        ("model", json!("fake\u{0}")),
        ("temperature", json!("hot")),
        ("temperature", json!(-0.1)),
        ("temperature", json!(2.01)),
        ("temperature", json!(1e308)),
        ("temperature", json!([1])),
        ("top_p", json!(-1)),
        ("top_p", json!(1.0001)),
        ("top_p", json!(true)),
        ("n", json!(0)),
        ("n", json!(-1)),
        ("n", json!(129)),
        ("n", json!(1.5)),
        ("n", json!(i64::MAX)),
        ("n", json!("2")),
        ("max_tokens", json!(0)),
        ("max_tokens", json!(-1)),
        ("max_tokens", json!(i64::MIN)),
        ("max_tokens", json!(u64::MAX)),
        ("max_tokens", json!(2.5)),
        ("max_tokens", json!("10")),
        ("max_completion_tokens", json!(-7)),
        ("max_tokens", json!(129)),
        ("presence_penalty", json!(2.5)),
        ("presence_penalty", json!(-1e300)),
        ("frequency_penalty", json!(f64::MAX)),
        ("frequency_penalty", json!({})),
        ("seed", json!("abc")),
        ("seed", json!(1.5)),
        ("seed", json!([1])),
        ("stop", json!(5)),
        ("stop", json!([""])),
        ("stop", json!(["a", "b", "c", "d", "e"])),
        ("stop", json!([1, 2])),
        ("stop", json!({"a": 1})),
        ("logprobs", json!(1)),
        ("logprobs", json!("yes")),
        ("top_logprobs", json!(2)),
        ("logit_bias", json!([1])),
        ("logit_bias", json!("5:1")),
        ("logit_bias", json!({"abc": 1})),
        ("logit_bias", json!({"-1": 1})),
        ("logit_bias", json!({"1.5": 1})),
        ("logit_bias", json!({"": 1})),
        ("logit_bias", json!({"5": 101})),
        ("logit_bias", json!({"5": -100.5})),
        ("logit_bias", json!({"5": "1"})),
        ("logit_bias", json!({"5": null})),
        ("logit_bias", json!({"99999999999999999999999": 1})),
        ("logit_bias", json!({"300": 1})),
        ("logit_bias", json!({"4294967296": 1})),
        ("response_format", json!("json")),
        ("response_format", json!({})),
        ("response_format", json!({"type": 5})),
        ("response_format", json!({"type": "json_schema", "json_schema": {}})),
        ("stream", json!("yes")),
        ("stream", json!(1)),
        ("stream_options", json!({"include_usage": true})),
        ("tools", json!([{"type": "function", "function": {"name": "f"}}])),
        ("functions", json!([{"name": "f"}])),
        ("user", json!(7)),
    ] {
        add(
            &format!("chat {field} = {}", &value.to_string()[..value.to_string().len().min(40)]),
            chat(&h, with(field, value)),
        );
    }
    let mut streamed = with("stream", json!(true));
    streamed["stream_options"] = json!(5);
    add("stream_options not an object", chat(&h, streamed.clone()));
    streamed["stream_options"] = json!({"include_usage": "yes"});
    add("include_usage not a boolean", chat(&h, streamed));
    let mut top = with("logprobs", json!(true));
    top["top_logprobs"] = json!(21);
    add("top_logprobs 21", chat(&h, top.clone()));
    top["top_logprobs"] = json!(-1);
    add("top_logprobs -1", chat(&h, top));

    // Messages.
    for (what, body) in [
        ("no messages", json!({"model": "fake"})),
        ("messages null", json!({"model": "fake", "messages": null})),
        ("messages empty", json!({"model": "fake", "messages": []})),
        ("messages a string", json!({"model": "fake", "messages": "hi"})),
        ("messages an object", json!({"model": "fake", "messages": {"role": "user"}})),
        ("message null", json!({"model": "fake", "messages": [null]})),
        ("message a number", json!({"model": "fake", "messages": [5]})),
        ("no role", json!({"model": "fake", "messages": [{"content": "x"}]})),
        ("role a number", json!({"model": "fake", "messages": [{"role": 1, "content": "x"}]})),
        (
            "unknown role",
            json!({"model": "fake", "messages": [{"role": "USER", "content": "x"}]}),
        ),
        (
            "tool role",
            json!({"model": "fake", "messages": [{"role": "tool", "content": "x"}]}),
        ),
        ("no content", json!({"model": "fake", "messages": [{"role": "user"}]})),
        ("content null", user(Value::Null)),
        ("content a number", user(json!(5))),
        ("content an object", user(json!({"text": "x"}))),
        ("part null", user(json!([null]))),
        ("part without type", user(json!([{}]))),
        ("part type a number", user(json!([{"type": 1}]))),
        (
            "audio part",
            user(json!([{"type": "input_audio", "input_audio": {"data": "AAAA"}}])),
        ),
        ("text part without text", user(json!([{"type": "text"}]))),
        ("text part with a number", user(json!([{"type": "text", "text": 5}]))),
    ] {
        add(what, chat(&h, body));
    }

    // Images: only inline base64 data URLs are read, and this model reads none.
    for (what, url) in [
        ("remote http image", json!({"url": "http://example.com/cat.png"})),
        ("remote https image", json!({"url": "https://example.com/cat.png"})),
        ("file URL", json!({"url": "file:///etc/passwd"})),
        ("protocol-relative URL", json!({"url": "//example.com/cat.png"})),
        ("link-local URL", json!({"url": "http://169.254.169.254/latest/meta-data/"})),
        ("image URL as a bare string", json!("https://example.com/cat.png")),
        ("url a number", json!({"url": 5})),
        ("no url", json!({})),
        ("image_url null", Value::Null),
        ("bad base64", json!({"url": "data:image/png;base64,@@@"})),
        ("base64 of bad length", json!({"url": "data:image/png;base64,A"})),
        ("not base64", json!({"url": "data:image/png,rawbytes"})),
        ("not an image", json!({"url": "data:text/html;base64,PHNjcmlwdD4="})),
        ("no media type", json!({"url": "data:;base64,AAAA"})),
        ("no comma", json!({"url": "data:image/png;base64"})),
        ("valid image, text-only model", json!({"url": "data:image/png;base64,iVBORw0KGgo="})),
    ] {
        add(what, chat(&h, image(url)));
    }
    add(
        "image in a system message",
        chat(
            &h,
            json!({"model": "fake", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]}),
        ),
    );

    // The legacy completions endpoint.
    for (what, extra) in [
        ("no prompt", json!({"prompt": null})),
        ("prompt a number", json!({"prompt": 5})),
        ("prompt an object", json!({"prompt": {}})),
        ("prompt empty array", json!({"prompt": []})),
        ("prompt empty string", json!({"prompt": ""})),
        ("empty token list", json!({"prompt": [[]]})),
        ("mixed prompt", json!({"prompt": [1, "a"]})),
        ("negative token", json!({"prompt": [-1]})),
        ("fractional token", json!({"prompt": [1.5]})),
        ("token past the vocabulary", json!({"prompt": [999_999]})),
        ("token past u32", json!({"prompt": [u64::MAX]})),
        ("one bad list", json!({"prompt": [[1], [-1]]})),
        ("129 prompts", json!({"prompt": vec!["a"; 129]})),
        ("logprobs 6", json!({"logprobs": 6})),
        ("logprobs -1", json!({"logprobs": -1})),
        ("echo a number", json!({"echo": 1})),
        ("suffix", json!({"suffix": "z"})),
        ("best_of 3", json!({"best_of": 3})),
        ("best_of 0", json!({"best_of": 0})),
        ("max_tokens -1", json!({"max_tokens": -1})),
        ("max_tokens past the context", json!({"max_tokens": 1_000_000})),
    ] {
        add(
            &format!("completions: {what}"),
            h.request("POST", "/v1/completions", Some(completion(extra)), Some(&h.key)),
        );
    }

    // Keys, methods and paths.
    let body = chat_body(json!({}));
    add("no key", h.request("POST", "/v1/chat/completions", Some(body.clone()), None));
    add(
        "wrong key",
        h.request("POST", "/v1/chat/completions", Some(body.clone()), Some("sk-wrong")),
    );
    add(
        "10,000-character key",
        h.request("POST", "/v1/chat/completions", Some(body.clone()), Some(&"k".repeat(10_000))),
    );
    for auth in [&b"Basic abc"[..], b"Bearer ", b"Bearer\t", b"bearer", b"Bearer sk-\xff\xfe"] {
        let mut req = h.request("POST", "/v1/chat/completions", Some(body.clone()), None);
        req.headers_mut().insert("authorization", HeaderValue::from_bytes(auth).unwrap());
        add(&format!("authorization {:?}", String::from_utf8_lossy(auth)), req);
    }
    for (method, path) in [
        ("GET", "/v1/chat/completions"),
        ("PUT", "/v1/chat/completions"),
        ("DELETE", "/v1/models"),
        ("POST", "/v1/models"),
        ("GET", "/v1/nothing"),
        ("GET", "/v1/models/not-a-model"),
        ("GET", "/v1/../../etc/passwd"),
        ("GET", "/v1/models/%00"),
        ("POST", "/v1/embeddings"),
    ] {
        add(&format!("{method} {path}"), h.request(method, path, None, Some(&h.key)));
    }

    // The waitlist, the one endpoint without a key.
    for (i, (what, body)) in [
        ("waitlist: empty object", json!({})),
        ("waitlist: name a number", json!({"name": 5, "email": "a@b.c"})),
        ("waitlist: no email", json!({"name": "x"})),
        ("waitlist: email without @", json!({"name": "x", "email": "nope"})),
        ("waitlist: blank name", json!({"name": "   ", "email": "a@b.c"})),
        ("waitlist: long name", json!({"name": "n".repeat(201), "email": "a@b.c"})),
        (
            "waitlist: long email",
            json!({"name": "x", "email": format!("{}@b.c", "a".repeat(300))}),
        ),
        (
            "waitlist: long reason",
            json!({"name": "x", "email": "a@b.c", "reason": "r".repeat(5000)}),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        // One address each: refused entries use up their address's allowance too.
        let address = [10, 9, 9, i as u8];
        add(what, from_address(h.request("POST", "/v1/waitlist", Some(body), None), address));
    }
    add(
        "waitlist: 9 MiB",
        from_address(raw(&h, "POST", "/v1/waitlist", "x".repeat(9 * MIB)), [10, 9, 8, 1]),
    );

    let total = expect_client_errors(&h, cases).await;
    assert!(total >= 150, "only {total} cases");
    valid_request_succeeds(&h).await;
    // Nothing above was generated, so nothing was billed.
    h.state.flush_ledger();
    assert_eq!(h.state.store().ledger().unwrap().len(), 1);
}

/// Reads what the server sends until it closes the connection.
fn answer_of(mut s: TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

fn envelope_of(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON envelope: {answer}"))
}

/// Slow senders over a real socket: a body that stalls gets a 408 envelope once the body
/// timeout passes (before, the connection was held forever); a slow but steady one is served;
/// a body declared larger than the limit is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_stalled_senders() {
    let h = hostile_harness();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crate::server::serve(listener, h.state.clone(), std::future::pending()));
    let key = h.key.clone();
    let head = move |len: usize| {
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let valid = chat_body(json!({"max_tokens": 4})).to_string();
    let (stalled, steady, huge) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(head(valid.len()).as_bytes()).unwrap();
        s.write_all(&valid.as_bytes()[..10]).unwrap();
        let stalled = answer_of(s);

        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(head(valid.len()).as_bytes()).unwrap();
        for b in valid.as_bytes() {
            s.write_all(&[*b]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let steady = answer_of(s);

        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(head(100 * MIB).as_bytes()).unwrap();
        s.write_all(b"{\"model\": ").unwrap();
        let huge = answer_of(s);
        (stalled, steady, huge)
    })
    .await
    .unwrap();
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    assert_envelope(&envelope_of(&stalled), StatusCode::REQUEST_TIMEOUT);
    assert!(steady.starts_with("HTTP/1.1 200"), "{steady}");
    assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");
    assert_envelope(&envelope_of(&huge), StatusCode::PAYLOAD_TOO_LARGE);
    valid_request_succeeds(&h).await;
}

/// `logit_bias` follows OpenAI's rules, defined once in ferrogpt-infer: at most 300 entries,
/// and a token id has one spelling, so "1", "01" and "001" cannot all name token 1.
#[tokio::test]
async fn hostile_logit_bias_is_limited_to_300_entries_with_canonical_ids() {
    let h = hostile_harness();
    // 5,000 distinct keys for the fake model's 257 ids: the same ids with leading zeros.
    let mut flood = serde_json::Map::new();
    for width in 1..=22 {
        for id in 0..250 {
            flood.insert(format!("{id:0width$}"), json!(1));
        }
    }
    assert!(flood.len() >= 5000, "{}", flood.len());
    let cases = vec![
        (
            "5,000-entry logit_bias".to_string(),
            chat(&h, with("logit_bias", Value::Object(flood))),
        ),
        (
            "aliases of one token id".to_string(),
            chat(&h, with("logit_bias", json!({"1": 5, "01": -5, "001": 100}))),
        ),
    ];
    expect_client_errors(&h, cases).await;
    valid_request_succeeds(&h).await;
}

/// One request may not ask for 128 x 128 = 16,384 sequences: `n` times the number of prompts
/// is capped (ferrogpt-infer's `MAX_SEQUENCES_PER_REQUEST`); across requests the sequences a
/// model and a key hold are bounded (next test).
#[tokio::test]
async fn hostile_sequence_flood_is_capped_per_request() {
    let h = hostile_harness();
    let flood = completion(json!({"prompt": vec!["a"; 128], "n": 128, "max_tokens": 1}));
    let cases = vec![(
        "128 prompts x n 128".to_string(),
        h.request("POST", "/v1/completions", Some(flood), Some(&h.key)),
    )];
    expect_client_errors(&h, cases).await;
    valid_request_succeeds(&h).await;
}

/// Checks a 429 for a full queue; the status comes first, as an admitted stream would not end
/// while generation is held.
async fn refused_for_a_full_queue(h: &Harness, req: Request<Body>, what: &str) {
    let resp = h.app.clone().oneshot(req).await.unwrap();
    let (s, headers) = (resp.status(), resp.headers().clone());
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{what}");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_envelope(&v, s);
    assert_eq!(v["error"]["code"], "queue_full", "{what}: {v}");
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1, "{what}");
    assert_eq!(headers["x-should-retry"], "true", "{what}");
}

/// Sequences held across requests are bounded per key and per model: with generation held,
/// key A fills its share and is refused with a retryable 429, key B still gets in until the
/// model is full, and once the streams end their places are free again. A request that asks
/// for more than a key may ever hold is a 400, not a 429 it would retry forever.
#[tokio::test]
async fn hostile_sequence_flood_is_bounded_per_key_and_model() {
    let h = harness_with(|c| {
        c.server.max_sequences_per_model = 12;
        c.server.max_sequences_per_key = 8;
        c.limits.requests_per_minute = 1_000;
        c.limits.tokens_per_minute = 1_000_000;
    });
    let (_, key_b) = h.state.store().create_key("other", None).unwrap();
    h.gate.send_replace(false);
    let stream_chat = |key: &str, n: usize| {
        h.request(
            "POST",
            "/v1/chat/completions",
            Some(chat_body(json!({"n": n, "max_tokens": 3, "stream": true}))),
            Some(key),
        )
    };
    // Held responses keep their sequences in flight: their bodies are read only at the end.
    let mut held = Vec::new();
    let open = |status: StatusCode, what: &str| assert_eq!(status, 200, "{what}");
    let resp = h.app.clone().oneshot(stream_chat(&h.key, 4)).await.unwrap();
    open(resp.status(), "A: 4 sequences");
    held.push(resp);
    let two_prompts = json!({"model": "fake", "prompt": ["a", "b"], "n": 2, "max_tokens": 3, "stream": true});
    let resp = h
        .app
        .clone()
        .oneshot(h.request("POST", "/v1/completions", Some(two_prompts), Some(&h.key)))
        .await
        .unwrap();
    open(resp.status(), "A: 2 prompts x 2");
    held.push(resp);

    refused_for_a_full_queue(&h, stream_chat(&h.key, 1), "A past its 8").await;

    let resp = h.app.clone().oneshot(stream_chat(&key_b, 4)).await.unwrap();
    open(resp.status(), "B: 4 sequences while A is at its bound");
    held.push(resp);
    refused_for_a_full_queue(&h, stream_chat(&key_b, 1), "B past the model's 12").await;

    h.gate.send_replace(true);
    for resp in held {
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));
    }
    // A finished stream frees its places when its task ends, just after the last chunk.
    while h.state.sequences_held("fake-0314") > 0 {
        tokio::task::yield_now().await;
    }
    let (s, _, v) = h.post("/v1/chat/completions", chat_body(json!({"n": 8, "max_tokens": 2}))).await;
    assert_eq!(s, 200, "{v}");
    let (s, _, v) = h.post("/v1/chat/completions", chat_body(json!({"n": 9, "max_tokens": 2}))).await;
    assert_eq!((s, &v["error"]["param"]), (StatusCode::BAD_REQUEST, &json!("n")), "{v}");
}
