//! OpenAI-compatible endpoints against an in-test HTTP server on 127.0.0.1: request
//! shapes, retry-after handling, the request cache, log-likelihood scoring, timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrogpt_evals::completion::{ApiKind, CompletionFn, HttpClient, HttpConfig, OpenAiFn};
use serde_json::{json, Map, Value};

/// A recorded request: path and JSON body.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// Serve each connection with `respond(path, body, n)` where n counts requests so far;
/// it returns (status, extra headers, body).
fn serve(respond: impl Fn(&str, &Value, usize) -> (u16, String, String) + Send + 'static) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            handle(stream, &respond, &log);
        }
    });
    (format!("http://{addr}/v1"), seen)
}

fn handle(stream: TcpStream, respond: &impl Fn(&str, &Value, usize) -> (u16, String, String), seen: &Seen) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut len = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = {
        let mut s = seen.lock().unwrap();
        s.push((path.clone(), body.clone()));
        s.len()
    };
    let (status, headers, text) = respond(&path, &body, n);
    let mut out = stream;
    let _ = write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{text}",
        text.len()
    );
}

fn config(base: &str, cache: Option<std::path::PathBuf>) -> HttpConfig {
    HttpConfig {
        base_url: base.to_string(),
        api_key: Some("sk-test".into()),
        timeout: Duration::from_secs(10),
        max_retries: 3,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        cache_dir: cache,
    }
}

fn chat_reply(text: &str) -> String {
    json!({"model": "gpt-4-0613", "choices": [{"message": {"role": "assistant", "content": text}}], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}).to_string()
}

#[test]
fn chat_requests_retry_on_429_and_record_sampling() {
    let (base, seen) = serve(|_, _, n| {
        if n == 1 {
            (429, "Retry-After: 0\r\n".into(), "{\"error\": \"slow down\"}".into())
        } else {
            (200, String::new(), chat_reply("Paris"))
        }
    });
    let f = OpenAiFn::new(
        "gpt-4",
        "gpt-4",
        ApiKind::Chat,
        Arc::new(HttpClient::new(config(&base, None))),
        Map::new(),
    );
    let params: Map<String, Value> = [("temperature".to_string(), json!(0.0))].into_iter().collect();
    let out = f.complete(&json!("Capital of France?"), &params).unwrap();
    assert_eq!(out.completions, ["Paris"]);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "one 429, one success");
    assert_eq!(seen[1].0, "/v1/chat/completions");
    // A string prompt goes to chat models as one system message, as oaieval sends it.
    assert_eq!(
        seen[1].1,
        json!({"model": "gpt-4", "messages": [{"role": "system", "content": "Capital of France?"}], "temperature": 0.0})
    );
    let s = out.sampling.unwrap();
    assert_eq!(s["sampled"], json!(["Paris"]));
    assert_eq!(s["usage"]["total_tokens"], 7);
}

#[test]
fn non_retryable_errors_fail_at_once_and_retries_are_bounded() {
    let (base, seen) = serve(|path, _, _| {
        if path.ends_with("/completions") && !path.contains("chat") {
            (503, String::new(), "{}".into())
        } else {
            (400, String::new(), "{\"error\": \"bad\"}".into())
        }
    });
    let client = Arc::new(HttpClient::new(config(&base, None)));
    let chat = OpenAiFn::new("gpt-4", "gpt-4", ApiKind::Chat, client.clone(), Map::new());
    let err = chat.complete(&json!("x"), &Map::new()).unwrap_err().to_string();
    assert!(err.contains("HTTP 400"), "{err}");
    let comp = OpenAiFn::new("m", "m", ApiKind::Completions, client, Map::new());
    let err = comp.complete(&json!("x"), &Map::new()).unwrap_err().to_string();
    assert!(err.contains("gave up after 4 attempts"), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1 + 4);
}

