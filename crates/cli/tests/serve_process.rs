//! `ferrogpt serve` as a process, on a tiny random model: killed with SIGKILL while streams run
//! (every request that got a 200 has a ledger row after the restart), stopped with SIGTERM
//! (running streams drain; past the deadline they are cut short and recorded), and the
//! operator's `keys waitlist` printing what strangers typed without obeying it.
//!
//! Nothing here depends on timing beyond generous deadlines: readiness is polled on /health,
//! and a stream is "running" because its client stopped reading an answer far larger than the
//! socket buffers, so the server cannot finish it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferrogpt_engine::{Model, ModelConfig};
use ferrogpt_infer::LocalModel;
use ferrogpt_serve::store::{LedgerEntry, Store, OUTCOME_INTERRUPTED, OUTCOME_OPEN};
use ferrogpt_tokenizer::{Special, Tokenizer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ferrogpt");
/// Generous bound on anything the tests wait for.
const PATIENCE: Duration = Duration::from_secs(120);
/// Choices and tokens of a "long" stream: about 15 MB of SSE, which no socket buffer holds.
const LONG_N: u64 = 64;
const LONG_TOKENS: u64 = 1000;
/// The quick-start prices (dollars per 1,000 prompt and completion tokens).
const PRICES: (f64, f64) = (0.03, 0.06);

/// A random-weight model folder with a context long enough for the long streams; returns the
/// folder and its end token, which the long streams ban so that they run to `max_tokens`.
fn tiny_model(dir: &Path) -> (PathBuf, u32) {
    let texts: Vec<String> = (0..60).map(|i| format!("The sea {i} is wide and the waves are blue.")).collect();
    let tok = Tokenizer::train(texts.into_iter(), 300).unwrap();
    let cfg = ModelConfig {
        vocab_size: tok.vocab_size(),
        d_model: 32,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        ffn_hidden: 64,
        max_seq_len: 1100,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: false,
        num_labels: None,
    };
    let model = Model::new(cfg, 0.5, 3).unwrap();
    let folder = dir.join("model");
    LocalModel::save_folder(&folder, &model, &tok).unwrap();
    (folder, tok.special_id(Special::End))
}

fn ferrogpt(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("FERROGPT_HOME", home).env("RUST_LOG", "warn");
    c
}

fn create_key(home: &Path) -> String {
    let out = ferrogpt(home).args(["keys", "create", "--name", "tests"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn ledger(home: &Path) -> Vec<LedgerEntry> {
    Store::open(&home.join("state.sqlite")).unwrap().ledger().unwrap()
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts `ferrogpt serve` on a free port and waits until /health answers.
    fn start(home: &Path, model: &Path, extra: &[&str]) -> Server {
        let mut child = ferrogpt(home)
            .args(["serve", "--model"])
            .arg(model)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--rpm",
                "100000",
                "--tpm",
                "100000000",
                "--slots",
                "16",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (addr_tx, addr_rx) = mpsc::channel();
        // Keeps reading so the server never blocks on a full pipe; shows its log on failure.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving on http://").nth(1) {
                    let _ = addr_tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                eprintln!("server: {line}");
            }
        });
        let addr = addr_rx.recv_timeout(PATIENCE).expect("the server did not print its address");
        let server = Server {
            child,
            addr: addr.parse().unwrap(),
        };
        let deadline = Instant::now() + PATIENCE;
        while !matches!(server.get("/health").0, 200) {
            assert!(Instant::now() < deadline, "/health never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Sends a request on a new connection (closed by the server after its answer).
    fn send(&self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> std::io::Result<TcpStream> {
        let mut s = TcpStream::connect(self.addr)?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        Ok(s)
    }

    /// Status and body (undecoded) of a whole answer; status 0 when there is none.
    fn get(&self, path: &str) -> (u16, String) {
        match self.send("GET", path, None, None) {
            Ok(s) => read_answer(s),
            Err(_) => (0, String::new()),
        }
    }

    fn chat(&self, key: &str, body: &Value) -> Value {
        let (status, text) = read_answer(self.send("POST", "/v1/chat/completions", Some(key), Some(body)).unwrap());
        assert_eq!(status, 200, "{text}");
        let json_start = text.find("\r\n\r\n").map_or(0, |i| i + 4);
        serde_json::from_str(&text[json_start..]).unwrap()
    }

    /// Starts a stream and reads until its first event: the request was admitted and answered 200.
    fn open_stream(&self, key: &str, body: &Value) -> TcpStream {
        let mut s = self.send("POST", "/v1/chat/completions", Some(key), Some(body)).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("data: ") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the stream closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(seen.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));
        s
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([name, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads an answer to its end: (status, the raw text).
fn read_answer(mut s: TcpStream) -> (u16, String) {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut raw = Vec::new();
    if s.read_to_end(&mut raw).is_err() {
        return (0, String::new());
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

fn messages() -> Value {
    json!([{"role": "user", "content": "Tell me about the sea."}])
}

/// A stream of `LONG_N` choices that each run to `LONG_TOKENS` (the end token is banned).
fn long_stream(end: u32) -> Value {
    json!({"model": "ferrogpt", "messages": messages(), "stream": true, "stream_options": {"include_usage": true},
           "n": LONG_N, "max_tokens": LONG_TOKENS, "logit_bias": {end.to_string(): -100}})
}

/// The prompt's token count, as the server counts it.
fn prompt_tokens(server: &Server, key: &str) -> u64 {
    let done = server.chat(key, &json!({"model": "ferrogpt", "messages": messages(), "max_tokens": 3}));
    done["usage"]["prompt_tokens"].as_u64().unwrap()
}

fn cost(prompt: u64, completion: u64) -> f64 {
    (prompt as f64 * PRICES.0 + completion as f64 * PRICES.1) / 1000.0
}

#[test]
fn kill_9_with_streams_in_flight_then_restart_keeps_a_row_for_every_answered_request() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let (model, end) = tiny_model(tmp.path());
    let key = create_key(&home);
    let mut server = Server::start(&home, &model, &[]);
    let prompt = prompt_tokens(&server, &key);
    server.chat(&key, &json!({"model": "ferrogpt", "messages": messages(), "max_tokens": 3}));
    let streams: Vec<TcpStream> = (0..4).map(|_| server.open_stream(&key, &long_stream(end))).collect();
    // Progress reaches the ledger at most once a second per request: wait until every running
    // request has some, so the test can check it survives.
    let deadline = Instant::now() + PATIENCE;
    let before = loop {
        let rows = ledger(&home);
        let open: Vec<LedgerEntry> = rows.into_iter().filter(|r| r.outcome == OUTCOME_OPEN).collect();
        if open.len() == 4 && open.iter().all(|r| r.completion_tokens > 0) {
            break open;
        }
        assert!(Instant::now() < deadline, "running requests never showed progress: {open:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    server.child.kill().unwrap();
    assert!(!server.wait().success());
    drop(streams);

    let mut restarted = Server::start(&home, &model, &[]);
    let rows = ledger(&home);
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r.outcome == "ok").count(), 2, "{rows:?}");
    let interrupted: Vec<&LedgerEntry> = rows.iter().filter(|r| r.outcome == OUTCOME_INTERRUPTED).collect();
    assert_eq!(interrupted.len(), 4, "{rows:?}");
    for (row, seen) in interrupted.iter().zip(&before) {
        assert_eq!((row.status, row.prompt_tokens), (200, prompt), "{row:?}");
        assert!(row.completion_tokens >= seen.completion_tokens && row.completion_tokens <= LONG_N * LONG_TOKENS);
        assert!((row.cost - cost(row.prompt_tokens, row.completion_tokens)).abs() < 1e-9, "{row:?}");
    }

    // `ferrogpt usage` bills the interrupted requests with the rest.
    let out = ferrogpt(&home).args(["usage", "--json"]).output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let total = |field: &str| lines.iter().map(|l| l[field].as_u64().unwrap()).sum::<u64>();
    assert_eq!(total("requests"), 6);
    assert_eq!(total("prompt_tokens"), rows.iter().map(|r| r.prompt_tokens).sum::<u64>());
    assert_eq!(total("completion_tokens"), rows.iter().map(|r| r.completion_tokens).sum::<u64>());

    restarted.signal("-TERM");
    assert!(restarted.wait().success());
}

#[test]
fn sigterm_drains_a_running_stream_to_its_end_then_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let (model, end) = tiny_model(tmp.path());
    let key = create_key(&home);
    let mut server = Server::start(&home, &model, &["--drain-seconds", "600"]);
    let stream = server.open_stream(&key, &long_stream(end));
    server.signal("-TERM");
    // Shutting down: no new connections...
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(server.addr).is_ok() {
        assert!(Instant::now() < deadline, "the server still accepts connections after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...but the running stream is served to its end.
    let (_, text) = read_answer(stream);
    assert!(
        text.contains("data: [DONE]"),
        "the stream was cut: ...{}",
        &text[text.len().saturating_sub(500)..]
    );
    assert!(text.contains(&format!("\"completion_tokens\":{}", LONG_N * LONG_TOKENS)));
    assert!(server.wait().success());
    let rows = ledger(&home);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].outcome.as_str(), rows[0].completion_tokens), ("ok", LONG_N * LONG_TOKENS));
}

#[test]
fn sigterm_cuts_streams_short_at_the_drain_deadline_and_records_them() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let (model, end) = tiny_model(tmp.path());
    let key = create_key(&home);
    let mut server = Server::start(&home, &model, &["--drain-seconds", "1"]);
    let prompt = prompt_tokens(&server, &key);
    // This client never reads its answer, so the stream cannot end by itself.
    let _stalled = server.open_stream(&key, &long_stream(end));
    server.signal("-TERM");
    assert!(server.wait().success());
    let rows = ledger(&home);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let cut = &rows[1];
    assert_eq!(
        (cut.outcome.as_str(), cut.status, cut.prompt_tokens),
        (OUTCOME_INTERRUPTED, 200, prompt),
        "{cut:?}"
    );
    assert!((cut.cost - cost(cut.prompt_tokens, cut.completion_tokens)).abs() < 1e-9, "{cut:?}");
}

/// What strangers typed into the waitlist reaches the operator's terminal escaped.
#[test]
fn keys_waitlist_prints_fields_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let store = Store::open(&home.join("state.sqlite")).unwrap();
    store
        .add_waitlist("Mallory\x1b[2J\x1b]0;owned\x07", "m@example.com\r\nfake line", "why\u{202e}", 10)
        .unwrap()
        .unwrap();
    let out = ferrogpt(&home).args(["keys", "waitlist"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
    assert_eq!(text.lines().count(), 2, "one header and one entry: {text:?}");
    assert!(text.contains("Mallory\\u{1b}[2J\\u{1b}]0;owned\\u{7}"), "{text}");
    assert!(text.contains("m@example.com\\u{d}\\u{a}fake line"), "{text}");
    assert!(text.contains("why\\u{202e}"), "{text}");
}