#[test]
fn cache_answers_repeated_requests() {
    let (base, seen) = serve(|_, body, _| {
        let prompt = body["prompt"].as_str().unwrap_or_default().to_string();
        (
            200,
            String::new(),
            json!({"model": "m", "choices": [{"text": format!("{prompt}!")}]}).to_string(),
        )
    });
    let cache = tempfile::tempdir().unwrap();
    let client = Arc::new(HttpClient::new(config(&base, Some(cache.path().to_path_buf()))));
    let f = OpenAiFn::new("m", "m", ApiKind::Completions, client, Map::new());
    // Chat prompts are rendered as text for completions models.
    let chat = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]);
    let a = f.complete(&chat, &Map::new()).unwrap();
    let b = f.complete(&chat, &Map::new()).unwrap();
    assert_eq!(a.completions, ["Be brief.\nUser: hi\nAssistant:!"]);
    assert_eq!(a.completions, b.completions);
    assert_eq!(seen.lock().unwrap().len(), 1, "the second call came from the cache");
}

#[test]
fn loglikelihood_through_echo_logprobs() {
    let (base, seen) = serve(|_, _, _| {
        let lp = json!({
            "tokens": ["Q", ":", " Paris", "!"],
            "token_logprobs": [null, -0.5, -1.25, -0.25],
            "top_logprobs": [null, {":": -0.5}, {" Paris": -1.25, " Rome": -2.0}, {"?": -0.1, "!": -0.25}],
            "text_offset": [0, 1, 2, 8],
        });
        (
            200,
            String::new(),
            json!({"model": "m", "choices": [{"text": "Q: Paris!", "logprobs": lp}]}).to_string(),
        )
    });
    let f = OpenAiFn::new(
        "m",
        "m",
        ApiKind::Completions,
        Arc::new(HttpClient::new(config(&base, None))),
        Map::new(),
    );
    let ll = f.loglikelihood("Q:", " Paris!").unwrap();
    assert_eq!(ll.logprob, -1.5);
    assert!(!ll.is_greedy, "'!' was not the top token");
    let body = &seen.lock().unwrap()[0].1;
    assert_eq!(
        (body["echo"].clone(), body["max_tokens"].clone(), body["prompt"].clone()),
        (json!(true), json!(0), json!("Q: Paris!"))
    );
    let chat = OpenAiFn::new(
        "gpt-4",
        "gpt-4",
        ApiKind::Chat,
        Arc::new(HttpClient::new(config(&base, None))),
        Map::new(),
    );
    assert!(chat.loglikelihood("a", "b").is_err());
}

#[test]
fn a_silent_server_times_out_instead_of_hanging() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let held: Vec<TcpStream> = listener.incoming().take(2).filter_map(Result::ok).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(held);
    });
    let mut cfg = config(&format!("http://{addr}/v1"), None);
    cfg.timeout = Duration::from_millis(300);
    cfg.max_retries = 1;
    let f = OpenAiFn::new("m", "m", ApiKind::Completions, Arc::new(HttpClient::new(cfg)), Map::new());
    let err = f.complete(&json!("x"), &Map::new()).unwrap_err().to_string();
    assert!(err.contains("gave up after 2 attempts"), "{err}");
}

#[test]
fn a_huge_retry_after_waits_at_most_backoff_max_instead_of_panicking() {
    for header in ["1e300", "18446744073709551616", "1.8e19"] {
        let (base, seen) = serve(move |_, _, n| {
            if n == 1 {
                (429, format!("Retry-After: {header}\r\n"), "{\"error\": \"slow down\"}".into())
            } else {
                (200, String::new(), chat_reply("ok"))
            }
        });
        let f = OpenAiFn::new(
            "gpt-4",
            "gpt-4",
            ApiKind::Chat,
            Arc::new(HttpClient::new(config(&base, None))),
            Map::new(),
        );
        let out = f.complete(&json!("x"), &Map::new()).unwrap();
        assert_eq!(out.completions, ["ok"], "{header}");
        assert_eq!(seen.lock().unwrap().len(), 2, "{header}");
    }
}

#[test]
fn timeouts_must_be_finite_positive_and_at_most_a_day() {
    let mut cfg = config("http://127.0.0.1:9/v1", None);
    for bad in [f64::INFINITY, f64::NAN, 1e300, 0.0, -1.0, 86_401.0] {
        let e = cfg.set_timeout_secs(bad).unwrap_err().to_string();
        assert!(e.contains("timeout") && e.contains("at most"), "{bad}: {e}");
    }
    cfg.set_timeout_secs(0.5).unwrap();
    assert_eq!(cfg.timeout, Duration::from_millis(500));
    cfg.set_timeout_secs(86_400.0).unwrap();
    assert_eq!(cfg.timeout, Duration::from_secs(86_400));
}
